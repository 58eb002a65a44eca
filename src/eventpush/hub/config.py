"""Hub configuration: one keyword-only settings object, passed to worker processes through the environment."""

from __future__ import annotations

import os
from typing import Dict, FrozenSet, Iterable, Mapping, Optional

import orjson

__all__ = ["HubConfig", "parse_project", "load_keys_file", "CONFIG_ENV"]

#: Worker processes (``--workers N``) are started by uvicorn from an import string, so the parent hands them the
#: configuration as JSON in this environment variable.
CONFIG_ENV = "EVENTPUSH_HUB_CONFIG"

DEFAULT_MAX_BODY = 32 * 1024 * 1024


class HubConfig:
    """Settings of one hub. Every argument is keyword-only; unknown names raise ``TypeError``.

    ``projects`` maps a project id to the set of API keys accepted for it; empty means "accept any key".
    ``db`` is a SQLite path (or ``":memory:"``); ``sink`` disables storage (events are still parsed, validated
    and counted). ``root`` (``"connect"`` / ``"barchart"`` / ``None``) also serves that API at ``/events…``.
    ``gc_threshold``: when set, the app factory (:func:`eventpush.hub.app.create_app`) sets the garbage
    collector's first-generation threshold of the process to it (``eventpush serve`` does by default; an app
    built into another server leaves the collector alone unless asked). ``header_timeout`` and
    ``max_header_bytes`` bound how a request starts (:mod:`eventpush.hub.http`; applied when the server uses
    :class:`~eventpush.hub.http.HubHttpProtocol`, as ``eventpush serve`` does). ``long_poll_timeout``: seconds a
    realtime long-poll on ``/push`` waits before its 204 (``None``: the realtime configuration's
    ``long_poll.timeout``, 30 s by default).
    """

    __slots__ = (
        "projects",
        "db",
        "sink",
        "root",
        "max_body",
        "body_timeout",
        "strict_context",
        "broker",
        "queue_ttl",
        "busy_timeout",
        "synchronous",
        "log_level",
        "access_log",
        "realtime",
        "gc_threshold",
        "header_timeout",
        "max_header_bytes",
        "long_poll_timeout",
    )

    def __init__(
        self,
        *,
        projects: Optional[Mapping[str, Iterable[str]]] = None,
        db: str = "eventpush.db",
        sink: bool = False,
        root: Optional[str] = None,
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = 30.0,
        strict_context: bool = False,
        broker: str = "memory",
        queue_ttl: float = 15.0,
        busy_timeout: float = 30.0,
        synchronous: str = "normal",
        log_level: str = "info",
        access_log: bool = True,
        realtime: bool = True,
        gc_threshold: Optional[int] = None,
        header_timeout: float = 10.0,
        max_header_bytes: int = 64 * 1024,
        long_poll_timeout: Optional[float] = None,
    ) -> None:
        if root not in (None, "connect", "barchart"):
            raise ValueError(f"root must be 'connect', 'barchart' or None, not {root!r}")
        if max_body < 1024:
            raise ValueError("max_body must be at least 1024 bytes")
        if synchronous not in ("off", "normal", "full"):
            raise ValueError("synchronous must be 'off', 'normal' or 'full'")
        if gc_threshold is not None and int(gc_threshold) < 0:
            raise ValueError("gc_threshold must be 0 (Python's default) or more")
        if not float(header_timeout) > 0:
            raise ValueError("header_timeout must be more than 0 seconds")
        if int(max_header_bytes) < 1024:
            raise ValueError("max_header_bytes must be at least 1024")
        if long_poll_timeout is not None and not float(long_poll_timeout) > 0:
            raise ValueError("long_poll_timeout must be more than 0 seconds")
        self.projects: Dict[str, FrozenSet[str]] = {str(p): frozenset(k) for p, k in (projects or {}).items()}
        self.db = db
        self.sink = bool(sink)
        self.root = root
        self.max_body = int(max_body)
        self.body_timeout = float(body_timeout)
        self.strict_context = bool(strict_context)
        self.broker = broker
        self.queue_ttl = float(queue_ttl)
        self.busy_timeout = float(busy_timeout)
        self.synchronous = synchronous
        self.log_level = log_level
        self.access_log = bool(access_log)
        self.realtime = bool(realtime)
        self.gc_threshold = None if not gc_threshold else int(gc_threshold)
        self.header_timeout = float(header_timeout)
        self.max_header_bytes = int(max_header_bytes)
        self.long_poll_timeout = None if long_poll_timeout is None else float(long_poll_timeout)

    def to_json(self) -> bytes:
        """Serialize (for the worker processes)."""
        d = {name: getattr(self, name) for name in self.__slots__}
        d["projects"] = {p: sorted(k) for p, k in self.projects.items()}
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, data: "bytes | str") -> "HubConfig":
        """The inverse of :meth:`to_json`."""
        return cls(**orjson.loads(data))

    @classmethod
    def from_env(cls) -> "HubConfig":
        """The configuration the ``serve`` command put in ``EVENTPUSH_HUB_CONFIG`` (defaults when absent)."""
        raw = os.environ.get(CONFIG_ENV)
        return cls.from_json(raw) if raw else cls()

    def __repr__(self) -> str:
        shown = {n: getattr(self, n) for n in self.__slots__ if n != "projects"}
        shown["projects"] = sorted(self.projects)  # never log the keys
        return f"HubConfig({shown})"


def parse_project(spec: str) -> "tuple[str, str]":
    """``"ID:KEY"`` → ``(id, key)``; the key may itself contain ``:``."""
    project, sep, key = spec.partition(":")
    if not sep or not project or not key:
        raise ValueError(f"expected PROJECT_ID:API_KEY, got {spec!r}")
    return project, key


def load_keys_file(path: str) -> Dict[str, FrozenSet[str]]:
    """Read projects and keys from a file.

    Either a JSON object ``{"project id": "key" | ["key", …]}`` or text with one ``PROJECT_ID:API_KEY`` per line
    (blank lines and ``#`` comments ignored). A project may appear several times (push key, master key, …).
    UTF-8, with or without a byte order mark (Windows editors write one). A file without any key raises
    ``ValueError``: the hub would otherwise run without authentication (no project configured = any key).
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is not part of the first project id
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc}") from None
    projects: Dict[str, set] = {}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):  # pragma: no cover - a text starting with "{" that parses is an object
            raise ValueError(f"{path}: expected a JSON object of project ids")
        for project, keys in data.items():
            if isinstance(keys, str):
                keys = [keys]
            if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                raise ValueError(f"{path}: project {project!r}: keys must be a string or a list of strings")
            if keys:
                projects.setdefault(project, set()).update(keys)
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                project, key = parse_project(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            projects.setdefault(project, set()).add(key)
    if not projects:
        raise ValueError(f"{path}: the keys file holds no project keys; an empty keys file would leave the hub "
                         "open to any key (add PROJECT_ID:API_KEY lines, or leave out --keys-file)")
    return {p: frozenset(k) for p, k in projects.items()}
