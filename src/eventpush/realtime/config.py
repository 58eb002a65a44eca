"""``Configuration`` of ``eventpush.realtime`` (Push's ``Push.config``) and the process-wide default backend."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import quote

from .backends import Backend, get_backend

__all__ = [
    "Configuration",
    "AmqpSettings",
    "LongPollSettings",
    "WebSocketSettings",
    "configure",
    "get_config",
    "default_backend",
    "DEFAULT_QUEUE_TTL",
]

DEFAULT_QUEUE_TTL = 15.0  # the original's 5 s lost messages whenever a client was away longer (spec §8)


class AmqpSettings:
    """``amqp.*``: where RabbitMQ is and how long an unused queue lives."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5672,
        username: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        queue_ttl: float = DEFAULT_QUEUE_TTL,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.username = username
        self.password = password
        self.vhost = vhost
        self.queue_ttl = float(queue_ttl)

    @property
    def url(self) -> str:
        """The ``amqp://`` URL of these settings."""
        return (
            f"amqp://{quote(self.username, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/"
            f"{quote(self.vhost, safe='')}"
        )

    def __repr__(self) -> str:
        return f"AmqpSettings(host={self.host!r}, port={self.port}, vhost={self.vhost!r}, queue_ttl={self.queue_ttl})"


class LongPollSettings:
    """``long_poll.*``: the consumer URL browsers poll and the server's poll timeout (seconds before a long-poll
    with no message answers 204; a ``Dispatcher`` without its own ``timeout`` reads it as each long-poll starts)."""

    def __init__(self, *, url: str = "http://localhost:3000/_push", timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = float(timeout)


class WebSocketSettings:
    """``web_socket.*``: the consumer URL for WebSocket clients."""

    def __init__(self, *, url: str = "ws://localhost:3000/_push") -> None:
        self.url = url


_SECTIONS = {"amqp": AmqpSettings, "long_poll": LongPollSettings, "web_socket": WebSocketSettings}
_SECTION_KEYS = {
    "amqp": frozenset({"host", "port", "username", "password", "vhost", "queue_ttl"}),
    "long_poll": frozenset({"url", "timeout"}),
    "web_socket": frozenset({"url"}),
}
_TOP = {"backend", "amqp", "web_socket", "long_poll", "logger", "exception_reporter", "queue_ttl"}


class Configuration:
    """Push's configuration: ``backend`` (default ``"embedded"``), ``amqp``, ``long_poll``, ``web_socket``,
    ``logger``, ``exception_reporter``; ``queue_ttl`` (top level or ``amqp.queue_ttl``) applies to every broker."""

    def __init__(
        self,
        *,
        backend: str = "embedded",
        amqp: Optional[AmqpSettings] = None,
        long_poll: Optional[LongPollSettings] = None,
        web_socket: Optional[WebSocketSettings] = None,
        logger: Optional[logging.Logger] = None,
        exception_reporter: Optional[Callable[[BaseException], Any]] = None,
        queue_ttl: Optional[float] = None,
    ) -> None:
        self.backend = backend
        self.amqp = amqp or AmqpSettings()
        if queue_ttl is not None:
            self.amqp.queue_ttl = float(queue_ttl)
        self.long_poll = long_poll or LongPollSettings()
        self.web_socket = web_socket or WebSocketSettings()
        self.logger = logger or logging.getLogger("eventpush.realtime")
        self.exception_reporter = exception_reporter

    @property
    def queue_ttl(self) -> float:
        """Seconds an unused queue outlives its last subscription (every broker)."""
        return self.amqp.queue_ttl

    @queue_ttl.setter
    def queue_ttl(self, value: float) -> None:
        self.amqp.queue_ttl = float(value)

    @classmethod
    def from_hash(cls, d: Mapping[str, Any]) -> "Configuration":
        """Build from a dict (a parsed ``push.yml``); unknown keys raise ``ValueError`` naming them."""
        if not isinstance(d, Mapping):
            raise TypeError("configuration must be a mapping")
        kw: Dict[str, Any] = {}
        for key, value in d.items():
            k = str(key).lstrip(":")  # Ruby symbol keys from a YAML written for Push
            if k not in _TOP:
                raise ValueError(f"unknown configuration key {k!r} (known: {', '.join(sorted(_TOP))})")
            if k in _SECTIONS:
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise ValueError(f"configuration key {k!r} must be a mapping")
                sub: Dict[str, Any] = {}
                section = _SECTIONS[k]
                allowed = _SECTION_KEYS[k]
                for sk, sv in value.items():
                    sk = str(sk).lstrip(":")
                    if sk not in allowed:
                        raise ValueError(f"unknown configuration key {k}.{sk} (known: {', '.join(sorted(allowed))})")
                    sub[sk] = sv
                kw[k] = section(**sub)
            elif k == "backend":
                kw[k] = str(value).lstrip(":")
            else:
                kw[k] = value
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str, environment: Optional[str] = None) -> "Configuration":
        """Load ``push.yml`` (optionally the section of one ``environment``, as Rails does). Needs PyYAML."""
        import yaml  # optional: only this loader needs it

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if environment is not None:
            data = data[environment]
        return cls.from_hash(data)

    def create_backend(self, **options: Any) -> Backend:
        """A new instance of the configured backend."""
        cls = get_backend(self.backend)
        if self.backend == "amqp":
            return cls(self.amqp.url, queue_ttl=self.queue_ttl, **options)
        return cls(queue_ttl=self.queue_ttl, **options)

    def __repr__(self) -> str:
        return f"Configuration(backend={self.backend!r}, queue_ttl={self.queue_ttl}, amqp={self.amqp!r})"


_lock = threading.Lock()
_config: Optional[Configuration] = None
_default: Optional[Backend] = None


def configure(config: Optional[Any] = None, **settings: Any) -> Configuration:
    """Set the process-wide configuration (a :class:`Configuration`, a dict, or keyword settings)."""
    global _config, _default
    if config is None:
        cfg = Configuration.from_hash(settings)
    elif isinstance(config, Configuration):
        cfg = config
    else:
        cfg = Configuration.from_hash(config)
    with _lock:
        _config = cfg
        _default = None
    return cfg


def get_config() -> Configuration:
    """The process-wide configuration (``EVENTPUSH_PUSH_BACKEND`` may name the backend)."""
    global _config
    with _lock:
        if _config is None:
            _config = Configuration(backend=os.environ.get("EVENTPUSH_PUSH_BACKEND", "embedded") or "embedded")
        return _config


def default_backend() -> Backend:
    """The process-wide instance of the configured backend (shared by ``Producer()`` and ``Dispatcher()``)."""
    global _default
    cfg = get_config()
    with _lock:
        if _default is None:
            _default = cfg.create_backend()
        return _default


def _install_default(backend: Backend) -> None:
    """Make ``backend`` the process default (the hub does so for its embedded broker)."""
    global _default
    get_config()
    with _lock:
        _default = backend
