"""Peer clients from PyPI, pointed at the same sink, with their default settings (queue sizes, batch sizes,
threads): connect-client 0.1.1 (``push_events``), segment-analytics-python (``host=``, ``/v1/batch``), posthog."""

from __future__ import annotations

import warnings


def run_connect_client(ctx) -> None:
    # connect.client imports only connect.api / event / responses / exceptions (never the Crypto-based security)
    from connect.client import ConnectClient

    client = ConnectClient("project", "key", base_url=ctx.url)
    futures = []
    coll = ctx.collection
    for chunk in ctx.chunks(5000):  # the API's batch limit
        futures.append(client.push_events({coll: chunk}))
    for f in futures:
        resp = f.result()
        if not resp.http_status_code == 200:
            raise RuntimeError(f"connect-client: HTTP {resp.http_status_code}")


def run_segment(ctx) -> None:
    from segment.analytics import Client

    client = Client(write_key="bench-key", host=ctx.url)
    track = client.track
    for chunk in ctx.chunks(5000):
        for ev in chunk:
            track(user_id="user-1", event="page_view", properties=ev)
    client.flush()
    client.shutdown()


def run_posthog(ctx) -> None:
    from posthog import Posthog

    warnings.simplefilter("ignore")
    client = Posthog("phc_bench", host=ctx.url, enable_local_evaluation=False)
    capture = client.capture
    for chunk in ctx.chunks(5000):
        for ev in chunk:
            capture("page_view", distinct_id="user-1", properties=ev)
    client.flush()
    client.shutdown()


def _prepare_connect() -> None:
    import connect.client  # noqa: F401


def _prepare_segment() -> None:
    import segment.analytics  # noqa: F401


def _prepare_posthog() -> None:
    import posthog  # noqa: F401


ROWS = [
    {"name": "connect-client 0.1.1 push_events (5,000 per call)", "run": run_connect_client, "marker": b'"id":',
     "requires": ("connect.client",),
     "prepare": _prepare_connect},
    {"name": "segment-analytics-python (defaults)", "run": run_segment, "marker": b'"messageId"',
     "requires": ("segment.analytics",),
     "prepare": _prepare_segment},
    {"name": "posthog (defaults)", "run": run_posthog, "marker": b'"uuid"', "requires": ("posthog",), "prepare": _prepare_posthog,
     "note": "segment and posthog run with their defaults: a bounded in-memory queue that drops events when full."},
]
