"""``AwaitableFuture``: a ``concurrent.futures.Future`` that asyncio code can ``await`` directly."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Generator, TypeVar

__all__ = ["AwaitableFuture"]

T = TypeVar("T")


class AwaitableFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A thread-safe future: ``result(timeout)`` blocks, and ``await fut`` works in a running event loop (through
    ``asyncio.wrap_future``, so the loop is woken from whatever thread completes the future)."""

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()

    @classmethod
    def completed(cls, value: Any) -> "AwaitableFuture":
        """A future that already holds ``value``."""
        fut = cls()
        fut.set_result(value)
        return fut

    @classmethod
    def failed(cls, exc: BaseException) -> "AwaitableFuture":
        """A future that already failed with ``exc``."""
        fut = cls()
        fut.set_exception(exc)
        return fut
