"""Responses of ``eventpush.connect``: connect-python's ``Respsonse`` (sic) / ``PushResponse`` /
``PushBatchResponse`` and the Ruby gem's ``EventPushResponse``.

Events as sent and per-event results are decoded from the encoded request and the reply on first access.
PERF: a push whose caller only reads ``success`` costs no per-event Python work.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import orjson

from .._core_py import loads_exact

__all__ = ["Respsonse", "PushResponse", "PushBatchResponse", "EventPushResponse", "UNAUTHORISED_MESSAGE"]

UNAUTHORISED_MESSAGE = "Unauthorised. Please check your Project Id and API Key"


class Respsonse:
    """Base of the connect-python responses (the misspelling is the original's, kept for ``isinstance``).

    ``http_status_code``, ``error_message``, ``success`` (given, else ``status_code == 200``), and ``duplicate``
    (eventpush: the server already had the event's id; ``False`` by default)."""

    duplicate = False

    def __init__(self, status_code: Optional[int], error_message: Any, success: Optional[bool] = None) -> None:
        if success is not None:
            self.success = success
        else:
            self.success = status_code == 200
        self.http_status_code = status_code
        self.error_message = error_message

    def __repr__(self) -> str:
        dup = " duplicate" if self.duplicate else ""
        msg = f" {self.error_message!r}" if self.error_message else ""
        return f"<{type(self).__name__} {self.http_status_code} success={self.success}{dup}{msg}>"


class PushResponse(Respsonse):
    """The response to one event: ``event`` is the processed event as sent (decoded on first access)."""

    # the encoded source of ``event`` until it is decoded: bytes (``_i is None``) or a sealed batch and an index.
    # PERF: two plain attributes rather than a tuple: one GC-tracked allocation per result instead of two, which
    # keeps the collector quiet while a 5,000-event ``results`` is built.
    _src: Any = None
    _i: Optional[int] = None

    def __init__(self, status_code: Optional[int], error_message: Any, raw_event: Any,
                 success: Optional[bool] = None) -> None:
        super().__init__(status_code, error_message, success)
        self.event = raw_event

    @property
    def event(self) -> Any:
        """The event as sent (a dict)."""
        src = self._src
        if src is not None:
            i = self._i
            self._event = loads_exact(src if i is None else src.event(i))
            self._src = None
        return self._event

    @event.setter
    def event(self, value: Any) -> None:
        self._event = value
        self._src = None

    def __getstate__(self) -> Dict[str, Any]:
        self.event  # noqa: B018 - materialize: the encoded batch does not travel
        state = dict(self.__dict__)
        state.pop("_src", None)
        state.pop("_i", None)
        return state


def _lazy_push_response(status: Optional[int], message: Any, src: Any, index: Optional[int], success: bool,
                        duplicate: bool) -> PushResponse:
    # PERF: one dict update instead of __init__ + property setter, for the per-event results of big batches
    r = PushResponse.__new__(PushResponse)
    r.__dict__.update(success=success, http_status_code=status, error_message=message, _src=src, _i=index,
                      duplicate=duplicate)
    return r


class _StoredItem(PushResponse):
    """A batch item the server stored: the attribute values live on the class.

    PERF: building it costs one allocation and one attribute (~0.2 us instead of ~0.7 us), which is most of what
    a 5,000-event ``results`` costs."""

    success = True
    http_status_code = None
    error_message = None
    duplicate = False


def _stored_item(src: Any, i: int) -> PushResponse:
    o = object.__new__(_StoredItem)
    o._src = src
    o._i = i
    return o


def _stored_items(src: Any, start: int, stop: int) -> List[PushResponse]:
    new = object.__new__
    out: List[PushResponse] = []
    app = out.append
    for i in range(start, stop):
        o = new(_StoredItem)
        o._src = src
        o._i = i
        app(o)
    return out


class PushBatchResponse(Respsonse):
    """The response to a batch: ``results`` maps each collection to its list of :class:`PushResponse` (per-event
    ``http_status_code`` is ``None``), in request order; built on first access."""

    def __init__(self, status_code: Optional[int], error_message: Any, results: Dict[str, List[PushResponse]]) -> None:
        super().__init__(status_code, error_message, None)
        self.results = results

    @property
    def results(self) -> Dict[str, List[PushResponse]]:
        """``{collection: [PushResponse, …]}`` (a plain dict)."""
        build = self.__dict__.get("_build")
        if build is not None:
            self._results = build()
            self._build = None
        return self._results

    @results.setter
    def results(self, value: Dict[str, List[PushResponse]]) -> None:
        self._results = value
        self._build = None

    def __getstate__(self) -> Dict[str, Any]:
        self.results  # noqa: B018 - materialize
        state = dict(self.__dict__)
        state.pop("_build", None)
        return state


def _lazy_batch_response(status: int, message: Any, build: Callable[[], Dict[str, List[PushResponse]]],
                         success: Optional[bool] = None) -> PushBatchResponse:
    r = PushBatchResponse.__new__(PushBatchResponse)
    r.__dict__.update(success=(status == 200) if success is None else success, http_status_code=status,
                      error_message=message, _build=build, _results=None)
    return r


class EventPushResponse:
    """The Ruby API's response: ``http_status_code`` (a **str**), ``success`` (the status starts with ``"2"``)
    and ``data``: the parsed JSON body (``{}`` when empty) with the event(s) as sent merged in — ``data["event"]``
    for a single push, ``"event"`` on each per-event result of a batch, by position — or the raw body (``str``)
    when the Content-Type is not JSON (a missing Content-Type counts as not JSON).

    ``EventPushResponse(code, content_type, body, events_pushed, *, batch=False)``: ``events_pushed`` is the event
    dict, or ``{collection: [events]}`` with ``batch=True``. ``attempts`` says how many requests it took."""

    __slots__ = ("http_status_code", "content_type", "body", "attempts", "_events", "_batch", "_data", "_parsed",
                 "_resent")

    def __init__(self, code: Any, content_type: Optional[str], body: Any, events_pushed: Any, *,
                 batch: bool = False, attempts: int = 1) -> None:
        self.http_status_code = str(code)
        self.content_type = content_type
        self.body = body
        self.attempts = attempts
        self._events = events_pushed
        self._batch = batch
        self._data: Any = _UNSET
        self._parsed: Any = _UNSET
        # whether batch items marked duplicate count as stored by our own earlier attempt; None: attempts > 1
        self._resent: Optional[bool] = None

    @classmethod
    def _from_parts(cls, code: Any, content_type: Optional[str], body: Any, events: Callable[[], Any], *,
                    batch: bool, attempts: int = 1, parsed: Any = None,
                    resent: Optional[bool] = None) -> "EventPushResponse":
        """``resent=False`` when the items were already settled (a split push decides it part by part: one
        part's retry says nothing about another part's duplicates)."""
        r = cls(code, content_type, body, events, batch=batch, attempts=attempts)
        r._events = _Deferred(events)
        if parsed is not None:
            r._parsed = parsed
        r._resent = resent
        return r

    @property
    def success(self) -> bool:
        """True for a 2xx status (201 succeeds, 500 fails), and for a 409 that follows a retry of the same
        request (our earlier attempt stored the event, spec §3.5)."""
        code = self.http_status_code
        return code.startswith("2") or (code == "409" and self.attempts > 1)

    @property
    def duplicate(self) -> bool:
        """True when the server already had the (single) event's id (409)."""
        return self.http_status_code == "409"

    @property
    def data(self) -> Any:
        """See the class docstring; computed on first access."""
        if self._data is _UNSET:
            self._data = self._compute()
        return self._data

    def _events_value(self) -> Any:
        ev = self._events
        if isinstance(ev, _Deferred):
            ev = self._events = ev.fn()
        return ev

    def _compute(self) -> Any:
        body = self.body
        ct = self.content_type
        if not ct or "application/json" not in ct.lower():
            return body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        data = self._parsed
        if data is _UNSET:
            try:
                data = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                # the gem would raise here; a JSON Content-Type with a broken body is shown as it came
                return body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        events = self._events_value()
        if not isinstance(data, dict):
            return data
        resent = self.attempts > 1 if self._resent is None else self._resent
        if self._batch and isinstance(events, Mapping):
            for coll, evs in events.items():
                items = data.get(coll)
                if isinstance(items, list):
                    for item, ev in zip(items, evs):
                        if isinstance(item, dict):
                            item["event"] = ev
                            if resent and item.get("duplicate") is True:
                                item["success"] = True  # stored by our own earlier attempt (spec §3.5)
        else:
            data["event"] = events
        return data

    def __getstate__(self) -> Any:
        return (self.http_status_code, self.content_type, self.body, self.attempts, self.data)

    def __setstate__(self, state: Any) -> None:
        self.http_status_code, self.content_type, self.body, self.attempts, self._data = state
        self._events = None
        self._batch = False
        self._parsed = _UNSET
        self._resent = None

    def __str__(self) -> str:
        return f"Status: {self.http_status_code}\nSuccessful: {self.success}\nData: {self.data}"

    def __repr__(self) -> str:
        return f"<EventPushResponse {self.http_status_code} success={self.success}>"


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


class _Deferred:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
