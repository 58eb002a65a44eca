"""``eventpush serve``: run the hub (the Connect and Barchart APIs, stats, realtime) under uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Dict, Set

__all__ = ["register", "run"]


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="run the hub: the Connect and Barchart APIs backed by SQLite",
        description="Run the eventpush hub (Connect under /connect, Barchart under /barchart, /health, /stats, "
        "realtime under /push) with uvicorn.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="TCP port (default 8787)")
    p.add_argument("--db", default="eventpush.db", help="SQLite database file, or :memory: (default ./eventpush.db)")
    p.add_argument("--sink", action="store_true", help="store nothing; still parse, validate and count every event")
    p.add_argument("--root", choices=("connect", "barchart"), help="also serve this API at the root paths (/events…)")
    p.add_argument("--project", action="append", default=[], metavar="ID:KEY",
                   help="accept this project id and API key (repeatable); none configured = any key accepted")
    p.add_argument("--keys-file", help="file of projects and keys: 'ID:KEY' per line, or JSON {id: key | [keys]} "
                   "(UTF-8, a byte order mark allowed; a file without any key is refused)")
    p.add_argument("--max-body", type=int, default=32 * 1024 * 1024, metavar="BYTES",
                   help="maximum request body (default 32 MiB); larger requests get 413")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="seconds a client may take to send its body (default 30); slower clients get 408")
    p.add_argument("--strict-context", action="store_true",
                   help="Barchart: apply the per-customer context validators and check type vs product")
    p.add_argument("--broker", default="memory", help="realtime broker: memory (default) or an amqp:// URL")
    p.add_argument("--queue-ttl", type=float, default=15.0, help="realtime consumer queue TTL in seconds (default 15)")
    p.add_argument("--long-poll-timeout", type=float, default=None, metavar="S",
                   help="seconds a realtime long-poll waits before its 204 (default: the realtime configuration's "
                   "long_poll.timeout, 30)")
    p.add_argument("--no-realtime", action="store_true", help="do not start eventpush.realtime (/push answers 404)")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the database (default 1)")
    p.add_argument("--busy-timeout", type=float, default=30.0, metavar="S",
                   help="how long a writer waits for the SQLite lock (default 30)")
    p.add_argument("--synchronous", choices=("off", "normal", "full"), default="normal",
                   help="SQLite synchronous pragma (default normal: WAL commits survive a crash of the process; "
                   "full: also a power loss)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="log level of the hub and uvicorn (default info; the access log is written at info)")
    p.add_argument("--no-access-log", action="store_true", help="do not write the JSON access log")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a connection may take to send a request's headers (default 10): a client that "
                   "started one gets 408, a silent connection is closed")
    p.add_argument("--max-header-bytes", type=int, default=64 * 1024, metavar="BYTES",
                   help="maximum request line and headers (default 64 KiB); larger requests get 431")
    p.add_argument("--timeout-keep-alive", type=float, default=5.0, metavar="S",
                   help="close idle keep-alive connections after S seconds (default 5)")
    p.add_argument("--graceful-timeout", type=float, default=30.0, metavar="S",
                   help="on shutdown, wait at most S seconds for in-flight requests (default 30)")
    p.add_argument("--gc-threshold", type=int, default=20_000, metavar="N",
                   help="the garbage collector's first-generation threshold in the hub process (default 20000: "
                   "large batches allocate thousands of objects per request; 0 keeps Python's default: 700, 2000 from 3.13)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start uvicorn with the hub app; returns the exit code."""
    try:
        import uvicorn
    except ImportError:
        print("eventpush serve needs uvicorn: pip install 'eventpush[hub]'", file=sys.stderr)
        return 2
    from ..hub.config import CONFIG_ENV, HubConfig, load_keys_file, parse_project
    from ..hub.storage import init_db

    projects: Dict[str, Set[str]] = {}
    try:
        if args.keys_file:
            for pid, keys in load_keys_file(args.keys_file).items():
                projects.setdefault(pid, set()).update(keys)
        for spec in args.project:
            pid, key = parse_project(spec)
            projects.setdefault(pid, set()).add(key)
        config = HubConfig(
            projects=projects,
            db=args.db,
            sink=args.sink,
            root=args.root,
            max_body=args.max_body,
            body_timeout=args.body_timeout,
            strict_context=args.strict_context,
            broker=args.broker,
            queue_ttl=args.queue_ttl,
            busy_timeout=args.busy_timeout,
            synchronous=args.synchronous,
            log_level=args.log_level,
            access_log=not args.no_access_log,
            realtime=not args.no_realtime,
            gc_threshold=args.gc_threshold,
            header_timeout=args.header_timeout,
            max_header_bytes=args.max_header_bytes,
            long_poll_timeout=args.long_poll_timeout,
        )
    except (OSError, ValueError) as exc:
        print(f"eventpush serve: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("eventpush serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and args.db == ":memory:" and not args.sink:
        print("eventpush serve: --db :memory: cannot be shared by several workers; use a file", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.no_realtime and not args.broker.lower().startswith(("amqp://", "amqps://")):
        print("eventpush serve: warning: with --workers > 1 and the in-memory broker, each worker has its own "
              "realtime channels; use --broker amqp://… to share them", file=sys.stderr)
    if not args.sink and args.db != ":memory:":
        try:
            init_db(args.db, busy_timeout=args.busy_timeout)  # schema + WAL once, before the workers race for it
        except Exception as exc:
            print(f"eventpush serve: cannot open the database {args.db!r}: {exc}", file=sys.stderr)
            return 2
    os.environ[CONFIG_ENV] = config.to_json().decode()
    try:
        import httptools  # noqa: F401
    except ImportError:  # uvicorn falls back to h11: its own 16 KiB header limit, no header timeout
        http = "auto"
        print("eventpush serve: warning: httptools is not installed; --header-timeout and --max-header-bytes do "
              "not apply (pip install 'eventpush[hub]')", file=sys.stderr)
    else:
        http = "eventpush.hub.http:HubHttpProtocol"  # header timeout and size limit (eventpush.hub.http)
    settings = dict(
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,  # the hub writes its own structured access log
        lifespan="on",
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,
        http=http,
    )
    from ..hub.workers import STATS_DIR_ENV, SUPERVISOR_ENV, make_stats_dir

    if args.workers == 1:
        for name in (STATS_DIR_ENV, SUPERVISOR_ENV):  # one process: no supervisor (whatever our parent was)
            os.environ.pop(name, None)
        uvicorn.run("eventpush.hub.app:create_app", **settings)
        return 0
    # the workers' link to this process (eventpush.hub.workers): their stats sockets, and the pid they watch
    stats_dir = make_stats_dir()
    os.environ[STATS_DIR_ENV] = stats_dir
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    try:
        _run_workers(uvicorn.Config("eventpush.hub.app:create_app", **settings))
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
    return 0


def _run_workers(config: "uvicorn.Config") -> None:
    """uvicorn's multi-process supervisor (what ``uvicorn.run`` does for ``workers > 1``), except that the parent
    stops listening when the workers begin their graceful shutdown.

    Each worker closes its copy of the listening socket when its shutdown starts, but the parent kept its own open
    until every worker had drained: meanwhile the kernel went on completing connections that no process would
    accept, and reset them when the parent exited (a client had sent its request and waited up to the graceful
    timeout for nothing). With the parent's copy closed too, a new connection is refused at once, as with one
    worker, and a client can go elsewhere."""
    import inspect

    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):  # type: ignore[misc]
        def terminate_all(self) -> None:  # only called on the way out (restarts terminate workers one by one)
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    sock = config.bind_socket()
    try:
        if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn before 0.4x
            Supervisor(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
        else:
            Supervisor(config, sockets=[sock]).run()
    except KeyboardInterrupt:  # pragma: no cover - the supervisor handles SIGINT itself
        pass
    finally:
        sock.close()


def main(argv: "list[str] | None" = None) -> int:
    """``python -m eventpush.cli.serve …``: the same as ``eventpush serve …`` without loading the other
    subcommands."""
    from . import run_one

    return run_one("serve", register, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
