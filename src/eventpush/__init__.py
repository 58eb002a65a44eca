"""eventpush: encode, batch and push events at very high throughput.

The engine (``Encoder``, ``Batch``, and the delivery layer) is shared by three faces: ``eventpush.connect``,
``eventpush.barchart`` and ``eventpush.realtime``; ``eventpush.hub`` is the server they talk to.
"""

from __future__ import annotations

import logging

from . import errors
from ._impl import IMPLEMENTATION, core, core_c, core_py
from .dialects import BARCHART, CONNECT, CONNECT_RUBY, JSON_ARRAY, NDJSON, Dialect, get_dialect
from .errors import (
    BufferFullError,
    ClosedError,
    EventError,
    EventPushError,
    EventTooLargeError,
    EventTypeError,
    EventValidationError,
    SpoolCorruptError,
    SpoolError,
    TransportError,
)

__version__ = "0.1.0"

Encoder = core.Encoder
Batch = core.Batch
EncoderPy = core_py.Encoder
BatchPy = core_py.Batch
EncoderC = core_c.Encoder if core_c is not None else None
BatchC = core_c.Batch if core_c is not None else None

logging.getLogger("eventpush").addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "IMPLEMENTATION",
    "Encoder",
    "Batch",
    "EncoderPy",
    "BatchPy",
    "EncoderC",
    "BatchC",
    "Dialect",
    "get_dialect",
    "CONNECT",
    "CONNECT_RUBY",
    "BARCHART",
    "NDJSON",
    "JSON_ARRAY",
    "errors",
    "EventPushError",
    "EventError",
    "EventValidationError",
    "EventTooLargeError",
    "EventTypeError",
    "TransportError",
    "BufferFullError",
    "SpoolError",
    "SpoolCorruptError",
    "ClosedError",
]
