"""Typical uses of the public API, type-checked by mypy in tests/test_package.py (never executed)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any, Dict, List

import eventpush
from eventpush import Batcher, Retry, Timeout
from eventpush.barchart import CustomerType, EventBatcher, EventFactory, EventGateway, EventType, ProductType
from eventpush.connect import ConnectClient, PushBatchResponse, PushResponse
from eventpush.realtime import Producer


def encoder_round_trip() -> bytes:
    enc = eventpush.Encoder(eventpush.CONNECT)
    enc.add({"item": "hat"}, collection="purchases")
    batch = enc.seal()
    assert batch is not None
    return bytes(memoryview(batch))


def connect_client() -> bool:
    client = ConnectClient("project", "key", base_url="http://127.0.0.1:8787/connect")
    one: Future[PushResponse] = client.push_event("purchases", {"item": "hat"})
    many: Future[PushBatchResponse] = client.push_events({"purchases": [{"item": "hat"}]})
    return one.result().success and many.result().success


def batcher() -> Dict[str, int]:
    with Batcher("http://127.0.0.1:8787/connect", eventpush.CONNECT, retry=Retry(attempts=3),
                 timeout=Timeout(connect=1.0, read=5.0)) as b:
        b.push({"item": "hat"}, collection="purchases")
        b.flush(timeout=10.0)
        return b.stats


async def barchart() -> List[Dict[str, Any]]:
    gateway = EventGateway.for_endpoint("http://127.0.0.1:8787/barchart")
    factory = EventFactory(CustomerType.BARCHART, ProductType.ALERT, "1.0.0")
    event = factory.build(EventType.ALERT_CREATED, ["user-1", "alert-1"])
    created: List[Dict[str, Any]] = await gateway.create_events([event])
    batched = EventBatcher(gateway)
    batched.push(event)
    batched.close()
    return created


def realtime() -> None:
    Producer("http://127.0.0.1:8787").publish({"price": 1.5}).to("/quotes/AAPL")


asyncio.run(barchart())
