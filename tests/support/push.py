"""Helpers for the realtime (Push) tests."""

from __future__ import annotations

__all__ = ["open_queue"]


def open_queue(channel_url: str, consumer: str, timeout: float = 15.0) -> None:
    """Make sure the queue ``consumer@channel`` exists on a server we cannot inspect: an SSE response starts (its
    opening comment) only after the subscription was made; the queue then outlives it by queue_ttl."""
    import requests

    with requests.get(channel_url, params={"cid": consumer}, headers={"Accept": "text/event-stream"}, stream=True,
                      timeout=timeout) as r:
        assert r.status_code == 200, r.status_code
        buf = b""
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            if b"\n\n" in buf:
                return


def amqp_app(url: str, **kw: object) -> str:
    """The source of a uvicorn app module: a publishing Dispatcher on the RabbitMQ at ``url`` (keyword arguments
    go to the Dispatcher), for the ``spawn`` fixture."""
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return f"""
        import logging
        logging.basicConfig(level=logging.WARNING)
        from eventpush.realtime import Dispatcher
        app = Dispatcher(backend={url!r}, publish=True, {args})
        """
