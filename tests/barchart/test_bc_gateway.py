"""EventGateway against the real hub (spec §3, checklist §8), through a fault-injecting proxy where the bytes on
the wire or failures matter."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import uuid

import orjson
import pytest

import eventpush
from eventpush.barchart import (
    AwaitableFuture,
    BarchartError,
    BarchartStateError,
    BarchartValidationError,
    CustomerType,
    EventFactory,
    EventGateway,
    EventType,
    ProductType,
)
from eventpush.transport import Retry, Timeout
from support.net import reap_child

FAST = Retry(attempts=4, backoff=0.01, backoff_max=0.05)


@pytest.fixture
def encoder_core(core, monkeypatch):
    """Run the test with the compiled core and with the twin (the gateway encodes with ``eventpush.Encoder``)."""
    monkeypatch.setattr(eventpush, "Encoder", core.Encoder)
    return core


def uid() -> str:
    return "user-" + uuid.uuid4().hex[:12]


def ev(user: str, **over):
    e = {"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-SYMBOL-ADDED",
         "timestamp": 1599482731026, "context": [user, "watchlist-456", "AAPL"]}  # fmt: skip
    e.update(over)
    return e


def mine(hub, user):
    return [e for e in hub.stored() if e["context"] and e["context"][0] == user]


# -- endpoints and factories ----------------------------------------------------------------------------------


def test_hosts_and_factories_use_https_443() -> None:
    for gw, url in (
        (EventGateway.for_staging(), "https://events-stage.aws.barchart.com/events"),
        (EventGateway.for_production(), "https://events.aws.barchart.com/events"),
        (EventGateway.for_development(), "https://events-stage.aws.barchart.com/events"),
    ):
        assert gw.url == url and gw.protocol == "HTTPS" and gw.port == 443 and gw.started
        gw.dispose()
    assert EventGateway.for_stage("staging").url == "https://events-stage.aws.barchart.com/events"
    assert EventGateway.for_stage("production").url == "https://events.aws.barchart.com/events"
    for name in ("Staging", "PRODUCTION", "development", "prod", "", None, 1):
        assert EventGateway.for_stage(name) is None


def test_url_rules_omit_default_port() -> None:
    assert EventGateway("http", "127.0.0.1", 80).url == "http://127.0.0.1/events"
    assert EventGateway("HTTP", "127.0.0.1", 8080).url == "http://127.0.0.1:8080/events"
    assert EventGateway("https", "h.example", 443).url == "https://h.example/events"
    assert EventGateway("Https", "h.example", 80).url == "https://h.example:80/events"
    assert EventGateway("https", "h.example").url == "https://h.example/events"
    assert EventGateway.for_endpoint("http://127.0.0.1:8787/barchart").url == "http://127.0.0.1:8787/barchart/events"
    assert EventGateway.for_endpoint("http://127.0.0.1:8787/").url == "http://127.0.0.1:8787/events"
    with pytest.raises(ValueError):
        EventGateway("ftp", "h", 21)
    with pytest.raises(ValueError):
        EventGateway.for_endpoint("127.0.0.1:8787")
    assert str(EventGateway("http", "h", 1)) == "[EventGateway]"


def test_start_does_no_io_is_idempotent_and_returns_the_gateway() -> None:
    with socket.socket() as s:  # a port that nothing listens on: any I/O would fail or hang
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        gw = EventGateway("http", "127.0.0.1", port)
        assert not gw.started
        assert gw.start() is gw
        assert gw.start() is gw and gw.started
        gw.dispose()


# -- failures before I/O ----------------------------------------------------------------------------------------


def test_disposed_and_not_started_fail_before_io(hub, make_proxy) -> None:
    proxy = make_proxy()
    gw = EventGateway("http", "127.0.0.1", proxy.port, path_prefix="/barchart")
    fut = gw.create_events([ev(uid())])  # not started: a rejection, not a synchronous throw
    assert isinstance(fut, AwaitableFuture)
    with pytest.raises(BarchartStateError, match=r"^Unable to use gateway, the gateway has not started\.$"):
        fut.result(5)
    gw.start()
    gw.dispose()
    assert gw.is_disposed
    with pytest.raises(BarchartStateError, match=r"^Unable to use gateway, the gateway has been disposed\.$"):
        gw.create_events([ev(uid())]).result(5)
    with pytest.raises(BarchartError, match="must be a list"):
        EventGateway.for_endpoint(proxy.base_url).create_events((ev(uid()),)).result(5)
    assert proxy.requests == 0


def test_empty_list_is_sent_as_is(hub, make_proxy) -> None:
    proxy = make_proxy()
    with EventGateway.for_endpoint(proxy.base_url, retry=FAST) as gw:
        assert gw.create_events([]).result(10) == []
    assert proxy.bodies == [b'{"events":[]}']
    assert proxy.paths == ["/barchart/events"]


def test_wire_format_keys_order_codes_no_auth(hub, make_proxy, encoder_core) -> None:
    proxy = make_proxy()
    user = uid()
    events = [
        {"context": [user, "w1", "AAPL"], "timestamp": 1599482731026, "extra": {"dropped": True},
         "type": EventType.WATCHLIST_SYMBOL_ADDED, "version": "2.0", "product": ProductType.WATCHLIST,
         "customer": CustomerType.BARCHART},
        {"customer": "TGAM", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 5, "context": [user, "a", "X"],
         "version": None},
    ]  # fmt: skip
    with EventGateway.for_endpoint(proxy.base_url, retry=FAST) as gw:
        created = gw.create_events(events).result(10)
    assert proxy.bodies[0] == (
        b'{"events":[{"customer":"BARCHART","product":"WATCHLIST","type":"WATCHLIST-SYMBOL-ADDED","version":"2.0",'
        b'"timestamp":1599482731026,"context":["' + user.encode() + b'","w1","AAPL"]},'
        b'{"customer":"TGAM","product":"ALERT","type":"ALERT-CREATED","timestamp":5,"context":["'
        + user.encode() + b'","a","X"]}]}'
    )
    headers = {k.lower(): v for k, v in proxy.headers[0].items()}
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers
    assert proxy.paths == ["/barchart/events"]
    # success: the parsed EventFull list as plain dicts
    batch = created[0]["batch"]
    assert uuid.UUID(batch) and all(c["batch"] == batch for c in created)
    assert [c["sequence"] for c in created] == [0, 1]
    assert created[0] == {"customer": "BARCHART", "product": "WATCHLIST", "type": "WATCHLIST-SYMBOL-ADDED",
                          "version": "2.0", "timestamp": 1599482731026, "context": [user, "w1", "AAPL"],
                          "batch": batch, "sequence": 0}  # fmt: skip
    assert all(type(v) in (str, int, list) for c in created for v in c.values())
    assert mine(hub, user) == created


def test_timestamp_like_values_and_context_only_list_checked(hub, encoder_core) -> None:
    user = uid()

    class Timestamp:  # like @barchart/common-js Timestamp: .timestamp is the epoch ms
        def __init__(self, ms: int) -> None:
            self.timestamp = ms

    when = dt.datetime(2020, 9, 7, 12, 45, 31, 26000)
    events = [
        ev(user, timestamp=Timestamp(1599482731026)),
        ev(user, timestamp=when),  # naive = UTC
        ev(user, timestamp=when.replace(tzinfo=dt.timezone(dt.timedelta(hours=2)))),
        ev(user, context=[user, 1, None, {"nested": [True]}]),  # element types are not checked
    ]
    with EventGateway.for_endpoint(hub.base_url) as gw:
        created = gw.create_events(events).result(10)
    assert [c["timestamp"] for c in created] == [1599482731026, 1599482731026, 1599475531026, 1599482731026]
    assert created[3]["context"] == [user, 1, None, {"nested": [True]}]
    assert len(mine(hub, user)) == 4


@pytest.mark.parametrize(
    "override, fields",
    [
        ({"customer": "barchart"}, ["customer"]),  # parse is exact and case-sensitive
        ({"product": "WATCHLISTS"}, ["product"]),
        ({"type": "WATCHLIST_SYMBOL_ADDED"}, ["type"]),  # a member name is not a code
        ({"timestamp": 1599482731026.5}, ["timestamp"]),
        ({"timestamp": "1599482731026"}, ["timestamp"]),
        ({"timestamp": True}, ["timestamp"]),
        ({"timestamp": None}, ["timestamp"]),
        ({"context": ("a", "b")}, ["context"]),
        ({"context": "a,b"}, ["context"]),
        ({"version": 6}, ["version"]),
        ({"customer": None, "timestamp": 1.5}, ["customer", "timestamp"]),
    ],
)
def test_validation_failure_shape_before_io(hub, make_proxy, encoder_core, override, fields) -> None:
    proxy = make_proxy()
    good = ev(uid())
    bad = ev(uid(), **override)
    with EventGateway.for_endpoint(proxy.base_url) as gw:
        with pytest.raises(BarchartValidationError) as info:
            gw.create_events([good, good, bad]).result(10)
    err = info.value
    assert proxy.requests == 0  # nothing went out
    assert err.index == 2 and err.field == fields[0] and list(err.errors) == fields
    assert err.status is None
    assert err.reasons == [
        {
            "value": {
                "code": "REQUEST_INPUT_MALFORMED",
                "message": "An attempt to serialize data into client failed, the data structure is invalid.",
            },
            "children": [
                {"value": {"code": "REQUEST_PARAMETER_MALFORMED", "message": f'The "{f}" field cannot be interpreted.'},
                 "children": []}
                for f in fields
            ],
        }
    ]  # fmt: skip
    assert "event 2" in str(err) and fields[0] in str(err)
    assert isinstance(err, ValueError) and isinstance(err, eventpush.EventValidationError)


def test_every_bad_event_is_named(hub, make_proxy, encoder_core) -> None:
    proxy = make_proxy()
    with EventGateway.for_endpoint(proxy.base_url) as gw:
        with pytest.raises(BarchartValidationError) as info:
            gw.create_events([ev(uid()), "not an event", ev(uid(), type="NOPE"), ev(uid())]).result(10)
    assert [i for i, _ in info.value.failures] == [1, 2]
    assert set(info.value.failures[0][1]) == {"customer", "product", "type", "timestamp", "context"}
    assert info.value.failures[1][1] == {"type": 'The "type" field cannot be interpreted.'}
    assert proxy.requests == 0


def test_factory_events_go_out(hub) -> None:
    user = uid()
    factory = EventFactory(CustomerType.BARCHART, ProductType.PORTFOLIO, "3.4.5")
    factory.set_context("userId", user)
    events = [
        factory.build(EventType.PORTFOLIO_CREATED, [None, "p-1"]),
        factory.build(EventType.PORTFOLIO_POSITION_CREATED, {"portfolioId": "p-1", "positionId": "x", "symbol": "T"}),
    ]
    with EventGateway.for_endpoint(hub.base_url) as gw:
        created = gw.create_events(events).result(10)
    assert [c["context"] for c in created] == [[user, "p-1"], [user, "p-1", "x", "T"]]
    assert [c["type"] for c in created] == ["PORTFOLIO-CREATED", "PORTFOLIO-POSITION-CREATED"]
    assert all(c["version"] == "3.4.5" and c["product"] == "PORTFOLIO" for c in created)


# -- server and network errors --------------------------------------------------------------------------------


def test_json_error_body_is_the_rejection(hub, make_proxy) -> None:
    proxy = make_proxy(lambda n: "500json")
    with EventGateway.for_endpoint(proxy.base_url, retry=FAST) as gw:
        with pytest.raises(BarchartError) as info:
            gw.create_events([ev(uid())]).result(10)
    assert info.value.status == 500
    assert info.value.reasons == [{"value": {"code": "REQUEST_GENERAL_FAILURE",
                                             "message": "An attempt to accept new events failed for unspecified "
                                                        "reason(s)."}, "children": []}]  # fmt: skip
    assert proxy.requests == 4  # 5xx is retried (FAST: 4 attempts)


def test_hub_400_json_not_retried(hub_factory) -> None:
    strict = hub_factory("--strict-context")
    tgam = {"customer": "TGAM", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1,
            "context": ["u", "not-a-uuid", "AAPL"]}  # fmt: skip
    with EventGateway.for_endpoint(strict.base_url, retry=FAST) as gw:
        with pytest.raises(BarchartError) as info:
            gw.create_events([tgam]).result(10)
    assert info.value.status == 400
    assert info.value.reasons[0]["value"]["code"] == "REQUEST_INPUT_MALFORMED"
    assert "context[1]" in orjson.dumps(info.value.reasons).decode()
    assert strict.stored() == []


def test_non_json_error_is_general_failure(hub, make_proxy) -> None:
    proxy = make_proxy(lambda n: "500text")
    with EventGateway.for_endpoint(proxy.base_url, retry=FAST) as gw:
        with pytest.raises(BarchartError) as info:
            gw.create_events([ev(uid())]).result(10)
    assert info.value.status == 500
    assert info.value.reasons == [{"value": {"code": "REQUEST_GENERAL_FAILURE", "message":
                                             "An attempt to create events failed for unspecified reason(s)."},
                                   "children": []}]  # fmt: skip


def test_network_error_is_authorization_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        gw = EventGateway.for_endpoint(f"http://127.0.0.1:{port}/barchart", retry=FAST)
        with pytest.raises(BarchartError) as info:
            gw.create_events([ev(uid())]).result(10)
        gw.dispose()
    assert info.value.status is None
    assert info.value.reasons[0]["value"]["code"] == "REQUEST_AUTHORIZATION_FAILURE"
    assert isinstance(info.value.__cause__, eventpush.errors.ConnectError)


def test_timeout_is_general_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # accepts, never answers
        port = s.getsockname()[1]
        gw = EventGateway.for_endpoint(f"http://127.0.0.1:{port}", retry=Retry.NONE,
                                       timeout=Timeout(connect=1, read=0.3))
        with pytest.raises(BarchartError) as info:
            gw.create_events([ev(uid())]).result(10)
        gw.dispose()
    assert info.value.status is None and info.value.reasons[0]["value"]["code"] == "REQUEST_GENERAL_FAILURE"


def test_retries_connection_errors_429_and_5xx_then_delivers_once(hub, make_proxy) -> None:
    faults = {0: "drop", 1: "429", 2: "503"}
    proxy = make_proxy(lambda n: faults.get(n))
    user = uid()
    with EventGateway.for_endpoint(proxy.base_url, retry=Retry(attempts=5, backoff=0.01, backoff_max=0.05)) as gw:
        created = gw.create_events([ev(user), ev(user)]).result(10)
    assert proxy.requests == 4 and proxy.faults == {"drop": 1, "429": 1, "503": 1}
    assert len(created) == 2 and mine(hub, user) == created  # stored once: every fault came before the hub


def test_other_4xx_is_not_retried(hub, make_proxy) -> None:
    proxy = make_proxy(lambda n: "400json")
    with EventGateway.for_endpoint(proxy.base_url, retry=FAST) as gw:
        with pytest.raises(BarchartError) as info:
            gw.create_events([ev(uid())]).result(10)
    assert proxy.requests == 1 and info.value.status == 400 and info.value.reasons == {"message": "bad"}


def test_awaitable(hub) -> None:
    user = uid()

    async def main():
        with EventGateway.for_endpoint(hub.base_url) as gw:
            return await asyncio.gather(*(gw.create_events([ev(user)]) for _ in range(5)))

    results = asyncio.run(main())
    assert len(results) == 5 and len({r[0]["batch"] for r in results}) == 5
    assert len(mine(hub, user)) == 5


def test_validate_context_opt_in(hub, make_proxy) -> None:
    proxy = make_proxy()
    user = uid()
    tgam = {"customer": "TGAM", "product": "ALERT", "type": "ALERT-CREATED", "timestamp": 1,
            "context": [user, "not-a-uuid", "AAPL"]}  # fmt: skip
    login = {"customer": "BARCHART", "product": "CMDTYVIEW", "type": "CMDTYVIEW-LOGIN", "timestamp": 1,
             "context": [user, "s", "firefox"]}  # fmt: skip
    with EventGateway.for_endpoint(proxy.base_url) as gw:  # default: validators not applied
        assert len(gw.create_events([tgam]).result(10)) == 1
    with EventGateway.for_endpoint(proxy.base_url, validate_context=True) as gw:
        with pytest.raises(BarchartValidationError) as info:
            gw.create_events([login, tgam]).result(10)
        assert info.value.index == 1 and info.value.field == "context[1]"
        assert "alertId" in str(info.value) and "UUID" in str(info.value)
        ok = dict(tgam, context=[user, str(uuid.uuid4()), "AAPL"])
        created = gw.create_events([login, ok]).result(10)
    assert created[0]["context"] == [user, "s", "firefox", ""]  # the stringOptional transformer filled hostname
    assert login["context"] == [user, "s", "firefox"]  # the caller's event is not modified
    assert proxy.requests == 2


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_hosts_are_bracketed() -> None:
    assert EventGateway("http", "::1", 8080).url == "http://[::1]:8080/events"
    assert EventGateway("https", "::1").url == "https://[::1]/events"
    gw = EventGateway.for_endpoint("http://[::1]:8787/barchart")
    assert gw.base_url == "http://[::1]:8787/barchart" and gw.host == "::1" and gw.port == 8787
    assert EventGateway.for_endpoint("https://[2001:db8::1]/x").url == "https://[2001:db8::1]/x/events"


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_endpoint_reaches_the_hub(hub, make_proxy) -> None:
    proxy = make_proxy(host="::1")  # the hub, on [::1]
    user = uid()
    with EventGateway.for_endpoint(proxy.base_url, retry=FAST) as gw:
        assert gw.base_url.startswith("http://[::1]:")
        created = gw.create_events([ev(user)]).result(10)
    assert [c["context"][0] for c in created] == [user] and len(mine(hub, user)) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_use_the_gateway(hub) -> None:
    user = uid()
    with EventGateway.for_endpoint(hub.base_url, retry=FAST) as gw:
        gw.create_events([ev(user, context=[user, "parent"])]).result(10)  # the parent's sender threads run
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                gw.create_events([ev(user, context=[user, "child"])]).result(20)  # hung: no sender threads here
                code = 0
            finally:
                os._exit(code)
        status = reap_child(pid)
        if status is None:
            pytest.fail("create_events hung in the forked child")
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        gw.create_events([ev(user, context=[user, "parent-after"])]).result(10)
    assert sorted(e["context"][1] for e in mine(hub, user)) == ["child", "parent", "parent-after"]
