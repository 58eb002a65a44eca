"""``eventpush push [FILE…|-] --to URL --dialect D``: push NDJSON or JSON-array files (or stdin) to an endpoint.

Each input is read as NDJSON (one JSON value per line) unless its first non-blank character is ``[``, in which
case it is one JSON array. Every event is validated and encoded by the dialect's rules; a malformed line or an
invalid event is reported on stderr as ``FILE:LINE: reason`` and the valid lines still go out. Delivery runs
through the engine's :class:`~eventpush.batcher.Batcher` (pooled keep-alive connections, retries, per-event
results). A progress line on stderr shows events/s, bytes/s and, when the input size is known, the ETA; a summary
ends the run.

``--spool DIR`` makes the run durable and resumable: events that cannot be delivered after the retries are kept in
``DIR`` and replayed first by the next run with the same ``DIR``; the position reached in each input is recorded
in ``DIR/push-progress.json`` as delivery goes on (at most every ``--checkpoint-interval`` seconds: the last line
up to which every event was delivered, rejected or spooled, read from the batcher's ``settled_through`` without
pausing the pipeline), so an interrupted run resumes where it stopped. A hard kill can only make the next run send
again the events whose batches were not yet answered, or answered since the last record. Events without an ``id``
get one derived from the run and their position (Connect dialects), so the server recognises those as duplicates
instead of storing them twice.

Exit codes: 0 everything delivered; 1 some events were rejected (by the server, or as invalid input) or failed
without a spool; 2 usage error; 3 events are left in the spool (run again with the same ``--spool`` to deliver them).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from collections import deque
from typing import Any, BinaryIO, Callable, Deque, Dict, Iterator, List, Optional, Tuple

__all__ = ["register", "run", "main"]

PROGRESS_FILE = "push-progress.json"
DESCRIPTION = (
    "Push events from NDJSON files (one JSON value per line) or JSON-array files (first character '[') to an "
    "endpoint, validated and encoded by the dialect's rules. Malformed lines and invalid events are reported as "
    "FILE:LINE: reason and the valid lines still go out. --spool DIR keeps what cannot be delivered on disk and "
    "makes the run resumable: run the same command again to continue where it stopped."
)
_RUN_NS = uuid.UUID("6f1d3c2e-8a5b-4e55-9c1e-6c7a3e0b9d41")


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add the ``push`` subcommand."""
    p = subparsers.add_parser(
        "push",
        help="push NDJSON / JSON-array events from files or stdin to an endpoint",
        description=DESCRIPTION,
        epilog="Exit codes: 0 all delivered; 1 rejected or failed events; 2 usage error; 3 events left in the spool.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="input files ('-' or none: stdin)")
    p.add_argument("--to", required=True, metavar="URL", help="base URL of the endpoint, e.g. http://127.0.0.1:8787")
    p.add_argument("--dialect", default="connect",
                   choices=("connect", "connect-ruby", "barchart", "ndjson", "json-array"),
                   help="what the endpoint speaks (default connect)")
    p.add_argument("--collection", metavar="NAME", help="collection of every event (Connect dialects)")
    p.add_argument("--project-id", default=os.environ.get("EVENTPUSH_PROJECT_ID"),
                   help="Connect project id (default $EVENTPUSH_PROJECT_ID)")
    p.add_argument("--api-key", default=os.environ.get("EVENTPUSH_API_KEY"),
                   help="Connect push key (default $EVENTPUSH_API_KEY)")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra request header")
    p.add_argument("--batch", type=int, default=None, metavar="N", help="events per request (default: dialect limit)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight (default 4)")
    p.add_argument("--gzip", action="store_true", help="gzip request bodies (when the dialect allows it)")
    p.add_argument("--spool", metavar="DIR", help="durable spool and progress directory (resumable runs)")
    p.add_argument("--checkpoint-interval", type=float, default=0.5, metavar="S",
                   help="with --spool: record the position reached at most every S seconds (default 0.5)")
    p.add_argument("--retries", type=int, default=5, metavar="N", help="attempts per request (default 5)")
    p.add_argument("--backoff", type=float, default=0.5, metavar="S", help="first retry delay (default 0.5 s)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="read timeout (default 60 s)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="always show the progress line")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
    p.set_defaults(func=run)


# -- input ----------------------------------------------------------------------------------------------------


class _Input:
    """One input: its display name, a resume key, its size (None for stdin) and a binary stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "-":
            self.display = "<stdin>"
            self.key = "-"
            self.size: Optional[int] = None
        else:
            st = os.stat(name)
            self.display = name
            self.key = f"{os.path.abspath(name)}|{st.st_size}|{int(st.st_mtime)}"
            self.size = st.st_size

    def open(self) -> BinaryIO:
        if self.name == "-":
            return sys.stdin.buffer
        return open(self.name, "rb")


def _json_error(exc: Exception) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return f"malformed JSON: {msg}"


_BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n"


def _skip_blanks(stream: BinaryIO) -> int:
    """Consume a UTF-8 byte order mark and the blank bytes before the first non-blank one; returns how many
    newlines that consumed (the line number reports and resume positions count from the file's start)."""
    newlines = 0
    head = stream.peek(3)  # type: ignore[attr-defined]
    if head[:3] == _BOM:
        stream.read(3)
    while True:
        chunk = stream.peek(1)  # type: ignore[attr-defined]  # whatever is buffered (waits for a pipe's next bytes)
        if not chunk:
            return newlines
        keep = len(chunk.lstrip(_BLANK))
        blank = len(chunk) - keep
        newlines += chunk.count(b"\n", 0, blank)
        stream.read(blank)
        if keep:
            return newlines


def _events(inp: _Input, stream: BinaryIO, skip_lines: int, counter: List[int],
            bad: Callable[[str, int, str], None]) -> Iterator[Tuple[int, Any]]:
    """Yield ``(line number, event)``; malformed lines go to ``bad(file, line, reason)``. ``counter[0]`` tracks
    bytes read."""
    import orjson

    from .._core_py import loads_exact

    lineno = _skip_blanks(stream)
    if stream.peek(1)[:1] == b"[":  # type: ignore[attr-defined]
        data = stream.read()
        counter[0] += len(data)
        try:
            doc = loads_exact(data)
        except orjson.JSONDecodeError as exc:
            if _ndjson_after_all(data):
                # NDJSON whose first value happens to be an array (reported as an invalid event below)
                yield from _lines(inp, iter(data.splitlines(keepends=True)), lineno, skip_lines, None, bad)
            else:
                bad(inp.display, lineno + getattr(exc, "lineno", 1), _json_error(exc))
            return
        if not isinstance(doc, list):
            bad(inp.display, 1, "a JSON array input must hold a list")
            return
        # element k of an array counts as "line" k + 1 for reports and resume
        for k, ev in enumerate(doc):
            if k >= skip_lines:
                yield k + 1, ev
        return
    yield from _lines(inp, stream, lineno, skip_lines, counter, bad)


def _ndjson_after_all(data: bytes) -> bool:
    """A body that is not one JSON array: NDJSON if its first line is a JSON value on its own and more follows."""
    import orjson

    first, sep, rest = data.partition(b"\n")
    if not sep or not rest.strip(_BLANK):
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return True


def _lines(inp: _Input, lines: Any, lineno: int, skip_lines: int, counter: Optional[List[int]],
           bad: Callable[[str, int, str], None]) -> Iterator[Tuple[int, Any]]:
    import orjson

    from .._core_py import loads_exact

    for raw in lines:
        lineno += 1
        if counter is not None:
            counter[0] += len(raw)
        if lineno <= skip_lines:
            continue
        line = raw.strip()
        if not line:
            continue
        try:
            yield lineno, loads_exact(line)
        except orjson.JSONDecodeError as exc:
            bad(inp.display, lineno, _json_error(exc))


# -- progress -------------------------------------------------------------------------------------------------


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000.0
    return f"{n:.1f}T{unit}"


class _Progress:
    def __init__(self, enabled: bool, total_bytes: Optional[int]) -> None:
        self.enabled = enabled
        self.total = total_bytes
        self.start = time.monotonic()
        self.last = 0.0
        self.width = 0

    def update(self, events: int, nbytes: int, stats: Dict[str, int], force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        dt = max(now - self.start, 1e-6)
        parts = [f"{events:,} events", f"{_human(events / dt)} ev/s", f"{_human(nbytes / dt, 'B')}/s",
                 f"delivered {stats.get('delivered', 0):,}"]
        if stats.get("spooled"):
            parts.append(f"spooled {stats['spooled']:,}")
        if self.total:
            frac = min(1.0, nbytes / self.total)
            eta = (dt / frac - dt) if frac > 0 else 0.0
            parts.insert(0, f"{frac * 100:5.1f}%")
            parts.append(f"ETA {eta:,.0f} s")
        line = "  ".join(parts)
        sys.stderr.write("\r" + line.ljust(self.width))
        self.width = len(line)
        sys.stderr.flush()

    def clear(self) -> None:
        """Blank the progress line before another message goes to stderr."""
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            self.width = 0

    def done(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- progress file ----------------------------------------------------------------------------------------------


def _load_progress(directory: str) -> Dict[str, Any]:
    import orjson

    try:
        with open(os.path.join(directory, PROGRESS_FILE), "rb") as f:
            doc = orjson.loads(f.read())
        if isinstance(doc, dict) and isinstance(doc.get("inputs"), dict):
            return doc
    except (FileNotFoundError, ValueError):
        pass
    return {"run": str(uuid.uuid4()), "inputs": {}}


def _save_progress(directory: str, doc: Dict[str, Any]) -> None:
    import orjson

    path = os.path.join(directory, PROGRESS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(doc))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- run ------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Push every input; returns the exit code (see the module docstring)."""
    from ..batcher import Batcher
    from ..dialects import get_dialect
    from ..errors import EventError, EventPushError
    from ..spool import Spool
    from ..transport import Retry, Timeout

    def fail(msg: str) -> int:
        print(f"eventpush push: {msg}", file=sys.stderr)
        return 2

    dialect = get_dialect(args.dialect)
    if dialect.needs_collection and not args.collection:
        return fail(f"--collection is required for the {dialect.name} dialect")
    headers: Dict[str, str] = {}
    if args.project_id:
        headers["X-Project-Id"] = args.project_id
    if args.api_key:
        headers["X-Api-Key"] = args.api_key
    for h in args.header:
        if ":" not in h:
            return fail(f"--header needs NAME:VALUE, got {h!r}")
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()
    names = args.files or ["-"]
    try:
        inputs = [_Input(n) for n in names]
    except OSError as exc:
        return fail(str(exc))
    if not args.checkpoint_interval > 0:
        return fail("--checkpoint-interval must be above 0 seconds")
    if args.batch is not None and args.batch < 1:
        return fail("--batch must be at least 1")
    if args.batch is not None and dialect.max_batch_events is not None and args.batch > dialect.max_batch_events:
        return fail(f"--batch {args.batch} is over the {dialect.name} dialect's limit of "
                    f"{dialect.max_batch_events} events per request")

    spool_dir = args.spool
    progress_doc: Dict[str, Any] = {}
    if spool_dir:
        os.makedirs(spool_dir, exist_ok=True)
        progress_doc = _load_progress(spool_dir)
        # before the first event goes out: the ids derived from the run must be the same after a hard kill
        _save_progress(spool_dir, progress_doc)
    stamp_ids = bool(spool_dir) and dialect.rules in ("connect_py", "connect_rb")
    run_id = progress_doc.get("run", "")

    bar: Optional[_Progress] = None

    def on_error(exc: BaseException, events: List[bytes]) -> None:
        if bar is not None:
            bar.clear()
        if events or not isinstance(exc, EventPushError):
            print(f"eventpush push: {len(events)} event(s): {exc}", file=sys.stderr)
        else:
            print(f"eventpush push: {exc}", file=sys.stderr)

    try:
        batcher = Batcher(
            args.to, dialect, max_batch_events=args.batch, concurrency=args.concurrency, gzip=args.gzip,
            headers=headers, spool_dir=spool_dir if spool_dir else False,
            retry=Retry(attempts=max(1, args.retries), backoff=args.backoff),
            timeout=Timeout(connect=min(10.0, args.timeout), read=args.timeout),
            on_error=on_error, atexit=False, interval=1.0,
        )
    except (ValueError, EventPushError) as exc:
        return fail(str(exc))

    total_size = sum(i.size or 0 for i in inputs) if all(i.size is not None for i in inputs) else None
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = _Progress(bool(show), total_size)
    malformed = [0]

    def report_line(f: str, ln: int, reason: str) -> None:
        malformed[0] += 1
        bar.clear()
        print(f"{f}:{ln}: {reason}", file=sys.stderr)

    invalid = 0
    pushed = 0
    skipped = 0
    read_bytes = [0]
    interrupted = False
    start = time.monotonic()
    collection = args.collection if dialect.needs_collection else None

    # where an interrupt finds the run: the input, the line of the event being pushed, the last line fully handled
    at: Dict[str, Any] = {"key": None, "line": 0, "handled": 0}

    # (events pushed by this run through that line, line) every 128 events of the input being pushed
    marks: Deque[Tuple[int, int]] = deque()
    interval = args.checkpoint_interval

    def record(key: str, line: int, done: bool = False) -> None:
        entry = progress_doc["inputs"].setdefault(key, {})
        if line > int(entry.get("line", 0)) or (done and not entry.get("done")):
            entry["line"] = max(line, int(entry.get("line", 0)))
            if done:
                entry["done"] = True
            _save_progress(spool_dir, progress_doc)

    def advance(key: str) -> None:
        """Record the last marked line up to which every event is delivered, rejected or spooled."""
        through = batcher.settled_through
        line = None
        while marks and marks[0][0] <= through:
            line = marks.popleft()[1]
        if line is not None:
            record(key, line)

    try:
        for inp in inputs:
            entry = progress_doc.get("inputs", {}).get(inp.key, {}) if spool_dir and inp.key != "-" else {}
            if entry.get("done"):
                skipped += 1
                print(f"eventpush push: {inp.display}: already pushed by an earlier run (--spool {spool_dir})",
                      file=sys.stderr)
                if inp.size:
                    read_bytes[0] += inp.size
                continue
            start_line = int(entry.get("line", 0))
            stream = inp.open()
            if not hasattr(stream, "peek"):
                stream = io.BufferedReader(stream)  # type: ignore[arg-type, type-var]
            resumable = bool(spool_dir) and inp.key != "-"
            marks.clear()
            last_record = time.monotonic()
            at.update(key=inp.key, line=start_line, handled=start_line)
            try:
                for lineno, ev in _events(inp, stream, start_line, read_bytes, report_line):
                    at["line"] = lineno
                    if stamp_ids and isinstance(ev, dict) and "id" not in ev:
                        ev["id"] = str(uuid.uuid5(_RUN_NS, f"{run_id}|{inp.key}|{lineno}"))
                    try:
                        batcher.push(ev, collection)
                    except EventError as exc:
                        invalid += 1
                        at["handled"] = lineno
                        bar.clear()
                        print(f"{inp.display}:{lineno}: invalid event: {exc}", file=sys.stderr)
                        continue
                    pushed += 1
                    at["handled"] = lineno
                    if resumable and not (pushed & 0x7F):
                        marks.append((pushed, lineno))
                        now = time.monotonic()
                        if now - last_record >= interval:
                            advance(inp.key)
                            last_record = now
                    if bar.enabled and not (pushed & 0x3FF):
                        bar.update(pushed, read_bytes[0], batcher.stats)
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
            if resumable:
                # wait until everything read from this input is delivered, rejected or spooled, recording meanwhile
                marks.append((pushed, at["line"]))
                while not batcher.flush(timeout=interval):
                    advance(inp.key)
                marks.clear()
                record(inp.key, at["line"], done=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\neventpush push: interrupted; delivering or spooling what was read", file=sys.stderr)
    finally:
        batcher.close(timeout=5.0 if interrupted else None)  # what was pushed is now delivered, rejected or spooled
        if interrupted and spool_dir:
            key = at["key"]
            if key is not None and key != "-":
                # the event being pushed when the interrupt came was taken if the batcher counted it
                line = at["line"] if batcher.stats["pushed"] > pushed else at["handled"]
                entry = progress_doc["inputs"].setdefault(key, {})
                if not entry.get("done"):
                    entry["line"] = max(int(entry.get("line", 0)), line)
            try:
                _save_progress(spool_dir, progress_doc)
            except OSError:
                pass
    stats = batcher.stats
    bar.update(pushed, read_bytes[0], stats, force=True)
    bar.done()
    left = 0
    if spool_dir:
        with Spool(spool_dir) as sp:
            left = sp.pending()[1]
    elapsed = max(time.monotonic() - start, 1e-9)
    summary = (f"eventpush push: {pushed:,} events pushed in {elapsed:.2f} s ({pushed / elapsed:,.0f} events/s): "
               f"{stats['delivered']:,} delivered ({stats['duplicates']:,} duplicates), "
               f"{stats['rejected']:,} rejected by the server, {invalid:,} invalid, {malformed[0]:,} malformed lines, "
               f"{stats['failed']:,} failed after retries, {stats['spooled']:,} spooled, "
               f"{stats['replayed']:,} replayed from the spool, {left:,} left in the spool")
    if skipped:
        summary += f"; {skipped} input(s) skipped as already pushed"
    print(summary, file=sys.stderr)
    if interrupted:
        return 130
    if left:
        return 3
    failed_unspooled = stats["failed"] - stats["spooled"] if not spool_dir else 0
    if stats["rejected"] or invalid or malformed[0] or failed_unspooled > 0 or stats["corrupt"]:
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m eventpush.cli.push …``: the same as ``eventpush push …``."""
    from . import run_one

    return run_one("push", register, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
