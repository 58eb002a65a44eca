"""eventpush rows: the Batcher (push one event at a time) and batch push (Sender + encode_batch, a list per
call), each with the compiled core and with the pure-Python twin."""

from __future__ import annotations

from collections import deque
from typing import Any, Dict


def _encoder_class(impl: str) -> Any:
    if impl == "compiled":
        from eventpush._core import Encoder
    else:
        from eventpush._core_py import Encoder
    return Encoder


def _batcher(impl: str):
    def run(ctx) -> Dict[str, Any]:
        from eventpush import CONNECT
        from eventpush.batcher import Batcher

        Encoder = _encoder_class(impl)
        b = Batcher(ctx.url, CONNECT, encoder=Encoder(CONNECT), concurrency=4, spool_dir=False, atexit=False)
        push = b.push
        coll = ctx.collection
        for chunk in ctx.chunks(5000):
            for ev in chunk:
                push(ev, coll)
        b.close()
        st = b.stats
        assert st["delivered"] == ctx.n, st
        return {"client_delivered": st["delivered"], "batches": st["batches"]}

    return run


def _batch_push(impl: str):
    def run(ctx) -> Dict[str, Any]:
        from eventpush import CONNECT
        from eventpush.sender import Sender
        from eventpush.transport import Limits, Transport

        Encoder = _encoder_class(impl)
        enc = Encoder(CONNECT)
        transport = Transport(ctx.url, limits=Limits(max_connections=4))
        sender = Sender(transport, CONNECT, concurrency=4, max_in_flight=8)
        window = deque()
        delivered = batches_sent = 0
        coll = ctx.collection
        for chunk in ctx.chunks(5000):
            batches, errors = enc.encode_batch(chunk, coll)
            assert not errors
            for batch in batches:
                window.append(sender.send(batch))  # blocks while max_in_flight batches are pending
                batches_sent += 1
            while window and (len(window) > 8 or window[0].done()):
                delivered += window.popleft().result().delivered  # read every result, keep memory flat
        while window:
            delivered += window.popleft().result().delivered
        sender.close()
        transport.close()
        assert delivered == ctx.n, delivered
        return {"client_delivered": delivered, "batches": batches_sent}

    return run


def _prepare() -> None:
    import eventpush.batcher  # noqa: F401
    import eventpush.sender  # noqa: F401


_REQ_C = ("eventpush._core",)
_REQ_PY = ("eventpush._core_py",)

ROWS = [
    {"name": "eventpush batch push, compiled (Sender + encode_batch, 5,000 per call)", "run": _batch_push("compiled"),
     "marker": b'"id":', "requires": _REQ_C, "prepare": _prepare},
    {"name": "eventpush Batcher.push(), compiled", "run": _batcher("compiled"), "marker": b'"id":',
     "requires": _REQ_C, "prepare": _prepare},
    {"name": "eventpush batch push, twin (pure Python)", "run": _batch_push("twin"), "marker": b'"id":',
     "requires": _REQ_PY, "prepare": _prepare},
    {"name": "eventpush Batcher.push(), twin (pure Python)", "run": _batcher("twin"), "marker": b'"id":',
     "requires": _REQ_PY, "prepare": _prepare,
     "note": "eventpush rows use the real Connect dialect: per-event batch replies are parsed and mapped back."},
]
