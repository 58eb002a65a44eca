"""A client nobody here wrote: ``connect-client`` 0.1.1 from PyPI (getconnect/connect-python) against the hub.

CI installs it with ``pip install --no-deps connect-client==0.1.1`` (its pycrypto requirement does not build on
Python 3.11; ``requests`` comes from the test extra). Only ``connect.security`` imports ``Crypto``; this test uses
``connect.client``, ``connect.api``, ``connect.event`` and ``connect.responses``, which do not.
"""

from __future__ import annotations

import datetime
import uuid

import pytest

client_mod = pytest.importorskip(
    "connect.client",
    reason="connect-client 0.1.1 is not installed (pip install --no-deps connect-client==0.1.1)",
)
from connect.responses import PushBatchResponse, PushResponse  # noqa: E402

from hub_support import KEY, PROJECT  # noqa: E402


@pytest.fixture
def client(hub):
    c = client_mod.ConnectClient(PROJECT, KEY, base_url=f"http://127.0.0.1:{hub.port}/connect")
    yield c
    c._executor.shutdown(wait=True)


def test_single_events(client, hub):
    coll = "py-" + uuid.uuid4().hex[:8]
    r = client.push_event(coll, {"item": "book", "price": 9.5, "when": datetime.datetime(2015, 8, 1)}).result(30)
    assert isinstance(r, PushResponse)
    assert (r.success, r.http_status_code, r.error_message) == (True, 200, None)
    eid = r.event["id"]
    assert uuid.UUID(eid)
    stored = hub.get(f"/connect/events/{coll}").json()["results"]
    assert stored == [{"item": "book", "price": 9.5, "when": "2015-08-01T00:00:00", "id": eid,
                       "timestamp": r.event["timestamp"]}]
    # the same id again: the hub answers 409, the client reports it as a failed push with the server's message
    dup = client.push_event(coll, {"item": "book", "id": eid}).result(30)
    assert (dup.success, dup.http_status_code) == (False, 409)
    assert "Duplicate event" in dup.error_message and eid in dup.error_message
    # a server-side limit the client does not check
    big = client.push_event(coll, {"pad": "x" * 70000}).result(30)
    assert (big.success, big.http_status_code, big.error_message) == (False, 413, "Maximum event size of 64kb exceeded.")
    assert len(hub.get(f"/connect/events/{coll}").json()["results"]) == 1


def test_batches_with_duplicates(client, hub):
    c1, c2 = "pyb-" + uuid.uuid4().hex[:8], "pyb-" + uuid.uuid4().hex[:8]
    first = client.push_event(c1, {"id": "known", "n": 0}).result(30)
    assert first.success
    batch = {c1: [{"id": "known", "n": 1}, {"id": "new", "n": 2}, {"id": "new", "n": 3}, {"n": 4}],
             c2: [{"n": 5}]}
    r = client.push_events(batch).result(30)
    assert isinstance(r, PushBatchResponse)
    assert (r.success, r.http_status_code, r.error_message) == (True, 200, None)
    assert list(r.results) == [c1, c2]
    items = r.results[c1]
    assert [i.success for i in items] == [False, True, False, True]
    assert items[0].error_message.startswith("Duplicate event") and items[2].error_message.startswith("Duplicate")
    assert items[1].error_message is None and items[1].http_status_code is None
    assert [i.event["n"] for i in items] == [1, 2, 3, 4]
    assert [i.success for i in r.results[c2]] == [True]
    stored = hub.get(f"/connect/events/{c1}").json()["results"]
    assert sorted(e["n"] for e in stored) == [0, 2, 4]


def test_bad_key_and_too_large_batch(hub):
    bad = client_mod.ConnectClient(PROJECT, "wrong-key", base_url=f"http://127.0.0.1:{hub.port}/connect")
    try:
        r = bad.push_event("x", {"a": 1}).result(30)
        assert (r.success, r.http_status_code) == (False, 401)
        assert r.error_message == "Unauthorised. Please check your Project Id and API Key"
        rb = bad.push_events({"x": [{"a": 1}]}).result(30)
        assert (rb.success, rb.http_status_code, rb.results) == (False, 401, {})
        assert rb.error_message == "Unauthorised. Please check your Project Id and API Key"
    finally:
        bad._executor.shutdown(wait=True)
    good = client_mod.ConnectClient(PROJECT, KEY, base_url=f"http://127.0.0.1:{hub.port}/connect")
    try:
        r = good.push_events({"x": [{"a": i} for i in range(5001)]}).result(60)
        assert (r.success, r.http_status_code, r.results) == (False, 413, {})
        assert "Maximum batch size of 5000 events exceeded" in r.error_message
    finally:
        good._executor.shutdown(wait=True)
