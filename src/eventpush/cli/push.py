"""``eventpush push [FILE…|-] --to URL --dialect D``: push NDJSON or JSON-array files (or stdin) to an endpoint.

Each input is read as NDJSON (one JSON value per line) unless its first non-blank character is ``[``, in which
case it is one JSON array. Every event is validated and encoded by the dialect's rules; a malformed line or an
invalid event is reported on stderr as ``FILE:LINE: reason`` (for an array element: the line where it starts) and
the valid lines still go out. Delivery runs through the engine's :class:`~eventpush.batcher.Batcher` (pooled
keep-alive connections, retries, per-event results). A progress line on stderr shows how many events are settled
(delivered, rejected or spooled), their rate and, when the input size is known, the share of the input settled and
the ETA; it keeps moving while the last batches drain. A summary ends the run. Dialects without a path of their own
(``ndjson``, ``json-array``) post to exactly the URL given.

``--spool DIR`` makes the run durable and resumable: events that cannot be delivered after the retries are kept in
``DIR`` and replayed first by the next run with the same ``DIR``; the position reached in each input is recorded
in ``DIR/push-progress.json`` as delivery goes on (at most every ``--checkpoint-interval`` seconds: the last line
up to which every event was delivered, rejected or spooled, read from the batcher's ``settled_through`` without
pausing the pipeline), so an interrupted run resumes where it stopped. A hard kill can only make the next run send
again the events whose batches were not yet answered, or answered since the last record. Events without an ``id``
get one derived from the run and their position (Connect dialects), so the server recognises those as duplicates
instead of storing them twice. An input is recorded as done only when every event of it was delivered, spooled or
refused one by one: a request refused as a whole (an HTTP 4xx such as 404) keeps the recorded position before it,
and an authentication failure (HTTP 401 / 403) stops the run at once. An input whose size or modification time
changed since the recorded run is a new input (it is pushed again from its first line, with new derived ids): a
warning says so.

SIGTERM ends the run as Ctrl-C does: what was read is delivered or spooled, the line reached is recorded, the
summary is printed, exit 130.

Exit codes: 0 everything delivered; 1 some events were rejected (by the server, or as invalid input) or failed
without a spool, an input could not be read, or the server refused the credentials (401 / 403); 2 usage error;
3 events are left in the spool (run again with the same ``--spool`` to deliver them); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import re
import signal
import stat
import sys
import time
import uuid
from collections import deque
from typing import Any, BinaryIO, Callable, Deque, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

__all__ = ["register", "run", "main", "finite_float", "TermAsInterrupt", "exact_target", "read_events",
           "MAX_SECONDS"]

PROGRESS_FILE = "push-progress.json"
DESCRIPTION = (
    "Push events from NDJSON files (one JSON value per line) or JSON-array files (first character '[') to an "
    "endpoint, validated and encoded by the dialect's rules. Malformed lines and invalid events are reported as "
    "FILE:LINE: reason and the valid lines still go out. --spool DIR keeps what cannot be delivered on disk and "
    "makes the run resumable: run the same command again to continue where it stopped."
)
_RUN_NS = uuid.UUID("6f1d3c2e-8a5b-4e55-9c1e-6c7a3e0b9d41")

#: the largest number of seconds a duration option takes (beyond it, waits overflow the platform's clocks)
MAX_SECONDS = 1e9


# -- shared with ``eventpush bench`` -----------------------------------------------------------------------------


def finite_float(*, above: Optional[float] = None, at_least: Optional[float] = None,
                 at_most: Optional[float] = MAX_SECONDS, unit: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a finite number in range (``> above``, ``>= at_least``, ``<= at_most``); anything else
    (``nan``, ``inf``, out of range) is a usage error (exit 2) that names the option and the rule."""
    suffix = f" {unit}" if unit else ""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be above {above:g}{suffix}, got {text!r}")
        if at_least is not None and not value >= at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least:g}{suffix}, got {text!r}")
        if at_most is not None and not value <= at_most:
            raise argparse.ArgumentTypeError(f"must be at most {at_most:g}{suffix}, got {text!r}")
        return value

    return number


