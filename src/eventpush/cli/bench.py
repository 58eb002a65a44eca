"""``eventpush bench``: the load generator and benchmark for event ingestion.

Without ``--to`` it starts an embedded hub (``eventpush serve --sink`` on a free 127.0.0.1 port), pushes the same
synthetic Connect events through eventpush (compiled core and pure-Python twin) and through a plain
``requests`` + ``json`` client, prints one table and stops the hub. With ``--to URL`` it loads that endpoint
(closed model, or open model with ``--rate``) and reports throughput, latency percentiles, errors by status and
kind, retries, duplicates and the events the server acknowledged. Exit status: 0 when every event sent was
delivered, 1 otherwise (or when the ``--report`` could not be written at the end: the results are printed anyway),
2 for a usage error (including a non-loopback target without ``--yes``, a non-finite number, or a ``--report`` path
that cannot be written, all refused before any load is sent), 130 when interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from .push import MAX_SECONDS, TermAsInterrupt, finite_float

__all__ = ["register", "run"]

PROG = "eventpush bench"


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``bench`` subcommand."""
    from ..bench.defaults import DEFAULT_BATCH, DEFAULT_EVENT_SIZE, DEFAULT_EVENTS

    p = subparsers.add_parser(
        "bench",
        help="benchmark event ingestion: eventpush vs a plain client, or load any endpoint (--to)",
        description="Without --to: start an embedded hub (eventpush serve --sink), push the same synthetic "
        f"Connect events ({DEFAULT_EVENTS:,} per row by default) through eventpush (compiled core and "
        "pure-Python twin) and a plain requests + json client, and print one table. With --to URL: load that "
        "endpoint and report throughput, latency percentiles, errors, retries and delivered events.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  eventpush bench\n"
        "  eventpush bench --to http://127.0.0.1:8787/connect --dialect connect --duration 10 --concurrency 8\n"
        "  eventpush bench --to http://127.0.0.1:8787/barchart --dialect barchart --rate 5000 --duration 30 \\\n"
        "      --report bench.html\n"
        "  eventpush bench --to http://127.0.0.1:9000/ingest --dialect ndjson --events-file events.ndjson --json\n"
        "\nexit status: 0 every event delivered; 1 some were not (or a hub count differs, or the report could not\n"
        "be written); 2 usage error; 130 interrupted (SIGINT, SIGTERM)",
    )
    t = p.add_argument_group("target")
    t.add_argument("--to", metavar="URL", help="the endpoint to load (the dialect's batch path is appended: "
                   "/events for connect and barchart; ndjson and json-array post to the URL itself); without it: the "
                   "embedded comparison")
    t.add_argument("--dialect", default="connect",
                   choices=("connect", "connect-ruby", "barchart", "ndjson", "json-array"),
                   help="what the endpoint speaks (default connect)")
    t.add_argument("--project-id", default=os.environ.get("EVENTPUSH_PROJECT_ID"),
                   help="Connect X-Project-Id (default $EVENTPUSH_PROJECT_ID)")
    t.add_argument("--api-key", default=os.environ.get("EVENTPUSH_API_KEY"),
                   help="Connect X-Api-Key (default $EVENTPUSH_API_KEY)")
    t.add_argument("--collection", default="bench", help="Connect collection of the events (default bench)")
    t.add_argument("--yes", action="store_true",
                   help="confirm a load run against a target that is not a loopback address")
    t.add_argument("--stats-url", metavar="URL", default="auto",
                   help="an eventpush hub's /stats to count what the server received (default: the target's "
                   "scheme://host:port/stats, used when it answers like a hub)")
    t.add_argument("--no-stats", action="store_true", help="do not query any /stats")
    m = p.add_argument_group("load")
    m.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="requests in flight (closed model) or at most in flight (open model); default 4 with "
                   "--to, 2 in the embedded comparison")
    m.add_argument("--rate", type=finite_float(above=0, at_most=None, unit="events/s"), metavar="EVENTS_PER_S",
                   help="open model: send batches on a fixed timetable at this many events/s; latency is measured "
                   "from each request's intended send time (no coordinated omission)")
    stop = m.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=finite_float(above=0, at_most=MAX_SECONDS, unit="seconds"), metavar="S",
                      help="run for S seconds (default 10 with --to, unless --events or --events-file)")
    stop.add_argument("--events", type=int, metavar="N",
                      help=f"send N events (in the embedded comparison: per row, default {DEFAULT_EVENTS:,})")
    m.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N",
                   help=f"events per request (default {DEFAULT_BATCH})")
    m.add_argument("--event-size", type=int, default=DEFAULT_EVENT_SIZE, metavar="BYTES",
                   help=f"approximate size of a synthetic event as JSON (default {DEFAULT_EVENT_SIZE})")
    m.add_argument("--events-file", metavar="PATH",
                   help="replay events from an NDJSON file instead of synthetic ones (sent once, or cycled with "
                   "--duration / --events)")
    m.add_argument("--seed", type=int, default=0, help="seed of the synthetic event contents (default 0)")
    m.add_argument("--gzip", action="store_true", help="gzip request bodies (when the dialect allows it)")
    m.add_argument("--retries", type=int, default=2, metavar="N",
                   help="retries per request on connection errors, timeouts, 429 and 5xx (default 2)")
    m.add_argument("--timeout", type=finite_float(above=0, at_most=MAX_SECONDS, unit="seconds"), default=30.0,
                   metavar="S", help="read timeout per request (default 30)")
    m.add_argument("--core", choices=("auto", "cython", "python"), default="auto",
                   help="encoder core for --to runs (default auto: the selected one)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (schema: eventpush/bench/schema.json) instead of text")
    o.add_argument("--report", metavar="FILE.html", help="also write a self-contained HTML report with plots")
    o.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    p.set_defaults(func=run)


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def _encoder(core: str) -> Any:
    import eventpush

    if core == "cython":
        if eventpush.EncoderC is None:
            raise ValueError("--core cython: the compiled core is not built in this install")
        return eventpush.EncoderC
    if core == "python":
        return eventpush.EncoderPy
    return eventpush.Encoder


