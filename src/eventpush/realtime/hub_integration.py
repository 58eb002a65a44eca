"""What the hub mounts: ``build(broker_url, queue_ttl=…)`` → an object with ``app`` (the Dispatcher, served at
``/push`` with HTTP publishing on), ``js`` (the browser client, served at ``/push.js``), ``startup()`` /
``shutdown()`` (from the hub's lifespan) and ``publish(channel, message)`` (thread-safe, called for each stored
event; almost free when nobody listens on the embedded broker)."""

from __future__ import annotations

import logging
from typing import Any, Dict

from ._base import InvalidChannelError
from .backends import Backend, EmbeddedBackend
from .dispatcher import Dispatcher

__all__ = ["build", "HubPush", "client_js"]

log = logging.getLogger("eventpush.realtime.hub")


def mounted_channel(scope: Dict[str, Any]) -> str:
    """The channel under the hub's mount: the hub passes the path below ``/push`` as ``scope["path"]`` (so a
    channel may itself start with ``/push``, unlike the heuristic default for servers that keep the prefix)."""
    return scope.get("path") or "/"


def client_js() -> bytes:
    """The browser client ``push.js`` (dependency-free)."""
    from importlib import resources

    return resources.files("eventpush.realtime").joinpath("push.js").read_bytes()


class HubPush:
    """The realtime part of one hub process."""

    def __init__(self, backend: Backend, **settings: Any) -> None:
        self.backend = backend
        settings.setdefault("channel", mounted_channel)
        self.app = Dispatcher(backend=backend, publish=True, **settings)
        self.js = client_js()
        self.invalid_channels = 0

    async def startup(self) -> None:
        """Start the broker (connect to RabbitMQ; keeps retrying in the background if it is down)."""
        await self.app.startup()

    async def shutdown(self) -> None:
        """Flush and stop the broker."""
        await self.app.shutdown()

    def publish(self, channel: str, message: bytes) -> None:
        """Publish ``message`` to ``channel`` from any thread; never blocks (a buffered publish on RabbitMQ).
        A channel no broker can carry (e.g. from an over-long collection name) is counted, not raised."""
        try:
            self.backend.publish(message, channel)
        except InvalidChannelError:
            self.invalid_channels += 1
        except Exception:  # noqa: BLE001 - a broker problem must not fail the hub's write path
            log.exception("realtime publish to %r failed", channel)


def build(broker_url: str = "memory", *, queue_ttl: float = 15.0, **settings: Any) -> HubPush:
    """The hub's push component for ``broker_url``: ``"memory"`` (the embedded broker, one process) or an
    ``amqp://`` URL (RabbitMQ, several hub processes)."""
    if broker_url in ("memory", "embedded", "", None):
        backend: Backend = EmbeddedBackend(queue_ttl=queue_ttl)
        from . import config

        config._install_default(backend)  # Producer() inside the hub process publishes into the hub's broker
    elif broker_url.lower().startswith(("amqp://", "amqps://")):
        from .amqp import AmqpBackend

        backend = AmqpBackend(broker_url, queue_ttl=queue_ttl)
    else:
        raise ValueError(f"broker must be 'memory' or an amqp:// URL, not {broker_url!r}")
    return HubPush(backend, **settings)