class TermAsInterrupt:
    """While active, SIGTERM ends the run like Ctrl-C (a ``KeyboardInterrupt`` in the main thread): what the command
    does on Ctrl-C (deliver or spool, stop the embedded hub, print a summary, exit 130) it does on SIGTERM too.

    ``defer(frame)``, when given, also takes over Ctrl-C: a signal that arrives while it returns True (the main
    thread is in a section an exception must not cut in two) is kept, and :meth:`check` raises it afterwards."""

    def __init__(self, defer: Optional[Callable[[Any], bool]] = None) -> None:
        self._defer = defer
        self.pending = False

    def __enter__(self) -> "TermAsInterrupt":
        self._old: Dict[int, Any] = {}
        sigs = [signal.SIGTERM]
        if self._defer is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            sigs.append(signal.SIGINT)  # (not when SIGINT is ignored, e.g. a background job)
        for sig in sigs:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self._defer is not None and self._defer(frame):
            self.pending = True
            return
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise the ``KeyboardInterrupt`` a signal left pending while it was deferred."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def exact_target(url: str, dialect: Any) -> Tuple[str, Any]:
    """``(base URL, dialect)`` to deliver batches of ``dialect`` for the URL a user named: dialects with a path of
    their own (``/events``) append it to ``url``; those without one (``ndjson``, ``json-array``: ``batch_path``
    ``"/"``) post to exactly ``url``, query included (appending ``"/"`` would turn ``/ingest`` into ``/ingest/``,
    which many servers route elsewhere)."""
    if dialect.batch_path != "/":
        return url, dialect
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return urlunsplit((parts.scheme, parts.netloc, "", "", "")), dataclasses.replace(dialect, batch_path=path)


