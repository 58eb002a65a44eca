"""EventFactory (spec §5)."""

from __future__ import annotations

import time

import pytest

from eventpush.barchart import CustomerType, EventFactory, EventType, ProductType


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory(CustomerType.BARCHART, ProductType.WATCHLIST, "1.2.3")


def test_constructor_asserts_types() -> None:
    with pytest.raises(TypeError, match="customer"):
        EventFactory("BARCHART", ProductType.WATCHLIST, "1")  # a code string is not a CustomerType
    with pytest.raises(TypeError, match="product"):
        EventFactory(CustomerType.BARCHART, "WATCHLIST", "1")
    with pytest.raises(TypeError, match="version"):
        EventFactory(CustomerType.BARCHART, ProductType.WATCHLIST, 1)  # type: ignore[arg-type]
    f = EventFactory.for_(CustomerType.TGAM, ProductType.ALERT, "2")
    assert (f.customer, f.product, f.version) == (CustomerType.TGAM, ProductType.ALERT, "2")
    assert str(f) == "[EventFactory]"


def test_build_shape_and_timestamp(factory: EventFactory) -> None:
    before = time.time_ns() // 1_000_000
    e = factory.build(EventType.WATCHLIST_SYMBOL_ADDED, ["user-123", "watchlist-456", "AAPL"])
    after = time.time_ns() // 1_000_000
    assert list(e) == ["customer", "product", "version", "type", "timestamp", "context"]
    assert e["customer"] is CustomerType.BARCHART and e["product"] is ProductType.WATCHLIST
    assert e["type"] is EventType.WATCHLIST_SYMBOL_ADDED and e["version"] == "1.2.3"
    assert type(e["timestamp"]) is int and before <= e["timestamp"] <= after
    assert e["context"] == ["user-123", "watchlist-456", "AAPL"]


def test_build_requires_event_type(factory: EventFactory) -> None:
    with pytest.raises(TypeError, match="EventType"):
        factory.build("WATCHLIST-SYMBOL-ADDED", [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="context"):
        factory.build(EventType.WATCHLIST_SYMBOL_ADDED, "user-123")  # type: ignore[arg-type]


def test_list_context_fills_only_none_from_cache(factory: EventFactory) -> None:
    factory.set_context("userId", "cached-user")
    factory.set_context("symbol", "MSFT")
    e = factory.build(EventType.WATCHLIST_SYMBOL_ADDED, [None, "", None, None])
    # '' is kept (only None is replaced); position 3 is past the keys and stays None
    assert e["context"] == ["cached-user", "", "MSFT", None]
    e = factory.build(EventType.WATCHLIST_SYMBOL_ADDED, ["given", None])
    assert e["context"] == ["given", None]  # watchlistId not cached; length unchanged
    assert factory.build(EventType.WATCHLIST_SYMBOL_ADDED, [])["context"] == []


def test_dict_context_follows_keys_cache_wins_falsy_none(factory: EventFactory) -> None:
    factory.set_context("userId", "cached-user")
    e = factory.build(
        EventType.WATCHLIST_SYMBOL_ADDED,
        {"symbol": "AAPL", "userId": "passed-user", "watchlistId": "", "extra": "ignored"},
    )
    assert e["context"] == ["cached-user", None, "AAPL"]
    e = factory.build(EventType.WATCHLIST_SYMBOL_ADDED, {})
    assert e["context"] == ["cached-user", None, None]


def test_context_cache_clear_and_reset(factory: EventFactory) -> None:
    factory.set_context("userId", "u")
    factory.set_context("watchlistId", "w")
    factory.clear_context("userId")
    factory.clear_context("not-there")
    assert factory.build(EventType.WATCHLIST_ACCESSED, [None, None])["context"] == [None, "w"]
    factory.reset_context()
    assert factory.build(EventType.WATCHLIST_ACCESSED, {"userId": "x"})["context"] == ["x", None]
    with pytest.raises(TypeError):
        factory.set_context("userId", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        factory.set_context(5, "x")  # type: ignore[arg-type]
