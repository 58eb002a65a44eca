"""``eventpush.realtime`` — Push: low-latency server-to-client messaging with no connection state on the node.

::

    from eventpush.realtime import Producer, Dispatcher

    app = Dispatcher(timeout=30)                        # ASGI: uvicorn module:app (the hub serves it at /push)
    Producer().publish("hi there!").to("/greetings")    # every consumer queue of /greetings gets it

A consumer's only state is its broker queue ``"{consumer_id}@{channel}"``, which outlives each request by
``queue_ttl`` (15 s). Brokers: ``embedded`` (default, one process), ``amqp`` (RabbitMQ, several processes), ``test``.
See ``spec/push.md``.
"""

from __future__ import annotations

from ._base import (
    BrokerRefusedError,
    BrokerUnavailableError,
    Consumer,
    InvalidChannelError,
    InvalidConsumerError,
    MessageTooLargeError,
    PublishUnconfirmedError,
    new_consumer_id,
)
from .backends import (
    Backend,
    Delivery,
    EmbeddedBackend,
    Subscription,
    TestBackend,
    backend_names,
    get_backend,
    register_backend,
)
from .config import (
    AmqpSettings,
    Configuration,
    LongPollSettings,
    WebSocketSettings,
    configure,
    default_backend,
    get_config,
)
from .dispatcher import BATCH_CONTENT_TYPE, Dispatcher, DispatcherConfig, default_channel, default_consumer
from .producer import AsyncProducer, AsyncPublication, Producer, Publication

__all__ = [
    "Producer",
    "AsyncProducer",
    "Publication",
    "AsyncPublication",
    "Dispatcher",
    "DispatcherConfig",
    "default_consumer",
    "default_channel",
    "BATCH_CONTENT_TYPE",
    "Consumer",
    "new_consumer_id",
    "Backend",
    "Subscription",
    "Delivery",
    "EmbeddedBackend",
    "TestBackend",
    "register_backend",
    "get_backend",
    "backend_names",
    "Configuration",
    "AmqpSettings",
    "LongPollSettings",
    "WebSocketSettings",
    "configure",
    "get_config",
    "default_backend",
    "InvalidChannelError",
    "InvalidConsumerError",
    "MessageTooLargeError",
    "BrokerUnavailableError",
    "BrokerRefusedError",
    "PublishUnconfirmedError",
]
