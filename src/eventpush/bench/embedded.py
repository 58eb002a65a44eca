"""The embedded hub of a target-less ``eventpush bench``: ``eventpush serve --sink`` in a child process.

The child runs ``python -m eventpush.cli.serve`` (the serve command without the other subcommands or the encoder
core) on a free 127.0.0.1 port, with realtime and the access log off so that it spends its CPU on parsing,
validating and counting. It is always stopped: :meth:`EmbeddedHub.stop` (also on ``__exit__``) sends SIGTERM, waits,
then kills; on Linux the child also gets SIGTERM from the kernel if the bench process dies first.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Optional

import orjson
import urllib3

__all__ = ["EmbeddedHub", "HubStartError", "free_port", "fetch_stats", "process_cpu_seconds"]

log = logging.getLogger("eventpush.bench")


class HubStartError(RuntimeError):
    """The embedded hub did not start (its log is in the message)."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_stats(url: str, timeout: float = 5.0) -> Optional[dict]:
    """``GET url`` (an eventpush hub's ``/stats``) → the document, or ``None`` when it is not one."""
    try:
        r = urllib3.request("GET", url, timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False)
    except urllib3.exceptions.HTTPError:
        return None
    if r.status != 200:
        return None
    try:
        doc = orjson.loads(r.data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), int):
        return None
    return doc


def process_cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of a running process (Linux ``/proc``), or ``None`` where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: PR_SET_PDEATHSIG = 1. A bench killed with SIGKILL must not leave a hub behind.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass


class EmbeddedHub:
    """``eventpush serve --sink`` on a free loopback port; a context manager that always stops it."""

    def __init__(self, *, port: Optional[int] = None, extra_args: Optional[List[str]] = None,
                 start_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> List[str]:
        """The child's command line."""
        return [sys.executable, "-m", "eventpush.cli.serve", "--sink", "--host", "127.0.0.1", "--port",
                str(self.port), "--no-realtime", "--no-access-log", "--log-level", "warning",
                "--graceful-timeout", "5", *self.extra_args]

    def start(self) -> "EmbeddedHub":
        """Start the child and wait until ``GET /health`` answers 200."""
        self._log = tempfile.TemporaryFile(prefix="eventpush-bench-hub-")
        kwargs: dict = {}
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, **kwargs)
        deadline = time.monotonic() + self.start_timeout
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1.0, read=2.0))
        try:
            while True:
                if self.proc.poll() is not None:
                    raise HubStartError(f"the embedded hub exited with status {self.proc.returncode}:\n"
                                        f"{self.logs()}")
                try:
                    if http.request("GET", self.base_url + "/health").status == 200:
                        return self
                except urllib3.exceptions.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise HubStartError(f"the embedded hub did not answer /health within {self.start_timeout:g} s:"
                                        f"\n{self.logs()}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        finally:
            http.clear()

    def stats(self) -> Optional[dict]:
        """The hub's ``/stats`` document."""
        return fetch_stats(self.base_url + "/stats")

    def cpu_seconds(self) -> Optional[float]:
        """CPU seconds the hub process has used so far (Linux), else ``None``."""
        return process_cpu_seconds(self.proc.pid) if self.proc is not None else None

    def logs(self) -> str:
        """What the child wrote so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("the embedded hub did not stop within %g s: killing it", timeout)
                    proc.kill()
                    proc.wait(5)
            return proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> "EmbeddedHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
