"""``eventpush publish CHANNEL MESSAGE [--to URL]``: publish one realtime message (Push)."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_HUB = "http://127.0.0.1:8787"


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "publish",
        help="publish a realtime message to a channel",
        description="Publish MESSAGE to CHANNEL through a hub (HTTP) or straight to RabbitMQ (amqp://).",
    )
    p.add_argument("channel", metavar="CHANNEL", help="the channel, e.g. /greetings")
    p.add_argument("message", metavar="MESSAGE", help="the message text; '-' reads the raw bytes from stdin")
    p.add_argument(
        "--to",
        metavar="URL",
        default=None,
        help=f"hub URL or amqp:// URL (default: $EVENTPUSH_PUSH_TARGET, else {DEFAULT_HUB})",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="amqp:// targets: seconds to wait for RabbitMQ to accept the connection (default 5); "
        "an unreachable broker then fails the command (exit 1)",
    )
    p.epilog = ("exit status: 0 published; 1 not published (safe to run again); 4 outcome unknown: the broker "
                "took the message but did not confirm it in time, so it may still be delivered (running the "
                "command again may deliver it twice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import EventPushError
    from ..realtime import Producer, PublishUnconfirmedError

    target = args.to or os.environ.get("EVENTPUSH_PUSH_TARGET") or DEFAULT_HUB
    if target.lower().startswith(("amqp://", "amqps://")):
        from .subscribe import _quiet_amqp_logs

        _quiet_amqp_logs()  # the error below names the cause; aio-pika's per-attempt errors would flood stderr
    message = sys.stdin.buffer.read() if args.message == "-" else args.message
    try:
        with Producer(target, connect_timeout=args.connect_timeout) as producer:
            producer.publish(message).to(args.channel)
    except PublishUnconfirmedError as exc:
        print(f"eventpush publish: outcome unknown, the message may still be delivered (do not publish it again "
              f"blindly): {exc}", file=sys.stderr)
        return 4
    except (EventPushError, ValueError) as exc:
        print(f"eventpush publish: {exc}", file=sys.stderr)
        return 1
    return 0
