"""``eventpush subscribe CHANNEL [--from URL] [--consumer ID]``: print realtime messages as they arrive (Push)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, BinaryIO, Optional

DEFAULT_HUB = "http://127.0.0.1:8787"

#: After Ctrl-C, the most the process lives on when the KeyboardInterrupt got lost (see _on_sigint).
SIGINT_GRACE = 2.0


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "subscribe",
        help="print the messages of a realtime channel as they arrive",
        description="Long-poll CHANNEL on a hub (or consume it straight from RabbitMQ with an amqp:// URL) and print "
        "each message on its own line. Ctrl-C stops (exit 0).",
    )
    p.add_argument("channel", metavar="CHANNEL", help="the channel, e.g. /greetings")
    p.add_argument("--from", dest="source", metavar="URL", default=None,
                   help=f"hub URL or amqp:// URL (default: $EVENTPUSH_PUSH_TARGET, else {DEFAULT_HUB})")
    p.add_argument("--consumer", metavar="ID", default=None,
                   help="consumer id (default: a fresh one, kept for the whole run so no message is missed "
                   "between polls)")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N messages")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="HTTP: the longest the server holds a long-poll (its long_poll.timeout, default 30); a reply "
                   "slower than this plus 30 s counts as a lost connection and the poll is retried")
    p.set_defaults(func=run)


def _emit(out: BinaryIO, body: bytes) -> None:
    out.write(body + b"\n")
    out.flush()


def _via_http(url: str, channel: str, consumer: str, count: Optional[int], timeout: float, out: BinaryIO) -> int:
    import time

    import urllib3

    from ..realtime.producer import _HttpTarget

    target_url = _HttpTarget(url, None, 10.0).url_for(channel)
    pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10.0, read=timeout + 30.0), retries=False)
    got = 0
    delay = 0.5
    while count is None or got < count:
        try:
            r = pool.request("GET", target_url, headers={"Consumer-Id": consumer})
        except urllib3.exceptions.HTTPError as exc:
            print(f"eventpush subscribe: {exc}; retrying in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        delay = 0.5
        if r.status == 200:
            _emit(out, r.data)
            got += 1
        elif r.status != 204:
            print(f"eventpush subscribe: HTTP {r.status}: {r.data[:200]!r}", file=sys.stderr)
            if 400 <= r.status < 500:
                return 1
            time.sleep(1.0)
    return 0


def _via_amqp(url: str, channel: str, consumer: str, count: Optional[int], out: BinaryIO) -> int:
    import asyncio

    from ..realtime.amqp import AmqpBackend

    _quiet_amqp_logs()

    async def main() -> int:
        from ..realtime import BrokerUnavailableError, InvalidChannelError

        backend = AmqpBackend(url)
        await backend.start()
        delay = 0.5
        while True:  # like the HTTP mode: wait for the broker, saying why
            try:
                sub = await backend.subscribe(consumer, channel)
                break
            except BrokerUnavailableError as exc:
                print(f"eventpush subscribe: {exc}; retrying in {delay:.1f} s", file=sys.stderr)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except InvalidChannelError as exc:  # RabbitMQ refuses the channel
                print(f"eventpush subscribe: {exc}", file=sys.stderr)
                await backend.close()
                return 2
        got = 0
        try:
            while count is None or got < count:
                d = await sub.get(None)
                if d is None:
                    break
                _emit(out, d.body)
                await d.ack()
                got += 1
        finally:
            await sub.cancel()
            await backend.close()
        return 0

    return asyncio.run(main())


def _quiet_amqp_logs() -> None:
    """The CLI says itself why RabbitMQ is not reachable: aio-pika's own per-attempt errors would flood stderr."""
    import logging

    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: raise KeyboardInterrupt, as Python's default handler does, and make sure the process ends anyway.

    Python drops an exception raised while a finalizer runs ("Exception ignored in ..."): a Ctrl-C that lands while
    the previous HTTP response is being closed, just as the next long-poll starts, would leave the subscription
    waiting out a whole poll. A daemon timer ends the process with status 0 if it is still there after
    ``SIGINT_GRACE`` seconds (every message printed so far was flushed when it was printed)."""
    timer = threading.Timer(SIGINT_GRACE, os._exit, (0,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from ..realtime import Consumer, InvalidChannelError
    from ..realtime._base import check_channel

    source = args.source or os.environ.get("EVENTPUSH_PUSH_TARGET") or DEFAULT_HUB
    consumer = Consumer(args.consumer).id
    try:
        check_channel(args.channel)
    except InvalidChannelError as exc:
        print(f"eventpush subscribe: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    try:
        if source.lower().startswith(("amqp://", "amqps://")):
            return _via_amqp(source, args.channel, consumer, args.count, out)  # asyncio.run handles Ctrl-C
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):  # not when Ctrl-C is ignored
            signal.signal(signal.SIGINT, _on_sigint)
        return _via_http(source, args.channel, consumer, args.count, args.timeout, out)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a subscription ends