def read_events(path: str, bad: Callable[[str, int, str], None]) -> Iterator[Tuple[int, Any]]:
    """``(position, event)`` for every JSON value of the NDJSON or JSON-array file ``path``, read exactly as
    ``eventpush push`` reads its inputs (a UTF-8 byte order mark and blank lines skipped, integers beyond 64 bits
    kept exact); a malformed line goes to ``bad(path, line, reason)``."""
    inp = _Input(path)
    with inp.open() as stream:
        yield from _events(inp, stream, 0, [0], bad)


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add the ``push`` subcommand."""
    p = subparsers.add_parser(
        "push",
        help="push NDJSON / JSON-array events from files or stdin to an endpoint",
        description=DESCRIPTION,
        epilog="Exit codes: 0 all delivered; 1 rejected or failed events, an unreadable input or refused "
               "credentials; 2 usage error; 3 events left in the spool; 130 interrupted (SIGINT, SIGTERM).",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="input files ('-' or none: stdin)")
    p.add_argument("--to", required=True, metavar="URL",
                   help="base URL of the endpoint, e.g. http://127.0.0.1:8787/connect (ndjson and json-array post "
                   "to exactly this URL)")
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
    p.add_argument("--checkpoint-interval", type=finite_float(above=0, unit="seconds"), default=0.5, metavar="S",
                   help="with --spool: record the position reached at most every S seconds (default 0.5)")
    p.add_argument("--retries", type=int, default=5, metavar="N", help="attempts per request (default 5)")
    p.add_argument("--backoff", type=finite_float(at_least=0, unit="seconds"), default=0.5, metavar="S",
                   help="first retry delay (default 0.5 s)")
    p.add_argument("--timeout", type=finite_float(above=0, unit="seconds"), default=60.0, metavar="S",
                   help="read timeout (default 60 s)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="always show the progress line")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
    p.set_defaults(func=run)


# -- input ----------------------------------------------------------------------------------------------------


class _InputError(ValueError):
    """An input that cannot be pushed (``FILE: reason``)."""


class _Input:
    """One input: its display name, a resume key, its size (None for stdin) and a binary stream. The constructor
    checks that the input can be read (a missing file, a directory, no read permission: :class:`_InputError`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        # position → file line for reports (an array input maps element numbers to the line each element starts on)
        self.line_of: Callable[[int], int] = _same
        if name == "-":
            self.display = "<stdin>"
            self.key = "-"
            self.path = "-"
            self.size: Optional[int] = None
            return
        self.display = name
        try:
            st = os.stat(name)
        except OSError as exc:
            raise _InputError(f"{name}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            raise _InputError(f"{name}: is a directory")
        if stat.S_ISREG(st.st_mode) and not os.access(name, os.R_OK):
            raise _InputError(f"{name}: permission denied")
        self.path = os.path.abspath(name)
        self.key = f"{self.path}|{st.st_size}|{int(st.st_mtime)}"
        # a regular file's size; a pipe or a device (/dev/stdin, <(cmd)) has none that means anything
        self.size = st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self) -> BinaryIO:
        if self.name == "-":
            return sys.stdin.buffer
        return open(self.name, "rb")


def _same(pos: int) -> int:
    return pos


class _ReadError(Exception):
    """Reading an input failed part-way (``OSError`` from the stream, not from the delivery)."""


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
    """Yield ``(position, event)``: the line number in NDJSON, the element number (from 1) in a JSON array (the
    resume position and the derived ids count elements; ``inp.line_of`` gives the file line for reports).
    Malformed lines go to ``bad(file, line, reason)``. ``counter[0]`` tracks bytes read (for an array: spread over
    its elements as they are yielded)."""
    import orjson

    from .._core_py import loads_exact

    lineno = _skip_blanks(stream)
    if stream.peek(1)[:1] == b"[":  # type: ignore[attr-defined]
        data = stream.read()
        try:
            doc = loads_exact(data)
        except orjson.JSONDecodeError as exc:
            if _ndjson_after_all(data):
                # NDJSON whose first value happens to be an array (reported as an invalid event below)
                yield from _lines(inp, iter(data.splitlines(keepends=True)), lineno, skip_lines, counter, bad)
            else:
                counter[0] += len(data)
                bad(inp.display, lineno + getattr(exc, "lineno", 1), _json_error(exc))
            return
        if not isinstance(doc, list):
            counter[0] += len(data)
            bad(inp.display, lineno + 1, "a JSON array input must hold a list")
            return
        inp.line_of = _ArrayLines(data, lineno + 1)
        base, n = counter[0], max(1, len(doc))
        for k, ev in enumerate(doc):
            if k >= skip_lines:
                counter[0] = base + len(data) * (k + 1) // n
                yield k + 1, ev
        counter[0] = base + len(data)
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


# the tokens that delimit the elements of a JSON text: strings (whatever they hold) and the structural characters
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},]', re.S)


class _ArrayLines:
    """The file line on which each element of a (valid) JSON array text starts, found on first use: only reports
    need it, and the scan costs far more than the parse."""

    def __init__(self, data: bytes, first_line: int) -> None:
        self.data = data
        self.first_line = first_line  # the line of data[0] (the "[")
        self.lines: Optional[List[int]] = None

    def __call__(self, pos: int) -> int:
        if self.lines is None:
            self.lines = self._scan()
        k = pos - 1
        return self.lines[k] if 0 <= k < len(self.lines) else self.first_line

    def _scan(self) -> List[int]:
        data = self.data
        starts: List[int] = []
        depth = 0
        expect = -1  # while an element is awaited at depth 1: where the search for its first byte begins
        for m in _TOKENS.finditer(data):
            at = m.start()
            if expect >= 0:
                gap = data[expect:at]
                lead = len(gap) - len(gap.lstrip(_BLANK))
                if lead < len(gap):  # a number, true, false or null: no token of its own
                    starts.append(expect + lead)
                elif data[at] not in b",]}":
                    starts.append(at)
                expect = -1
            c = data[at]
            if c in b"[{":
                depth += 1
                if depth == 1:
                    expect = m.end()
            elif c in b"]}":
                depth -= 1
                if depth == 0:
                    break
            elif c == 0x2C and depth == 1:  # ","
                expect = m.end()
        lines: List[int] = []
        line, pos = self.first_line, 0
        for start in starts:
            line += data.count(b"\n", pos, start)
            pos = start
            lines.append(line)
        return lines


