"""``eventpush`` command line: ``serve | push | bench | publish | subscribe``.

Each subcommand lives in its own module ``eventpush.cli.<name>`` exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returning the exit code). Modules are imported only
when present, so a subcommand's heavy imports never slow the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, List, Optional

SUBCOMMANDS = ("serve", "push", "bench", "publish", "subscribe")


def build_parser() -> argparse.ArgumentParser:
    from .. import IMPLEMENTATION, __version__

    parser = argparse.ArgumentParser(
        prog="eventpush",
        description="Encode, batch and push events fast; serve the hub they are pushed to.",
    )
    parser.add_argument("--version", action="version", version=f"eventpush {__version__} ({IMPLEMENTATION} core)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # this subcommand is not part of this build
            raise
        module.register(subparsers)
    return parser


def run_one(name: str, register: Callable[[Any], None], argv: Optional[List[str]] = None) -> int:
    """``python -m eventpush.cli.<name> …``: one subcommand without loading the others."""
    parser = argparse.ArgumentParser(prog="eventpush")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([name] + list(sys.argv[1:] if argv is None else argv))
    return int(args.func(args) or 0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