_ASCII = str.maketrans({"✓": "ok", "✗": "MISSING", "×": "x", "→": "->", "≠": "!=", "…": "..."})


def _printable(text: str, stream: Any) -> str:
    """``text``, with ASCII stand-ins for its few symbols when ``stream`` cannot encode them (a cp1252 console)."""
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")
    return text


def _report_problem(path: str) -> Optional[str]:
    """Why ``--report path`` could not be written, checked before any load is sent (``None``: it can)."""
    if os.path.isdir(path):
        return "is a directory"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"no such directory: {parent}"
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return "not writable"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"directory not writable: {parent}"
    return None


def _emit(doc: Dict[str, Any], args: argparse.Namespace, text: str) -> bool:
    """Print the results (the ``--json`` document or the text summary), then write the ``--report``; False when
    the report could not be written (reported on stderr: the results are on stdout all the same)."""
    report_error: Optional[str] = None
    if args.report:
        from ..bench.report import write_report

        try:
            write_report(doc, args.report)
        except OSError as exc:
            report_error = exc.strerror or str(exc)
    try:
        if args.json:
            sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        else:
            print(_printable(text, sys.stdout))
            if args.report and report_error is None:
                print(f"report: {args.report}")
        sys.stdout.flush()
    except BrokenPipeError:  # `eventpush bench | head`: the reader left; not an error of the bench
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if report_error is not None:
        _err(f"--report {args.report}: cannot write the report: {report_error} (the results are above)")
        return False
    return True


def _check_outputs(args: argparse.Namespace) -> bool:
    if args.report:
        problem = _report_problem(args.report)
        if problem is not None:
            _err(f"--report {args.report}: {problem}")
            return False
    return True


def run(args: argparse.Namespace) -> int:
    """Entry point of ``eventpush bench``; returns the exit status."""
    if args.to:
        return _run_target(args)
    return _run_compare(args)


def _live(args: argparse.Namespace, label: str, compare: bool) -> Any:
    if args.quiet:
        return None
    from ..bench.display import LiveDisplay

    return LiveDisplay(sys.stderr, label=label, plain_every=None if compare else 5.0)


