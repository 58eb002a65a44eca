"""Sockets and processes shared by the test folders: free ports, waiting for a server or a condition, stopping a
child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable, Optional

__all__ = ["free_port", "wait_port", "wait_until", "wait_for", "stop_process", "reap_child"]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: "Callable[[], object]", timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; returns its last value as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def wait_for(pred: "Callable[[], object]", timeout: float = 10.0, what: str = "condition") -> None:
    """``wait_until`` that fails the test (naming ``what``) when ``pred`` is still false after ``timeout``."""
    assert wait_until(pred, timeout, 0.05), f"timed out waiting for {what}"


def wait_port(port: int, timeout: float = 15.0, proc: "Optional[subprocess.Popen]" = None) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; ``RuntimeError`` when ``proc`` exits
    first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {out!r}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def reap_child(pid: int, timeout: float = 60.0) -> Optional[int]:
    """Wait for the forked child ``pid`` and return its wait status; ``None`` when it did not end within
    ``timeout`` seconds (it is then killed and reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None
