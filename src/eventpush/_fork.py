"""Objects that re-initialise themselves in a forked child (``os.register_at_fork``).

A child process has none of its parent's threads, and a lock held by one of them at the fork stays held. Objects
that own threads, locks or pooled sockets (the engine's ``Batcher``, the Barchart ``EventGateway`` and
``EventBatcher``) register here; in the child each one's ``_reinit_after_fork()`` runs, and one that fails is
logged without keeping the others from re-initialising.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

__all__ = ["reinit_after_fork", "forget"]

log = logging.getLogger("eventpush")

_live: "weakref.WeakSet[Any]" = weakref.WeakSet()


def reinit_after_fork(obj: Any) -> None:
    """Call ``obj._reinit_after_fork()`` in every forked child while ``obj`` lives (or until :func:`forget`)."""
    _live.add(obj)


def forget(obj: Any) -> None:
    """Stop re-initialising ``obj`` (closed: nothing of it is left to restart)."""
    _live.discard(obj)


def _after_fork_in_child() -> None:
    for obj in list(_live):
        try:
            obj._reinit_after_fork()
        except Exception:  # one object must not keep the others from working in the child
            log.exception("cannot re-initialise %r after fork", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
