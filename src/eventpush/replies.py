"""Replies: turn one HTTP reply into one result per sent event, per ``Dialect.reply``.

Public API::

    EventResult(tag, ok, duplicate=False, status=200, message=None, data=None, retryable=False, collection=None)
    map_reply(dialect, batch, status, data, *, resent=False) -> (List[EventResult], parsed reply or None)
    map_reply_lazy(...) -> (List[EventResult] or None, parsed reply or None, uniform outcome or None)
    uniform_reply(dialect, status, data, *, resent=False) -> the shared outcome when no per-event reading is needed
    reply_message(status, data) -> str   a one-line reason from an error body
    RETRY_ITEM_MESSAGE   Connect's per-item "please try again" message

How each reply kind maps (``batch`` events are in body order; ``resent`` says the events were sent before, by
an earlier attempt or from the spool):

``"collections"`` (Connect, spec/connect.md §1.3–1.4, §3.5)
    200: ``{collection: [{"success", "duplicate", "message"}, …]}`` in request order, matched to ``batch.groups()``.
    ``success`` → ok. ``duplicate`` → delivered earlier: ``ok`` when ``resent`` (a duplicate after a retry counts as
    delivered), otherwise not ok with ``duplicate=True`` and the server's message. The message
    :data:`RETRY_ITEM_MESSAGE` → ``retryable``; any other failure is a rejection, never re-sent. A 200 whose body
    does not match the batch (garbage, missing collection, wrong length) makes every event ``retryable``: the ids
    make re-sending safe.
``"created"`` (Barchart, spec/barchart.md §1.1)
    2xx: ok; ``data`` is the created event at the same position when the reply is the documented array (a body
    that is not is kept as ``None``: the status is authoritative and the API has no idempotency, so no re-send).
``"status"``
    2xx: ok.

For every kind: 409 → ok with ``duplicate=True`` when ``resent`` (else not ok, duplicate); 429 and 5xx → not ok,
``retryable``; other statuses → not ok, rejected, with the server's ``errorMessage`` / ``message`` (or the start
of the body) as ``message``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import orjson

from .dialects import Dialect

__all__ = ["EventResult", "map_reply", "map_reply_lazy", "uniform_reply", "RETRY_ITEM_MESSAGE", "reply_message"]

_OK_ITEM = {"success": True}
_OK_ITEM_NEW = {"success": True, "duplicate": False}
#: An all-success batch reply's items, compact, as Connect's docs write them and as the hub (and its spec) does.
_OK_ITEMS = (b'{"success":true}', b'{"success":true,"duplicate":false}')

RETRY_ITEM_MESSAGE = "An error occurred inserting the event please try again."


class EventResult:
    """The outcome of one event: ``tag`` (as given to the encoder), ``ok`` (stored by the server), ``duplicate``
    (the server already had its id), ``status`` (HTTP status of the request that settled it), ``message`` (the
    server's reason, if any), ``data`` (the per-event reply item, e.g. Barchart's created event), ``retryable``
    (a failure that may succeed if re-sent) and ``collection``."""

    __slots__ = ("tag", "ok", "duplicate", "status", "message", "data", "retryable", "collection")

    def __init__(
        self,
        tag: Any,
        ok: bool,
        duplicate: bool = False,
        status: int = 200,
        message: Optional[str] = None,
        data: Any = None,
        retryable: bool = False,
        collection: Optional[str] = None,
    ) -> None:
        self.tag = tag
        self.ok = ok
        self.duplicate = duplicate
        self.status = status
        self.message = message
        self.data = data
        self.retryable = retryable
        self.collection = collection

    @property
    def rejected(self) -> bool:
        """Refused for good (not ok, not retryable)."""
        return not self.ok and not self.retryable

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventResult):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        return (EventResult, tuple(getattr(self, k) for k in self.__slots__))

    def __repr__(self) -> str:
        state = "ok" if self.ok else ("retryable" if self.retryable else "rejected")
        extra = " duplicate" if self.duplicate else ""
        msg = f" {self.message!r}" if self.message else ""
        return f"<EventResult {self.tag!r} {state}{extra} {self.status}{msg}>"


def reply_message(status: int, data: bytes) -> str:
    """A one-line reason from an error body: ``errorMessage``, ``message``, Barchart's ``[{"value":{"message"}}]``,
    ``errors[].description``, else the start of the body, else ``"HTTP <status>"``."""
    try:
        doc = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        for key in ("errorMessage", "message", "error", "detail"):
            v = doc.get(key)
            if isinstance(v, str) and v:
                return v
        errs = doc.get("errors")
        if isinstance(errs, list) and errs:
            parts = []
            for e in errs:
                if isinstance(e, dict):
                    field = e.get("field")
                    desc = e.get("description") or e.get("message")
                    parts.append(f"{field}: {desc}" if field else str(desc))
            if parts:
                return "; ".join(parts)
    elif isinstance(doc, list) and doc and isinstance(doc[0], dict):
        v = doc[0].get("value")
        if isinstance(v, dict) and isinstance(v.get("message"), str):
            return v["message"]
    text = data[:200].decode("utf-8", "replace").strip() if data else ""
    return text or f"HTTP {status}"


def _all(batch: Any, **kw: Any) -> List[EventResult]:
    n = batch.count
    tags = batch.tags()
    colls = [batch.collection(i) for i in range(n)] if batch.dialect.needs_collection else [None] * n
    return [EventResult(tags[i], collection=colls[i], **kw) for i in range(n)]


def uniform_reply(dialect: Dialect, status: int, data: bytes, *, resent: bool = False) -> Optional[dict]:
    """When every event of a reply has the same outcome and the body need not be read per event, the keyword
    arguments of that shared :class:`EventResult` (without ``tag`` / ``collection``); else ``None``.

    PERF: lets the sender skip building one object per event on the hot path (a 2xx "status" reply)."""
    if status == 409:
        if resent:
            return dict(ok=True, duplicate=True, status=status)
        return dict(ok=False, duplicate=True, status=status, message=reply_message(status, data))
    if not 200 <= status < 300:
        return dict(ok=False, status=status, message=reply_message(status, data),
                    retryable=status >= 500 or status == 429)
    if dialect.reply == "status":
        return dict(ok=True, status=status)
    return None


def map_reply_lazy(
    dialect: Dialect, batch: Any, status: int, data: bytes, *, resent: bool = False
) -> Tuple[Optional[List[EventResult]], Any, Optional[dict]]:
    """Like :func:`map_reply`, but when every event has the same outcome returns ``(None, doc, uniform)`` instead
    of one object per event (``uniform`` as in :func:`uniform_reply`).

    PERF: a Connect reply where every item is ``{"success": true}`` is recognised with C-level list comparisons;
    building 5,000 result objects per batch would cost more than encoding the batch."""
    uniform = uniform_reply(dialect, status, data, resent=resent)
    if uniform is not None:
        return None, None, uniform
    if dialect.reply == "collections":
        groups = batch.groups()
        # PERF: the compact all-success reply is recognised by one byte comparison, without parsing, with its items
        # as Connect's docs spell them or as the hub writes them (with "duplicate": false); a reply of another
        # length is never built
        names = [orjson.dumps(c) for c, _, _ in groups]
        fixed = 1 + sum(len(name) + 4 for name in names)  # '{' + each '"name":[]' and ',' or '}'
        for item in _OK_ITEMS:
            if len(data) == fixed + sum(max(0, (len(item) + 1) * (stop - start) - 1) for _, start, stop in groups):
                expected = b"{" + b",".join(
                    name + b":[" + ((item + b",") * (stop - start))[:-1] + b"]" for name, (_, start, stop)
                    in zip(names, groups)) + b"}"
                if data == expected:
                    return None, None, dict(ok=True, status=status)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            ok = True
            for coll, start, stop in batch.groups():
                items = doc.get(coll)
                # (count() compares with ==, for which {"success": 1} is {"success": true}: the slow path reads
                # only true as success, and so does this)
                if not isinstance(items, list) or len(items) != stop - start \
                        or items.count(_OK_ITEM) + items.count(_OK_ITEM_NEW) != len(items) \
                        or not all(item["success"] is True for item in items):
                    ok = False
                    break
            if ok and len(doc) == len(batch.groups()):
                return None, doc, dict(ok=True, status=status)
        results = _map_collections(batch, doc, status, resent)
        if results is None:
            return (_all(batch, ok=False, status=status, retryable=True,
                         message="unreadable batch reply: " + reply_message(status, data)), None, None)
        return results, doc, None
    if dialect.reply == "created":
        # a 2xx "created" reply (uniform_reply took every other status): every event was created. PERF: the reply
        # is parsed, and the per-event results built (each with its created event), only when someone asks
        return None, None, dict(ok=True, status=status)
    results, doc = map_reply(dialect, batch, status, data, resent=resent)
    return results, doc, None


def map_reply(
    dialect: Dialect, batch: Any, status: int, data: bytes, *, resent: bool = False
) -> Tuple[List[EventResult], Any]:
    """One :class:`EventResult` per event of ``batch`` (body order) and the parsed reply (or ``None``)."""
    uniform = uniform_reply(dialect, status, data, resent=resent)
    if uniform is not None:
        return _all(batch, **uniform), None
    kind = dialect.reply
    if kind == "created":
        try:
            doc = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            doc = None
        results = _all(batch, ok=True, status=status)
        if isinstance(doc, list) and len(doc) == len(results):
            for r, item in zip(results, doc):
                r.data = item
        return results, doc
    # "collections"
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    mapped = _map_collections(batch, doc, status, resent)
    if mapped is None:
        return _all(batch, ok=False, status=status, retryable=True,
                    message="unreadable batch reply: " + reply_message(status, data)), None
    results = mapped
    return results, doc


def _map_collections(batch: Any, doc: Any, status: int, resent: bool) -> Optional[List[EventResult]]:
    if not isinstance(doc, dict):
        return None
    tags = batch.tags()
    results: List[EventResult] = [None] * batch.count  # type: ignore[list-item]
    for coll, start, stop in batch.groups():
        items = doc.get(coll)
        if not isinstance(items, list) or len(items) != stop - start:
            return None
        for j, item in enumerate(items):
            i = start + j
            if not isinstance(item, dict):
                return None
            if item.get("success") is True:
                results[i] = EventResult(tags[i], True, status=status, data=item, collection=coll)
                continue
            message = item.get("message")
            if item.get("duplicate") is True:
                results[i] = EventResult(tags[i], resent, duplicate=True, status=status,
                                         message=None if resent else message, data=item, collection=coll)
            else:
                results[i] = EventResult(tags[i], False, status=status, message=message, data=item,
                                         retryable=message == RETRY_ITEM_MESSAGE, collection=coll)
    return results
