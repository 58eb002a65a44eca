"""Fixtures for the realtime (Push) tests: uvicorn servers on 127.0.0.1 (in a thread or a subprocess), RabbitMQ."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest

from support.net import free_port, wait_port

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
RABBIT_URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/"




class ThreadServer:
    """uvicorn serving an ASGI app in a thread of the test process (real sockets, lifespan on)."""

    def __init__(self, app: Any, **kw: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                     ws="websockets-sansio", **kw)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[..., ThreadServer]]:
    """``serve(app)`` → a running :class:`ThreadServer`; stopped after the test."""
    servers: List[ThreadServer] = []

    def start(app: Any, **kw: Any) -> ThreadServer:
        s = ThreadServer(app, **kw)
        servers.append(s)
        return s

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


class ProcServer:
    """A server in a child process (uvicorn on a generated app module, or any command)."""

    def __init__(self, cmd: List[str], port: int, env: "dict | None" = None, cwd: "str | None" = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=cwd)
        try:
            wait_port(port, 20, self.proc)
        except Exception:
            self.stop()
            raise

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.stdout.read() if self.proc.stdout else ""


@pytest.fixture
def spawn(tmp_path: Any) -> Iterator[Callable[..., ProcServer]]:
    """``spawn(app_source)`` → uvicorn in a subprocess serving ``app`` defined by ``app_source``;
    ``spawn(cmd=[...], port=p)`` runs any server command. All are stopped (terminate, then kill) after the test."""
    procs: List[ProcServer] = []
    counter = [0]

    def start(source: "str | None" = None, *, cmd: "List[str] | None" = None, port: "int | None" = None,
              env: "dict | None" = None) -> ProcServer:
        port = port or free_port()
        if cmd is None:
            counter[0] += 1
            mod = f"rtapp{counter[0]}"
            (tmp_path / f"{mod}.py").write_text(textwrap.dedent(source or ""))
            cmd = [sys.executable, "-m", "uvicorn", f"{mod}:app", "--app-dir", str(tmp_path), "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning"]
        p = ProcServer(cmd, port, env=env)
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def restore_push_config() -> Iterator[None]:
    """For a test that calls ``eventpush.realtime.configure(...)``: the process-wide configuration it found is put
    back afterwards (``configure`` also forgets the default backend instance, as it always does)."""
    from eventpush.realtime import configure, get_config

    saved = get_config()
    try:
        yield
    finally:
        configure(saved)


def rabbit_reachable() -> bool:
    try:
        with socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbitmq_url() -> str:
    """The local RabbitMQ's URL; the test is skipped (with the reason) only when no broker is reachable."""
    if not rabbit_reachable():
        pytest.skip(f"no RabbitMQ broker reachable on {RABBIT_HOST}:{RABBIT_PORT}")
    return RABBIT_URL


@pytest.fixture
def uid() -> str:
    """A unique token for channel / consumer names (tests may share one RabbitMQ)."""
    return f"{os.getpid()}-{time.monotonic_ns()}"


def _serve_prefix() -> List[str]:
    """``eventpush serve``; while the encoder core is not built, its core-free entry point (the same code path)."""
    import importlib.util

    if importlib.util.find_spec("eventpush._core_py") is not None:
        return [sys.executable, "-m", "eventpush", "serve"]
    return [sys.executable, "-m", "eventpush.cli.serve"]


def hub_cmd(port: int, tmp_path: Any, *extra: str) -> List[str]:
    return [*_serve_prefix(), "--port", str(port), "--db", str(tmp_path / f"hub{port}.db"), "--log-level", "warning",
            "--no-access-log", *extra]


@pytest.fixture
def hub(spawn: Callable[..., ProcServer], tmp_path: Any) -> Callable[..., ProcServer]:
    """``hub(*serve_args)`` → the real hub (``eventpush serve``) in a child process; skipped if the hub is absent."""
    pytest.importorskip("eventpush.hub.app", reason="the hub (eventpush.hub) is not part of this build")

    def start(*extra: str) -> ProcServer:
        port = free_port()
        return spawn(cmd=hub_cmd(port, tmp_path, *extra), port=port)

    return start