# -- progress -------------------------------------------------------------------------------------------------


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000.0
    return f"{n:.1f}T{unit}"


class _Progress:
    """The progress line: how much is settled (delivered, rejected or spooled), not merely read. The share of the
    input and the ETA come from the bytes behind the settled events: ``mark(pushed, bytes read)`` samples, taken
    as events are pushed, map an event count to a position in the input."""

    def __init__(self, enabled: bool, total_bytes: Optional[int]) -> None:
        self.enabled = enabled
        self.total = total_bytes
        self.start = time.monotonic()
        self.last = 0.0
        self.width = 0
        self.samples: Deque[Tuple[int, int]] = deque([(0, 0)])

    def mark(self, pushed: int, nbytes: int) -> None:
        if self.enabled and self.samples[-1] != (pushed, nbytes):
            self.samples.append((pushed, nbytes))

    def _settled_bytes(self, settled: int) -> float:
        s = self.samples
        while len(s) > 1 and s[1][0] <= settled:
            s.popleft()
        p0, b0 = s[0]
        if len(s) == 1 or settled <= p0:
            return float(b0)
        p1, b1 = s[1]
        return b0 + (b1 - b0) * (settled - p0) / (p1 - p0)

    def update(self, pushed: int, settled: int, stats: Dict[str, int], force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        dt = max(now - self.start, 1e-6)
        done_bytes = self._settled_bytes(settled)
        parts = [f"{settled:,} of {pushed:,} events settled", f"{_human(settled / dt)} ev/s",
                 f"{_human(done_bytes / dt, 'B')}/s", f"delivered {stats.get('delivered', 0):,}"]
        if stats.get("spooled"):
            parts.append(f"spooled {stats['spooled']:,}")
        if self.total:
            frac = min(1.0, done_bytes / self.total)
            parts.insert(0, f"{frac * 100:5.1f}%")
            parts.append(f"ETA {dt / frac - dt:,.0f} s" if frac > 0 else "ETA -")
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
    """Push every input; returns the exit code (see the module docstring). SIGTERM is handled as Ctrl-C."""
    guard = TermAsInterrupt(defer=lambda frame: _taking(frame, guard))
    guard.critical = False  # type: ignore[attr-defined]  # True from batcher.push until the event is counted
    with guard:
        return _run(args, guard)


def _batcher_files() -> Tuple[str, ...]:
    from .. import _core_py, batcher

    return (batcher.__file__, _core_py.__file__)


def _taking(frame: Any, guard: Any) -> bool:
    """Whether an interrupt now would cut the taking of an event in two: between the batcher taking it and queueing
    its batch (the event would be lost), or between the batcher taking it and this command counting it. Waiting for
    room in a full buffer is not (nothing is taken yet: Ctrl-C must stay prompt there)."""
    files = _batcher_files()
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_filename in files:
            if code.co_name == "_make_room":
                return False
            if code.co_name in ("push", "_push", "_seal_locked", "append"):
                return True
        f = f.f_back
    return bool(guard.critical)


class _AuthFailed(Exception):
    """The server refused the credentials: the run stops reading."""


def _run(args: argparse.Namespace, guard: Any) -> int:
    from ..batcher import CREDENTIALS_REFUSED, Batcher
    from ..dialects import get_dialect
    from ..errors import EventError, EventPushError, HTTPStatusError
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
    inputs: List[_Input] = []
    problems: List[str] = []
    for n in names:
        try:
            inputs.append(_Input(n))
        except _InputError as exc:
            problems.append(str(exc))
    if problems:  # before anything is sent
        for msg in problems:
            print(f"eventpush push: {msg}", file=sys.stderr)
        return 2
    if args.batch is not None and args.batch < 1:
        return fail("--batch must be at least 1")
    if args.batch is not None and dialect.max_batch_events is not None and args.batch > dialect.max_batch_events:
        return fail(f"--batch {args.batch} is over the {dialect.name} dialect's limit of "
                    f"{dialect.max_batch_events} events per request")

    spool_dir = args.spool
    progress_doc: Dict[str, Any] = {}
    stamp_ids = bool(spool_dir) and dialect.rules in ("connect_py", "connect_rb")
    if spool_dir:
        os.makedirs(spool_dir, exist_ok=True)
        progress_doc = _load_progress(spool_dir)
        # before the first event goes out: the ids derived from the run must be the same after a hard kill
        _save_progress(spool_dir, progress_doc)
        _warn_changed(inputs, progress_doc, spool_dir, stamp_ids)
    run_id = progress_doc.get("run", "")

    bar: Optional[_Progress] = None
    # the first position (in events pushed, as settled_through counts) that may not be recorded as settled: set when
    # the server refuses a request as a whole (the input being pushed keeps its position before it)
    refused: Dict[str, Any] = {"cap": None, "key": None}
    holder: List[Any] = []  # the batcher, once built (its replayer may report before that)
    # where an interrupt finds the run: the input, the line of the event being pushed, the last line fully handled
    at: Dict[str, Any] = {"key": None, "line": 0, "handled": 0}
    auth: List[str] = []  # the server's reason, once it refused the credentials

    def on_error(exc: BaseException, events: List[bytes]) -> None:
        status = getattr(exc, "status", None)
        if isinstance(exc, HTTPStatusError) and status is not None and status >= 300:
            # read settled_through here, before the refused batch counts as settled: the position stays before it
            # (a spooled batch replayed while the batcher is being built: nothing pushed yet, position 0)
            through = holder[0].settled_through if holder else 0
            if refused["cap"] is None or through < refused["cap"]:
                refused["cap"] = through
            if refused["key"] is None:
                refused["key"] = at["key"]
            if status in CREDENTIALS_REFUSED:
                first = not auth
                auth.append(str(exc))
                if bar is not None:
                    bar.clear()
                if first:
                    print(f"eventpush push: the server refused the credentials (HTTP {status}): {exc}; stopping",
                          file=sys.stderr)
                return
        if bar is not None:
            bar.clear()
        if events or not isinstance(exc, EventPushError):
            print(f"eventpush push: {len(events)} event(s): {exc}", file=sys.stderr)
        else:
            print(f"eventpush push: {exc}", file=sys.stderr)

    base_url, send_dialect = exact_target(args.to, dialect)
    try:
        batcher = Batcher(
            base_url, send_dialect, max_batch_events=args.batch, concurrency=args.concurrency, gzip=args.gzip,
            headers=headers, spool_dir=spool_dir if spool_dir else False,
            retry=Retry(attempts=max(1, args.retries), backoff=args.backoff),
            timeout=Timeout(connect=min(10.0, args.timeout), read=args.timeout),
            on_error=on_error, atexit=False, interval=1.0,
        )
    except (ValueError, EventPushError) as exc:
        return fail(str(exc))
    holder.append(batcher)

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
    unreadable = 0
    not_done: List[str] = []  # inputs (with --spool) left unfinished because a request was refused as a whole
    read_bytes = [0]
    interrupted = False
    start = time.monotonic()
    collection = args.collection if dialect.needs_collection else None

    # (events pushed by this run through that line, line) every 128 events of the input being pushed
    marks: Deque[Tuple[int, int]] = deque()
    interval = args.checkpoint_interval
    step = min(interval, 0.2)  # how often the progress line moves while a flush waits

    def settled() -> int:
        return batcher.settled_through

    def record(key: str, line: int, done: bool = False) -> None:
        entry = progress_doc["inputs"].setdefault(key, {})
        if line > int(entry.get("line", 0)) or (done and not entry.get("done")):
            entry["line"] = max(line, int(entry.get("line", 0)))
            if done:
                entry["done"] = True
            _save_progress(spool_dir, progress_doc)

    def advance(key: str) -> None:
        """Record the last marked line up to which every event is delivered, rejected or spooled (and none was
        refused as part of a whole request)."""
        through = batcher.settled_through
        cap = refused["cap"]  # (read after settled_through: a refusal that through counts has set it by then)
        if cap is not None:
            through = min(through, cap)
        line = None
        while marks and marks[0][0] <= through:
            line = marks.popleft()[1]
        if line is not None:
            record(key, line)

    def drain(deadline: Optional[float], interruptible: bool) -> bool:
        """Wait until everything pushed is settled (or the deadline passed), the progress line moving meanwhile."""
        while True:
            wait = step if deadline is None else min(step, max(0.0, deadline - time.monotonic()))
            flushed = batcher.flush(timeout=wait)
            if interruptible:
                guard.check()  # (an interrupt that came while flush sealed the open batch)
            if flushed:
                return True
            bar.update(pushed, settled(), batcher.stats)
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def read(stream_events: Iterator[Tuple[int, Any]]) -> Iterator[Tuple[int, Any]]:
        # an OSError while reading the input (not while delivering) ends this input with FILE: reason
        it = iter(stream_events)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except OSError as exc:
                raise _ReadError(exc.strerror or str(exc)) from None
            yield item

    try:
        for inp in inputs:
            if auth:
                raise _AuthFailed
            entry = progress_doc.get("inputs", {}).get(inp.key, {}) if spool_dir and inp.key != "-" else {}
            if entry.get("done"):
                skipped += 1
                print(f"eventpush push: {inp.display}: already pushed by an earlier run (--spool {spool_dir})",
                      file=sys.stderr)
                if inp.size:
                    read_bytes[0] += inp.size
                    bar.mark(pushed, read_bytes[0])
                continue
            start_line = int(entry.get("line", 0))
            try:
                stream = inp.open()
            except OSError as exc:
                unreadable += 1
                bar.clear()
                print(f"{inp.display}: {exc.strerror or exc}", file=sys.stderr)
                continue
            if not hasattr(stream, "peek"):
                stream = io.BufferedReader(stream)  # type: ignore[arg-type, type-var]
            resumable = bool(spool_dir) and inp.key != "-"
            marks.clear()
            refused.update(cap=None, key=None)
            last_record = time.monotonic()
            at.update(key=inp.key, line=start_line, handled=start_line)
            base_bytes = read_bytes[0]
            read_failed = False
            try:
                for lineno, ev in read(_events(inp, stream, start_line, read_bytes, report_line)):
                    if auth:
                        raise _AuthFailed
                    at["line"] = lineno
                    if stamp_ids and isinstance(ev, dict) and "id" not in ev:
                        ev["id"] = str(uuid.uuid5(_RUN_NS, f"{run_id}|{inp.key}|{lineno}"))
                    guard.critical = True  # an interrupt from here on waits until the event is counted
                    try:
                        batcher.push(ev, collection)
                    except EventError as exc:
                        guard.critical = False
                        invalid += 1
                        at["handled"] = lineno
                        bar.clear()
                        print(f"{inp.display}:{inp.line_of(lineno)}: invalid event: {exc}", file=sys.stderr)
                        guard.check()
                        continue
                    except BaseException:
                        guard.critical = False
                        raise
                    at["handled"] = lineno
                    pushed += 1
                    guard.critical = False
                    if guard.pending:
                        guard.check()
                    if resumable and not (pushed & 0x7F):
                        marks.append((pushed, lineno))
                        now = time.monotonic()
                        if now - last_record >= interval:
                            advance(inp.key)
                            last_record = now
                    if bar.enabled and not (pushed & 0x3FF):
                        bar.mark(pushed, read_bytes[0])
                        bar.update(pushed, settled(), batcher.stats)
            except _ReadError as exc:
                read_failed = True
                unreadable += 1
                bar.clear()
                print(f"{inp.display}: {exc}", file=sys.stderr)
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
            if inp.size is not None and not read_failed:
                read_bytes[0] = base_bytes + inp.size
            bar.mark(pushed, read_bytes[0])
            if resumable:
                # wait until everything read from this input is delivered, rejected or spooled, recording meanwhile
                marks.append((pushed, at["line"]))
                while not batcher.flush(timeout=step):
                    guard.check()
                    bar.update(pushed, settled(), batcher.stats)
                    if time.monotonic() - last_record >= interval:
                        advance(inp.key)
                        last_record = time.monotonic()
                guard.check()
                if auth:
                    raise _AuthFailed
                if refused["cap"] is None and not read_failed:
                    marks.clear()
                    record(inp.key, at["line"], done=True)
                else:
                    advance(inp.key)  # as far as it is safe: before the first refused request
                    marks.clear()
                    if refused["cap"] is not None:
                        not_done.append(inp.display)
        if auth:
            raise _AuthFailed
        drain(None, interruptible=True)  # the last batches: a Ctrl-C meanwhile spools what is left within 5 s
    except KeyboardInterrupt:
        interrupted = True
        bar.clear()
        print("\neventpush push: interrupted; delivering or spooling what was read", file=sys.stderr)
    except _AuthFailed:
        pass
    finally:
        # what was pushed is now delivered, rejected or spooled (on an interrupt: within 5 s, then spooled)
        close_start = time.monotonic()
        if bar.enabled and interrupted:
            drain(close_start + 5.0, interruptible=False)
        batcher.close(timeout=max(0.0, close_start + 5.0 - time.monotonic()) if interrupted else None)
        # the event being pushed when an interrupt came was taken if the batcher counted it
        taken = batcher.stats["pushed"]
        current_taken = taken > pushed
        pushed = max(pushed, taken)
        key = at["key"]
        if spool_dir and (interrupted or auth) and key is not None and key != "-":
            if interrupted and not auth and not (refused["cap"] is not None and refused["key"] == key):
                # everything read is now delivered, rejected or spooled: the exact line reached
                line = at["line"] if current_taken else at["handled"]
                entry = progress_doc["inputs"].setdefault(key, {})
                if not entry.get("done"):
                    entry["line"] = max(int(entry.get("line", 0)), line)
            else:
                advance(key)  # only as far as before the first refused request
            try:
                _save_progress(spool_dir, progress_doc)
            except OSError:
                pass
    stats = batcher.stats
    bar.update(pushed, settled(), stats, force=True)
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
    if unreadable:
        summary += f"; {unreadable} input(s) could not be read"
    print(summary, file=sys.stderr)
    if auth:
        msg = ("eventpush push: stopped: the server refused the credentials (check --project-id, --api-key, "
               "--header)")
        if spool_dir:
            msg += ("; nothing it refused is recorded as pushed: run the same command with the right credentials "
                    "to send it")
        print(msg, file=sys.stderr)
    elif not_done and spool_dir:
        print(f"eventpush push: {', '.join(not_done)}: not recorded as done: the server refused whole requests; "
              "the same command sends the events from the first refused request again", file=sys.stderr)
    if interrupted:
        return 130
    if auth:
        return 1
    if left:
        return 3
    failed_unspooled = stats["failed"] - stats["spooled"] if not spool_dir else 0
    if stats["rejected"] or invalid or malformed[0] or failed_unspooled > 0 or stats["corrupt"] or unreadable:
        return 1
    return 0


def _warn_changed(inputs: List[_Input], progress_doc: Dict[str, Any], spool_dir: str, stamp_ids: bool) -> None:
    """Warn about each input whose path the progress file knows under another size / modification time: the run
    treats it as a new input (the key protects a different file with the same name from being skipped), so every
    event of it is sent again."""
    recorded = progress_doc.get("inputs", {})
    for inp in inputs:
        if inp.key == "-" or inp.key in recorded:
            continue
        if any(k.rsplit("|", 2)[0] == inp.path for k in recorded if k != inp.key):
            again = ("with new ids: the server stores again the events delivered before"
                     if stamp_ids else "events delivered before are sent again")
            print(f"eventpush push: warning: {inp.display} changed since the run recorded in --spool {spool_dir} "
                  f"(its size or modification time differ): it is pushed again from its first line, {again}",
                  file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m eventpush.cli.push …``: the same as ``eventpush push …``."""
    from . import run_one

    return run_one("push", register, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
