"""``ConnectApi``: connect-python's HTTP layer, on eventpush's pooled, retrying transport.

Wire (spec/connect.md §1, §3.3): ``POST {base}/events/{collection}`` (the name percent-encoded as one segment) and
``POST {base}/events``, headers ``X-Project-Id``, ``X-Api-Key``, ``Content-Type: application/json``; bodies are
the engine's compact UTF-8 JSON, never gzipped. Reply mapping is connect-python's ``_build_response`` /
``_build_batch_response`` (§3.1), plus: a 409 or a batch item ``duplicate: true`` that follows a retry of the same
request is a success with ``duplicate`` set (§3.5), and a batch reply that is not JSON is an unsuccessful
response naming the status instead of a ``ValueError``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import orjson

from .._core_py import dumps_exact
from ..dialects import CONNECT
from ..replies import RETRY_ITEM_MESSAGE
from ..transport import Limits, Retry, Timeout, Transport
from ._engine import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, loads_or_none, single_path
from .responses import (
    UNAUTHORISED_MESSAGE,
    PushBatchResponse,
    PushResponse,
    _lazy_batch_response,
    _lazy_push_response,
    _stored_item,
    _stored_items,
)

__all__ = ["ConnectApi"]

log = logging.getLogger("eventpush.connect")

_RETRY_ITEM_BYTES = RETRY_ITEM_MESSAGE.encode()

# the stored-item shapes of a batch reply: the hub's and the docs' (§1.4)
_OK_ITEMS = ({"success": True, "duplicate": False}, {"success": True})
_OK_ITEM_BYTES = (b'{"success":true,"duplicate":false}', b'{"success":true}')
# a reply recognised byte for byte as "every event stored" (never mutated; identity is what counts)
_ALL_STORED: Dict[str, Any] = {}


def _all_stored(batch: Any, data: bytes) -> bool:
    """True when ``data`` is exactly the compact reply "every event of ``batch`` stored", in one of the two
    documented item shapes.

    PERF: recognising the common reply from its bytes skips parsing one dict per event (~0.3 us each) and the
    garbage it leaves; any other reply (spacing, failures, duplicates) is parsed as usual."""
    groups = batch.groups()
    names = [orjson.dumps(coll) for coll, _s, _e in groups]
    # "{" + groups joined by "," + "}", a group being name + ":[" + n items joined by "," + "]"
    fixed = 2 + (len(groups) - 1) + sum(len(n) + 3 for n in names)
    for ok in _OK_ITEM_BYTES:
        size = fixed + sum((stop - start) * (len(ok) + 1) - 1 for _c, start, stop in groups)
        if len(data) != size:  # cheap refusal before building the expected bytes
            continue
        expected = b"{" + b",".join(
            n + b":[" + b",".join([ok] * (stop - start)) + b"]" for n, (_c, start, stop) in zip(names, groups)
        ) + b"}"
        if data == expected:
            return True
    return False


# one reply of a (possibly split) batch: (sealed batch, status, parsed body or None, raw body, attempts)
Reply = Tuple[Any, int, Any, bytes, int]


def error_message_for(status: int, body: Any) -> Any:
    """connect-python's ``error_message``: 401 → the fixed message, else ``errorMessage``, else the ``errors``
    list, else ``None``."""
    if status == 401:
        return UNAUTHORISED_MESSAGE
    if isinstance(body, dict):
        if "errorMessage" in body:
            return body["errorMessage"]
        if "errors" in body:
            return body["errors"]
    return None


def _not_json_message(status: int, data: bytes) -> str:
    what = "an empty body" if not data else "a body that is not JSON"
    return f"Connect answered HTTP {status} with {what}"


def _batch_failure(reply: Reply) -> Optional[Any]:
    """Why a batch reply carries no per-event results (``None`` when it does)."""
    _batch, status, doc, data, _attempts = reply
    if not isinstance(doc, dict):
        return _not_json_message(status, data)
    if "errorMessage" in doc:
        return doc["errorMessage"]
    if status == 401:
        return UNAUTHORISED_MESSAGE
    if status != 200 and "errors" in doc:
        return doc["errors"]
    return None


def _results_builder(replies: Sequence[Reply]) -> Any:
    """A function building ``{collection: [PushResponse]}`` from the replies, merged in request order. When a
    push was split, the events of a part that failed as a whole get one failed result each (with that part's
    error), so that every event has its result."""
    split = len(replies) > 1

    def build() -> Dict[str, List[PushResponse]]:
        out: Dict[str, List[PushResponse]] = {}
        for reply in replies:
            batch, status, doc, _data, attempts = reply
            failure = _batch_failure(reply)
            if failure is not None:
                if split:
                    for coll, start, stop in batch.groups():
                        out.setdefault(coll, []).extend(
                            _lazy_push_response(None, failure, batch, i, False, False) for i in range(start, stop)
                        )
                continue
            if doc is _ALL_STORED:
                for coll, start, stop in batch.groups():
                    out.setdefault(coll, []).extend(_stored_items(batch, start, stop))
                continue
            resent = attempts > 1
            for coll, start, stop in batch.groups():
                items = doc.get(coll)
                if not isinstance(items, list):
                    continue
                lst = out.setdefault(coll, [])
                n = stop - start
                if len(items) == n and sum(map(items.count, _OK_ITEMS)) == n:
                    # PERF: every event stored (the common case): no per-item inspection in Python
                    lst.extend(_stored_items(batch, start, stop))
                    continue
                for i, item in zip(range(start, stop), items):
                    if type(item) is not dict:
                        lst.append(_lazy_push_response(None, None, batch, i, False, False))
                        continue
                    dup = item.get("duplicate") is True
                    if item.get("success") is True and not dup and item.get("message") is None:
                        lst.append(_stored_item(batch, i))
                    elif dup and resent:  # stored by an earlier attempt of this very request (§3.5)
                        lst.append(_lazy_push_response(None, None, batch, i, True, True))
                    else:
                        lst.append(_lazy_push_response(None, item.get("message"), batch, i,
                                                       bool(item.get("success")), dup))
        return out

    return build


class ConnectApi:
    """connect-python's ``ConnectApi(project_id, api_key, base_url=None, post_timeout=None, get_timeout=None)``
    (note the timeout order), plus keyword-only ``retry`` (default: 5 attempts with backoff), ``max_connections``
    and ``verify``. ``_session`` is the pooled :class:`~eventpush.transport.Transport`."""

    def __init__(
        self,
        project_id: str,
        api_key: str,
        base_url: Optional[str] = None,
        post_timeout: Optional[float] = None,
        get_timeout: Optional[float] = None,
        *,
        retry: Optional[Retry] = None,
        max_connections: int = 10,
        verify: Any = True,
    ) -> None:
        self._project_id = project_id
        self._api_key = api_key
        self._post_timeout = DEFAULT_TIMEOUT if post_timeout is None else post_timeout
        self._get_timeout = DEFAULT_TIMEOUT if get_timeout is None else get_timeout
        self._base_url = DEFAULT_BASE_URL if base_url is None else base_url
        self._session = self._create_session(retry=retry, max_connections=max_connections, verify=verify)

    def _create_session(self, *, retry: Optional[Retry] = None, max_connections: int = 10,
                        verify: Any = True) -> Transport:
        headers = {
            "Content-Type": "application/json",
            "X-Api-Key": str(self._api_key),
            "X-Project-Id": str(self._project_id),
        }
        # requests' timeout=60 bounds both connecting and each read
        return Transport(
            self._base_url,
            headers=headers,
            timeout=Timeout(connect=self._post_timeout, read=self._post_timeout),
            retry=Retry() if retry is None else retry,
            limits=Limits(max_connections=max_connections),
            gzip=False,  # spec §1.5: never compressed
            verify=verify,
        )

    # -- the original's public surface ------------------------------------------------------------------------

    def post_event(self, event: Any) -> PushResponse:
        """Post one :class:`~eventpush.connect.Event` (synchronously): its ``body`` as it is now, changes made in
        place included (the original sends ``json.dumps(event.body)``)."""
        current = getattr(event, "_bytes", None)
        body = current() if current is not None else dumps_exact(event.body)  # an Event-like object of the caller's
        return self._post_single(event.collection_name, body)

    def post_events(self, event_batch: Dict[str, List[Any]]) -> PushBatchResponse:
        """Post already processed events ``{collection: [event dicts]}`` as one batch (synchronously)."""
        body = dumps_exact(event_batch)
        resp = self._session.post(CONNECT.batch_path, body)
        doc = loads_or_none(resp.data)
        if not isinstance(doc, dict):
            r = PushBatchResponse(resp.status, _not_json_message(resp.status, resp.data), {})
            r.success = False
            return r
        return self._build_batch_response(response_body=doc, events_by_collection=event_batch,
                                          status_code=resp.status)

    def _build_response(self, response_body: Any, raw_event: Any, status_code: int) -> PushResponse:
        """connect-python's mapping of a single-event reply."""
        return PushResponse(status_code, error_message_for(status_code, response_body), raw_event)

    def _build_batch_response(self, response_body: Any, events_by_collection: Dict[str, List[Any]],
                              status_code: int) -> PushBatchResponse:
        """connect-python's mapping of a batch reply: ``errorMessage`` → no results; else one
        ``PushResponse(None, message, event, success)`` per item, by position."""
        results: Dict[str, List[PushResponse]] = {}
        error_message = None
        if "errorMessage" in response_body:
            error_message = response_body["errorMessage"]
        else:
            for collection, items in response_body.items():
                events = events_by_collection.get(collection, ())
                lst = results[collection] = []
                for item, event in zip(items, events):
                    r = PushResponse(None, item.get("message"), event, item.get("success"))
                    r.duplicate = item.get("duplicate") is True
                    lst.append(r)
        return PushBatchResponse(status_code, error_message, results)

    # -- the engine path --------------------------------------------------------------------------------------

    def _post_single(self, collection: Any, body: bytes) -> PushResponse:
        """POST one encoded event; the result's ``event`` is decoded from ``body`` when read."""
        resp = self._session.post(single_path(collection), body)
        status = resp.status
        if status == 200:
            return _lazy_push_response(200, error_message_for(200, loads_or_none(resp.data)) if resp.data else None,
                                       body, None, True, False)
        doc = loads_or_none(resp.data)
        if status == 409:
            if resp.attempts > 1:  # our own earlier attempt stored it (§3.5)
                return _lazy_push_response(409, None, body, None, True, True)
            return _lazy_push_response(409, error_message_for(409, doc), body, None, False, True)
        return _lazy_push_response(status, error_message_for(status, doc), body, None, False, False)

    def _post_batches(self, batches: Sequence[Any]) -> PushBatchResponse:
        """POST the sealed batches of one push one after the other (a push over 5,000 events was split) and
        merge the replies: the first non-200 status (else 200), results in request order."""
        replies: List[Reply] = []
        post = self._session.post
        path = CONNECT.batch_path
        for b in batches:
            resp = post(path, b)
            if resp.status == 200 and _all_stored(b, resp.data):
                doc: Any = _ALL_STORED
            else:
                doc = loads_or_none(resp.data)
                if resp.status == 200 and _RETRY_ITEM_BYTES in resp.data and isinstance(doc, dict):
                    self._resend_retryable(b, doc)
            replies.append((b, resp.status, doc, resp.data, resp.attempts))
        status = 200
        for r in replies:
            if r[1] != 200:
                status = r[1]
                break
        message = None
        success = None
        for r in replies:
            failure = _batch_failure(r)
            if failure is not None:
                message = failure
                if not isinstance(r[2], dict):
                    success = False  # a reply we cannot read is never a success, whatever its status
                break
        if len(replies) == 1 and message is not None:
            return _lazy_batch_response(status, message, dict, success)
        return _lazy_batch_response(status, message, _results_builder(replies), success)

    def _resend_retryable(self, batch: Any, doc: Dict[str, Any]) -> None:
        """Re-send alone the items the server asked to try again (spec §3.5: "An error occurred inserting the
        event please try again.", not a duplicate), from their encoded bytes, with the retry policy's backoff;
        ``doc`` is patched in place with the final item of each. A duplicate after such a re-send was stored by
        the earlier attempt: it becomes ``{"success": true, "duplicate": true}``. Validation rejections are never
        re-sent."""
        policy: Retry = self._session.retry
        for round_ in range(1, policy.attempts):  # type: ignore[attr-defined]
            pending = []  # (body index, items list, position)
            for coll, start, stop in batch.groups():
                items = doc.get(coll)
                if not isinstance(items, list):
                    continue
                for j, item in enumerate(items[: stop - start]):
                    if (type(item) is dict and item.get("success") is not True and item.get("duplicate") is not True
                            and item.get("message") == RETRY_ITEM_MESSAGE):
                        pending.append((start + j, items, j))
            if not pending:
                return
            time.sleep(policy.delay(round_))
            sub = batch.subset([i for i, _, _ in pending])
            try:
                resp = self._session.post(CONNECT.batch_path, sub)
            except Exception as exc:  # the items keep their retryable failure; the caller sees it
                log.debug("re-sending %d event(s) failed: %s", len(pending), exc)
                return
            sub_doc = loads_or_none(resp.data)
            if resp.status != 200 or not isinstance(sub_doc, dict):
                return
            k = 0
            for coll, start, stop in sub.groups():
                sub_items = sub_doc.get(coll)
                for j in range(stop - start):
                    _i, items, pos = pending[k]
                    k += 1
                    if not isinstance(sub_items, list) or j >= len(sub_items) or type(sub_items[j]) is not dict:
                        continue
                    new = sub_items[j]
                    if new.get("duplicate") is True:
                        new = {"success": True, "duplicate": True}
                    items[pos] = new

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()
