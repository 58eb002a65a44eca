"""Realtime (Push) throughput and latency: the embedded broker vs RabbitMQ, 1 and 100 consumers.

    python benchmarks/bench_realtime.py                       # everything (RabbitMQ rows need a local broker)
    python benchmarks/bench_realtime.py --brokers embedded --consumers 1 100 --messages 2000

Two layers are measured, side by side in one run:

* ``broker``: the Backend API in one process — ``publish_many`` from a thread, asyncio subscriptions taking and
  acking each message (the cost of the broker alone; RabbitMQ included its network round trips);
* ``ws``: end to end — a Dispatcher under uvicorn in a child process, consumers as WebSocket clients, messages
  published with batched HTTP POSTs to that Dispatcher (publish=True).

For each: publish rate (messages/s accepted by the broker), delivery rate (deliveries/s over all consumers, from
the first publish to the last delivery), and latency (publish → receipt, median and p99) measured in a separate
paced phase (``--rate`` messages/s) so that queueing under saturation does not hide it. 2 shared cores: compare rows
of one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Dict, List, Tuple

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def stamp(seq: int) -> bytes:
    return b"%d %d" % (seq, time.time_ns())


def latency_ms(body: bytes, now_ns: int) -> float:
    return (now_ns - int(body.split(b" ", 1)[1])) / 1e6


# ------------------------------------------------------------------------------------------------------------------
# layer 1: the broker API in-process


def make_backend(name: str):
    from eventpush.realtime import EmbeddedBackend
    from eventpush.realtime.amqp import AmqpBackend

    return EmbeddedBackend() if name == "embedded" else AmqpBackend(RABBIT)


async def bench_broker(name: str, consumers: int, messages: int, rate: float, paced: int) -> Dict[str, float]:
    backend = make_backend(name)
    await backend.start()
    chan = f"/bench/{os.getpid()}/{time.monotonic_ns()}"
    subs = [await backend.subscribe(f"b{i}", chan) for i in range(consumers)]
    loop = asyncio.get_running_loop()
    lat: List[float] = []
    total = [0]
    done = asyncio.Event()
    expected = [0]

    async def consume(sub):
        while True:
            d = await sub.get(None)
            if d is None:
                return
            now = time.time_ns()
            await d.ack()
            if measuring[0]:
                lat.append(latency_ms(d.body, now))
            total[0] += 1
            if total[0] >= expected[0]:
                done.set()

    measuring = [False]
    tasks = [asyncio.ensure_future(consume(s)) for s in subs]

    # throughput phase: publish as fast as the broker accepts (batches of 100 from a thread)
    expected[0] = consumers * messages
    t0 = time.perf_counter()
    pub_done = [0.0]

    def publish_all():
        for start in range(0, messages, 100):
            backend.publish_many([stamp(i) for i in range(start, min(messages, start + 100))], chan)
        pub_done[0] = time.perf_counter()

    if name == "amqp":
        # confirmed batches: the publish rate counts what RabbitMQ acknowledged
        for start in range(0, messages, 100):
            await backend.publish_async([stamp(i) for i in range(start, min(messages, start + 100))], chan)
        pub_done[0] = time.perf_counter()
    else:
        th = threading.Thread(target=publish_all)
        th.start()
        await loop.run_in_executor(None, th.join)
    await asyncio.wait_for(done.wait(), 300)
    t_all = time.perf_counter() - t0
    t_pub = pub_done[0] - t0

    # paced phase: latency without saturation
    total[0] = 0
    done.clear()
    expected[0] = consumers * paced
    measuring[0] = True
    for i in range(paced):
        backend.publish(stamp(i), chan)
        await asyncio.sleep(1.0 / rate)
    await asyncio.wait_for(done.wait(), 120)
    for s in subs:
        await s.cancel()
    for t in tasks:
        t.cancel()
    await backend.close()
    return {
        "publish_per_s": messages / t_pub,
        "deliveries_per_s": consumers * messages / t_all,
        "lat_median_ms": statistics.median(lat),
        "lat_p99_ms": pct(lat, 99),
    }


# ------------------------------------------------------------------------------------------------------------------
# layer 2: end to end through a Dispatcher over WebSocket


def start_server(name: str) -> Tuple[subprocess.Popen, int, str]:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-rt-")
    backend = "None" if name == "embedded" else repr(RABBIT)
    with open(os.path.join(tmp, "benchapp.py"), "w") as f:
        f.write(textwrap.dedent(f"""
            from eventpush.realtime import Dispatcher
            app = Dispatcher(backend={backend}, publish=True, max_batch_size=64 << 20)
            """))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchapp:app", "--app-dir", tmp, "--port", str(port),
                             "--log-level", "warning", "--ws", "websockets-sansio"])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("server did not start")
            time.sleep(0.05)
    return proc, port, tmp


async def bench_ws(name: str, consumers: int, messages: int, rate: float, paced: int) -> Dict[str, float]:
    import websockets

    from eventpush.realtime import AsyncProducer

    proc, port, _ = start_server(name)
    try:
        chan = f"/bench/{os.getpid()}/{time.monotonic_ns()}"
        sockets = []
        for i in range(consumers):
            sockets.append(await websockets.connect(f"ws://127.0.0.1:{port}{chan}?cid=w{i}", max_queue=None))
        await asyncio.sleep(0.5 + consumers * 0.005)  # subscriptions are opened right after the handshakes
        lat: List[float] = []
        measuring = [False]
        counts = [0]
        expected = [0]
        done = asyncio.Event()

        async def consume(ws):
            async for frame in ws:
                now = time.time_ns()
                if measuring[0]:
                    lat.append(latency_ms(frame.encode() if isinstance(frame, str) else frame, now))
                counts[0] += 1
                if counts[0] >= expected[0]:
                    done.set()

        tasks = [asyncio.ensure_future(consume(ws)) for ws in sockets]
        producer = AsyncProducer(f"http://127.0.0.1:{port}", prefix="")
        expected[0] = consumers * messages
        t0 = time.perf_counter()
        for start in range(0, messages, 200):
            await producer.publish_many([stamp(i) for i in range(start, min(messages, start + 200))]).to(chan)
        t_pub = time.perf_counter() - t0
        await asyncio.wait_for(done.wait(), 600)
        t_all = time.perf_counter() - t0

        counts[0] = 0
        done.clear()
        expected[0] = consumers * paced
        measuring[0] = True
        for i in range(paced):
            await producer.publish(stamp(i)).to(chan)
            await asyncio.sleep(1.0 / rate)
        await asyncio.wait_for(done.wait(), 120)
        for ws in sockets:
            await ws.close()
        for t in tasks:
            t.cancel()
        await producer.aclose()
        return {
            "publish_per_s": messages / t_pub,
            "deliveries_per_s": consumers * messages / t_all,
            "lat_median_ms": statistics.median(lat),
            "lat_p99_ms": pct(lat, 99),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def no_listener_publish_ns(n: int = 200_000) -> float:
    """What the hub pays per stored event when nobody tails the collection (embedded broker)."""
    from eventpush.realtime.hub_integration import build

    rt = build("memory")
    body = b'{"item":"x"}'
    t0 = time.perf_counter_ns()
    for _ in range(n):
        rt.publish("/collections/connect/purchases", body)
    return (time.perf_counter_ns() - t0) / n


def rabbit_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", nargs="+", default=["embedded", "amqp"], choices=["embedded", "amqp"])
    ap.add_argument("--consumers", nargs="+", type=int, default=[1, 100])
    ap.add_argument("--messages", type=int, default=2000, help="messages per throughput run (default 2000)")
    ap.add_argument("--rate", type=float, default=50.0, help="paced latency phase rate, messages/s (default 50)")
    ap.add_argument("--paced", type=int, default=100, help="messages in the paced latency phase (default 100)")
    ap.add_argument("--layers", nargs="+", default=["broker", "ws"], choices=["broker", "ws"])
    args = ap.parse_args()

    import aio_pika
    import uvicorn
    import websockets

    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cores; uvicorn {uvicorn.__version__}, websockets {websockets.__version__}, "
          f"aio-pika {aio_pika.__version__}")
    print(f"# hub publish with no listener (embedded): {no_listener_publish_ns():.0f} ns per event")
    print(f"{'layer':6} {'broker':9} {'consumers':>9} {'publish msg/s':>14} {'deliveries/s':>13} "
          f"{'lat p50 ms':>11} {'lat p99 ms':>11}")
    for layer in args.layers:
        for broker in args.brokers:
            if broker == "amqp" and not rabbit_up():
                print(f"{layer:6} {broker:9} (skipped: no RabbitMQ on 127.0.0.1:5672)")
                continue
            for n in args.consumers:
                fn = bench_broker if layer == "broker" else bench_ws
                r = asyncio.run(fn(broker, n, args.messages, args.rate, args.paced))
                print(f"{layer:6} {broker:9} {n:>9} {r['publish_per_s']:>14,.0f} {r['deliveries_per_s']:>13,.0f} "
                      f"{r['lat_median_ms']:>11.2f} {r['lat_p99_ms']:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
