"""Helpers shared by the delivery tests (a module of its own: ``conftest`` is not importable by name reliably)."""

from __future__ import annotations

import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (_TESTS, os.path.dirname(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from eventpush.transport import Retry  # noqa: E402

#: retries that keep the suite fast: six attempts, a few milliseconds apart
FAST_RETRY = Retry(attempts=6, backoff=0.005, backoff_max=0.05, total=20.0)


from support.net import free_port as free_port_local  # noqa: E402 - a port nobody listens on

__all__ = ["FAST_RETRY", "free_port_local"]
