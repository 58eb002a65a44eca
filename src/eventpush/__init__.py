"""eventpush: encode, batch and push events at very high throughput.

The engine (``Encoder``, ``Batch``, and the delivery layer) is shared by three faces: ``eventpush.connect``,
``eventpush.barchart`` and ``eventpush.realtime``; ``eventpush.hub`` is the server they talk to.

The encoder core is loaded on first use of one of its names (``Encoder``, ``IMPLEMENTATION``, …), so that
``eventpush serve`` and the CLI start without it.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from . import errors
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

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers
    from ._core import Batch, Batch as BatchC, Encoder, Encoder as EncoderC
    from ._core_py import Batch as BatchPy, Encoder as EncoderPy
    from .batcher import Batcher
    from .sender import BatchResult, Sender
    from .replies import EventResult
    from .spool import Spool
    from .transport import Limits, Retry, Timeout, Transport

    IMPLEMENTATION: str

__version__ = "0.1.0"

logging.getLogger("eventpush").addHandler(logging.NullHandler())

# name -> (module, attribute); resolved on first access (PEP 562)
_LAZY = {
    "IMPLEMENTATION": ("._impl", "IMPLEMENTATION"),
    "Encoder": ("._impl", "core.Encoder"),
    "Batch": ("._impl", "core.Batch"),
    "EncoderPy": ("._impl", "core_py.Encoder"),
    "BatchPy": ("._impl", "core_py.Batch"),
    "EncoderC": ("._impl", "core_c.Encoder"),
    "BatchC": ("._impl", "core_c.Batch"),
    # the delivery engine
    "Transport": (".transport", "Transport"),
    "Retry": (".transport", "Retry"),
    "Timeout": (".transport", "Timeout"),
    "Limits": (".transport", "Limits"),
    "Sender": (".sender", "Sender"),
    "BatchResult": (".sender", "BatchResult"),
    "EventResult": (".sender", "EventResult"),
    "Batcher": (".batcher", "Batcher"),
    "Spool": (".spool", "Spool"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, path = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'eventpush' has no attribute {name!r}") from None
    value: Any = importlib.import_module(module_name, __name__)
    for part in path.split("."):
        value = None if value is None else getattr(value, part)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "IMPLEMENTATION",
    "Encoder",
    "Batch",
    "EncoderPy",
    "BatchPy",
    "EncoderC",
    "BatchC",
    "Transport",
    "Retry",
    "Timeout",
    "Limits",
    "Sender",
    "BatchResult",
    "EventResult",
    "Batcher",
    "Spool",
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
