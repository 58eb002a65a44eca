"""Shared pieces of ``eventpush.realtime``: consumer ids, channel validation, errors, the message coercion rule."""

from __future__ import annotations

import random
import time
from typing import Any, Optional, Union

from .._core_py import dumps_exact
from ..errors import ClosedError, EventPushError, EventTooLargeError, EventValidationError, TransportError

__all__ = [
    "Consumer",
    "new_consumer_id",
    "InvalidChannelError",
    "InvalidConsumerError",
    "MessageTooLargeError",
    "BrokerUnavailableError",
    "BrokerRefusedError",
    "PublishUnconfirmedError",
    "ClosedError",
    "EventPushError",
    "to_bytes",
    "check_channel",
    "check_consumer",
    "MAX_CHANNEL_BYTES",
    "MAX_CONSUMER_BYTES",
]

# A RabbitMQ queue or exchange name is at most 255 bytes; the queue is "{consumer}@{channel}", so the two limits
# together (+1 for "@") fit, and a channel valid on the embedded broker is valid on RabbitMQ too.
MAX_CHANNEL_BYTES = 190
MAX_CONSUMER_BYTES = 64

_rng = random.SystemRandom()


def new_consumer_id() -> str:
    """A fresh consumer id as the original generates it: ``"{unix_seconds}-{rand(0xffffffffffff)}"``."""
    return f"{int(time.time())}-{_rng.randrange(0xFFFFFFFFFFFF)}"


class Consumer:
    """A consumer: the client-chosen id that, with a channel, names one broker queue. ``Consumer()`` gets a fresh id."""

    __slots__ = ("id",)

    def __init__(self, id: Optional[str] = None) -> None:  # noqa: A002 - the original's name
        self.id = new_consumer_id() if id is None or id == "" else str(id)

    def queue_name(self, channel: str) -> str:
        """The broker queue of this consumer on ``channel``: ``"{consumer_id}@{channel}"``."""
        return f"{self.id}@{channel}"

    def __repr__(self) -> str:
        return f"Consumer({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Consumer) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class InvalidChannelError(EventValidationError):
    """A channel name the brokers cannot carry (empty, too long, control characters, reserved ``amq.`` prefix)."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("field", "channel")
        super().__init__(message, **kw)


class InvalidConsumerError(EventValidationError):
    """A consumer id the brokers cannot carry (too long, control characters)."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("field", "consumer")
        super().__init__(message, **kw)


class MessageTooLargeError(EventTooLargeError):
    """A message larger than the configured ``max_message_size`` (the Dispatcher answers 413)."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("field", "message")
        super().__init__(message, **kw)


class BrokerUnavailableError(TransportError):
    """The broker (RabbitMQ) is not reachable right now; the backend keeps reconnecting."""


class BrokerRefusedError(TransportError):
    """RabbitMQ refuses a declare for a reason of the server's configuration (permissions, a queue held
    exclusively): retrying does not help, and the client's channel name is not at fault (the Dispatcher answers
    500)."""


class PublishUnconfirmedError(EventPushError):
    """A publish whose outcome is unknown: some messages were handed to the broker but not confirmed in time (a
    broker blocking publishers, a connection lost mid-publish). They **may still be delivered**: publishing them
    again may deliver them twice. ``unconfirmed`` lists their indices (in the call's messages, or for
    ``Producer.close`` in ``messages``); ``withdrawn`` the indices of those taken back before they reached the
    broker (never published: safe to publish again); ``messages`` the ``(channel, bytes)`` pairs the indices refer
    to when the call had no message list of its own (``close``)."""

    def __init__(
        self,
        message: str,
        *,
        unconfirmed: Any = (),
        withdrawn: Any = (),
        channel: Optional[str] = None,
        messages: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.unconfirmed = list(unconfirmed)
        self.withdrawn = list(withdrawn)
        self.channel = channel
        self.messages = messages

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (_rebuild_unconfirmed, (type(self), self.message, self.unconfirmed, self.withdrawn, self.channel,
                                       self.messages))


def _rebuild_unconfirmed(cls, message, unconfirmed, withdrawn, channel, messages):  # type: ignore[no-untyped-def]
    return cls(message, unconfirmed=unconfirmed, withdrawn=withdrawn, channel=channel, messages=messages)


def _bad_chars(s: str) -> bool:
    for ch in s:
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            return True
    return False


def check_channel(channel: Any, *, index: Optional[int] = None) -> str:
    """Return ``channel`` if the brokers can carry it, else raise :class:`InvalidChannelError`."""
    if not isinstance(channel, str):
        raise InvalidChannelError(f"channel must be a str, not {type(channel).__name__}", index=index)
    if not channel:
        raise InvalidChannelError("channel must not be empty", index=index)
    if len(channel.encode("utf-8", "surrogatepass")) > MAX_CHANNEL_BYTES:
        raise InvalidChannelError(f"channel longer than {MAX_CHANNEL_BYTES} bytes", index=index)
    if _bad_chars(channel):
        raise InvalidChannelError(f"channel {channel!r} contains control characters", index=index)
    if channel.startswith("amq."):
        raise InvalidChannelError(f"channel {channel!r} uses the reserved 'amq.' prefix", index=index)
    return channel


def check_consumer(consumer_id: Any) -> str:
    """Return ``consumer_id`` if it can name a queue, else raise :class:`InvalidConsumerError`."""
    if not isinstance(consumer_id, str) or not consumer_id:
        raise InvalidConsumerError("consumer id must be a non-empty str")
    if len(consumer_id.encode("utf-8", "surrogatepass")) > MAX_CONSUMER_BYTES:
        raise InvalidConsumerError(f"consumer id longer than {MAX_CONSUMER_BYTES} bytes")
    if _bad_chars(consumer_id) or "@" in consumer_id:
        raise InvalidConsumerError(f"consumer id {consumer_id!r} contains '@' or control characters")
    return consumer_id


Message = Union[str, bytes, bytearray, memoryview, dict, list]


def to_bytes(message: Any, *, index: Optional[int] = None) -> bytes:
    """The wire form of a message: str as UTF-8, bytes as is, dict/list as orjson JSON."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, (dict, list)):
        try:
            # the encoder core's guarded orjson call: orjson does not count tuples, and containers nested a few
            # thousand deep corrupted the heap; integers beyond 64 bits are written with all their digits
            return dumps_exact(message)
        except TypeError as exc:
            from ..errors import EventTypeError

            raise EventTypeError(f"message cannot be encoded as JSON: {exc}", index=index, field="message") from None
    from ..errors import EventTypeError

    raise EventTypeError(
        f"message must be str, bytes, dict or list, not {type(message).__name__}", index=index, field="message"
    )
