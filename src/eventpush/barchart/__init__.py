"""eventpush.barchart: the Barchart Event Tracking Service face (``@barchart/events-client-js`` 6.0.0 in Python).

* ``EventGateway`` — immediate capture: ``EventGateway.for_staging()`` / ``for_production()`` / ``for_stage(name)``
  / ``for_endpoint(url)`` and ``create_events(events)``, an awaitable future of the created events.
* ``EventBatcher`` — buffered capture on the engine's Batcher: ``push`` / ``start`` / ``stop`` / ``flush`` /
  ``clear``, plus retries with backoff, a durable spool, ``close()`` and a context manager.
* ``EventFactory`` — builds events for one customer, product and version, with a context cache.
* ``CustomerType``, ``ProductType``, ``EventType`` (all 220), ``EventJobStatus`` — the enumerations.
* ``BarchartError`` (``.reasons``, ``.status``) and its subclasses.

See spec/barchart.md.
"""

from __future__ import annotations

from .enums import CustomerType, EventJobStatus, EventType, ProductType
from .errors import BarchartError, BarchartStateError, BarchartValidationError
from .factory import EventFactory
from .futures import AwaitableFuture
from .gateway import EventGateway
from .batcher import EventBatcher

#: The version of ``@barchart/events-client-js`` whose contract this face follows.
SDK_VERSION = "6.0.0"

__all__ = [
    "SDK_VERSION",
    "CustomerType",
    "ProductType",
    "EventType",
    "EventJobStatus",
    "EventGateway",
    "EventBatcher",
    "EventFactory",
    "AwaitableFuture",
    "BarchartError",
    "BarchartValidationError",
    "BarchartStateError",
]