def _run_compare(args: argparse.Namespace) -> int:
    from ..bench.compare import run_compare
    from ..bench.defaults import DEFAULT_CONCURRENCY, DEFAULT_EVENTS
    from ..bench.display import format_table
    from ..bench.embedded import HubStartError

    for opt in ("rate", "duration", "events_file"):
        if getattr(args, opt) is not None:
            _err(f"--{opt.replace('_', '-')} needs a target (--to URL); the embedded comparison sends a fixed "
                 "number of events per row (--events)")
            return 2
    events = DEFAULT_EVENTS if args.events is None else args.events
    concurrency = DEFAULT_CONCURRENCY if args.concurrency is None else args.concurrency
    if events < 1:
        _err("--events must be at least 1")
        return 2
    if concurrency < 1:
        _err("--concurrency must be at least 1")
        return 2
    if not _check_outputs(args):
        return 2
    try:
        __import__("uvicorn")  # the embedded hub's server
    except ImportError:
        _err("the embedded hub needs uvicorn: pip install 'eventpush[hub]'")
        return 2
    displays: Dict[str, Any] = {}

    def live(name: str) -> Any:
        d = _live(args, f"{name}: ", compare=True)
        if d is not None:
            displays[name] = d
        return d

    def progress(line: str) -> None:
        for d in displays.values():
            d.finish()
        if not args.quiet:
            print(_printable(line, sys.stderr), file=sys.stderr, flush=True)

    try:
        with TermAsInterrupt():
            doc = run_compare(events=events, batch=args.batch, concurrency=concurrency,
                              event_size=args.event_size, seed=args.seed, progress=progress, live=live)
    except HubStartError as exc:
        _err(str(exc))
        return 1
    except ValueError as exc:
        _err(str(exc))
        return 2
    finally:
        for d in displays.values():
            d.finish()
    c = doc["config"]
    text = (f"eventpush bench: {c['events_per_row']:,} synthetic Connect events (~{c['event_size']} bytes) per row, "
            f"batches of {c['batch']}, {c['concurrency']} requests in flight,\n"
            f"pushed to an embedded hub on 127.0.0.1 (eventpush serve --sink: parses, validates and counts every "
            f"event, stores nothing).\n\n" + format_table(doc) + "\n\n"
            "events/s: events delivered per second, as counted by the hub's /stats (it must equal what was sent).\n"
            "client CPU s/1M ev: CPU seconds of this process per million events (all its threads); hub CPU: the hub "
            "process.\n"
            "speed-up: events/s relative to the requests + json baseline; CPU ratio: baseline client CPU per event "
            "divided by the row's.\n"
            "The client and the hub share this machine's cores, so events/s is bounded by the busier side.\n"
            f"Total: {doc['elapsed_s']:.1f} s. Load any endpoint with: eventpush bench --to URL --dialect ...")
    if not doc["all_delivered"]:
        text += "\nNOT ALL EVENTS WERE DELIVERED: see the delivered column."
    written = _emit(doc, args, text)
    return 0 if doc["all_delivered"] and written else 1


def _run_target(args: argparse.Namespace) -> int:
    from ..bench.display import LiveDisplay, format_summary
    from ..bench.runner import LoadConfig, is_loopback, run_load

    url = args.to
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _err(f"--to must be an http:// or https:// URL, got {url!r}")
        return 2
    if not is_loopback(url) and not args.yes:
        _err(f"refusing to load {parts.hostname}: it is not a loopback address. eventpush bench sends load only "
             "to targets you own; pass --yes to confirm that you may load this endpoint.")
        return 2
    if args.events_file and not os.path.isfile(args.events_file):
        _err(f"--events-file {args.events_file}: no such file")
        return 2
    if not _check_outputs(args):
        return 2
    try:
        config = LoadConfig(
            url=url, dialect=args.dialect, project_id=args.project_id, api_key=args.api_key,
            collection=args.collection, concurrency=4 if args.concurrency is None else args.concurrency, rate=args.rate, duration=args.duration,
            events=args.events, batch=args.batch, event_size=args.event_size, gzip=args.gzip,
            events_file=args.events_file, seed=args.seed, retries=args.retries, timeout=args.timeout,
            encoder=_encoder(args.core), stats_url=None if args.no_stats else args.stats_url,
        )
    except ValueError as exc:
        _err(str(exc))
        return 2
    display: Optional[LiveDisplay] = _live(args, "", compare=False)
    try:
        with TermAsInterrupt():
            doc = run_load(config, on_tick=display)
    except ValueError as exc:  # an unreadable --events-file
        _err(str(exc))
        return 2
    finally:
        if display is not None:
            display.finish()
    written = _emit(doc, args, format_summary(doc))
    if doc["interrupted"]:
        return 130
    ev = doc["events"]
    complete = ev["delivered"] == ev["sent"] and doc["errors"]["total"] == 0
    if ev["server_counted"] is not None and ev["server_counted"] != ev["delivered"]:
        complete = False
    return 0 if complete and written else 1
