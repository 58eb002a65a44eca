"""eventpush.connect — the Connect (getconnect.io) SDK, faithful and fast (spec/connect.md).

Two APIs over one engine:

* connect-python's ``ConnectClient(project_id, api_key, base_url=None, get_timeout=None, post_timeout=None,
  max_workers=2)``: ``push_event(collection, event)`` → ``Future[PushResponse]``, ``push_events({collection:
  [events]})`` → ``Future[PushBatchResponse]``; invalid input is an already-failed Future holding
  :class:`InvalidEventError`. ``ConnectClient.buffered()`` gives a fire-and-forget :class:`BufferedPusher`.
* the Ruby gem's module API: ``configure(project_id=…, api_key=…, mode="sync" | "async" | "await")`` then
  ``push(collection, event)``, ``push(collection, [events])`` or ``push({collection: [events]})``.

Filtered keys: :func:`encrypt_filtered_key` / :func:`decrypt_filtered_key` (connect-python format) and
:func:`generate_filtered_key` / :func:`generate_key_json` (Ruby format); they need ``eventpush[crypto]``.
"""

from __future__ import annotations

from ..errors import ClosedError
from .api import ConnectApi
from .client import BufferedPusher, ConnectClient, Event
from .exceptions import EventDataValidationError, EventTooLargeError, InvalidEventError, UnconfiguredError
from .responses import EventPushResponse, PushBatchResponse, PushResponse, Respsonse
from .ruby import AwaitableResponse, Configuration, DeferredResponse, configure, flush, push, reset
from .security import decrypt_filtered_key, encrypt_filtered_key, generate_filtered_key, generate_key_json

__all__ = [
    # connect-python
    "ConnectClient",
    "ConnectApi",
    "Event",
    "Respsonse",
    "PushResponse",
    "PushBatchResponse",
    "InvalidEventError",
    "EventTooLargeError",
    "encrypt_filtered_key",
    "decrypt_filtered_key",
    "BufferedPusher",
    # Ruby module API
    "Configuration",
    "configure",
    "reset",
    "push",
    "flush",
    "EventPushResponse",
    "DeferredResponse",
    "AwaitableResponse",
    "UnconfiguredError",
    "EventDataValidationError",
    "generate_filtered_key",
    "generate_key_json",
    "ClosedError",
]
