"""``eventpush serve --workers N``: what ties each worker process to its supervisor, and ``/stats`` for the hub.

The supervisor (:func:`eventpush.cli.serve.run`) makes a private directory (mode 0700) and hands the worker
processes its path in ``EVENTPUSH_HUB_STATS_DIR`` and its own pid in ``EVENTPUSH_HUB_SUPERVISOR``. Each worker
(:class:`WorkerLink`, started by the app's lifespan):

* serves its counters on the Unix socket ``<dir>/<pid>.sock``: a connection gets the worker's ``/stats``
  snapshot as JSON, then end of file. ``GET /stats`` on any worker reads every other worker's snapshot (a short
  timeout; a worker that does not answer is left out) and answers the sum for the whole hub (:func:`merge`);
  every worker counts a request before its answer goes out, so a ``/stats`` read after an answer includes it;
* shuts down (gracefully: SIGTERM to itself) when the supervisor is gone: on Linux the kernel sends the
  SIGTERM (``PR_SET_PDEATHSIG``); everywhere, a watchdog sees the parent pid change within a second. A worker
  orphaned by a ``kill -9`` of the supervisor would otherwise keep the port, and a restart would fail with
  "Address already in use". The last worker out removes the directory the supervisor could not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from typing import Any, Awaitable, Callable, Dict, List, Optional

import orjson

__all__ = ["STATS_DIR_ENV", "SUPERVISOR_ENV", "WorkerLink", "merge", "make_stats_dir", "set_parent_death_signal"]

log = logging.getLogger("eventpush.hub")

STATS_DIR_ENV = "EVENTPUSH_HUB_STATS_DIR"
SUPERVISOR_ENV = "EVENTPUSH_HUB_SUPERVISOR"

#: how long ``GET /stats`` waits for the other workers' snapshots
PEER_TIMEOUT = 2.0
#: how often the watchdog compares the parent pid with the supervisor's
WATCH_INTERVAL = 0.5

_PR_SET_PDEATHSIG = 1
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path holds 104 (BSD) to 108 (Linux) bytes


def make_stats_dir() -> str:
    """The supervisor's private directory for the workers' stats sockets (its sockets' paths must stay short)."""
    path = tempfile.mkdtemp(prefix="eventpush-hub-")
    if len(os.path.join(path, "4194304.sock").encode()) > _SUN_PATH_MAX and os.path.isdir("/tmp"):
        os.rmdir(path)
        path = tempfile.mkdtemp(prefix="eventpush-hub-", dir="/tmp")
    return path


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Linux: have the kernel send ``sig`` to this process when its parent exits. ``False`` where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return False


_COUNTS = ("requests", "rejected_requests", "bytes_in", "events", "rejected")


def merge(own: Dict[str, Any], others: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One ``/stats`` document for the whole hub from every worker's snapshot (``own``: the answering worker's,
    whose ``pid`` and settings the result keeps): counts summed per API and collection, ``events_per_second_1m``
    summed, ``uptime_s`` of the oldest worker, ``workers`` and their ``pids``."""
    docs = [own] + others
    out = dict(own)
    out["uptime_s"] = max(d["uptime_s"] for d in docs)
    for key in _COUNTS:
        out[key] = sum(d[key] for d in docs)
    out["events_per_second_1m"] = round(sum(d["events_per_second_1m"] for d in docs), 3)
    apis: Dict[str, Dict[str, Any]] = {}
    for d in docs:
        for api, a in d["apis"].items():
            m = apis.setdefault(api, {})
            for key, value in a.items():
                if key == "collections":
                    colls = m.setdefault("collections", {})
                    for name, c in value.items():
                        mc = colls.setdefault(name, {})
                        for ck, cv in c.items():
                            mc[ck] = mc.get(ck, 0) + cv
                else:
                    m[key] = m.get(key, 0) + value
    out["apis"] = apis
    out["workers"] = len(docs)
    out["pids"] = sorted(d["pid"] for d in docs)
    return out


class WorkerLink:
    """A worker's side of the supervisor link: the stats socket and the parent watchdog."""

    def __init__(self, directory: str, supervisor: int, snapshot: Callable[[], Dict[str, Any]]) -> None:
        self.directory = directory
        self.supervisor = supervisor
        self.snapshot = snapshot
        self.path = os.path.join(directory, f"{os.getpid()}.sock")
        self._server: Optional[asyncio.AbstractServer] = None
        self._watchdog: Optional["asyncio.Task[None]"] = None

    @classmethod
    def from_env(cls, snapshot: Callable[[], Dict[str, Any]]) -> "Optional[WorkerLink]":
        directory = os.environ.get(STATS_DIR_ENV)
        supervisor = os.environ.get(SUPERVISOR_ENV)
        if not directory or not supervisor:
            return None
        return cls(directory, int(supervisor), snapshot)

    @property
    def orphaned(self) -> bool:
        return os.getppid() != self.supervisor

    async def start(self) -> None:
        set_parent_death_signal(signal.SIGTERM)
        self._watchdog = asyncio.ensure_future(self._watch())
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        except (OSError, AttributeError, NotImplementedError) as exc:  # (no Unix sockets: Windows)
            log.warning("cannot serve this worker's counters on %s (%s): /stats of the other workers leave them out",
                        self.path, exc)

    async def _watch(self) -> None:
        """The portable half of the parent link (and the check that the supervisor did not die before the
        kernel's parent-death signal was set)."""
        while True:
            if self.orphaned:
                log.warning("the supervisor (pid %d) is gone: this worker (pid %d) shuts down",
                            self.supervisor, os.getpid())
                os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
                return
            await asyncio.sleep(WATCH_INTERVAL)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(self.snapshot()))
            await writer.drain()
        except (ConnectionError, OSError):  # pragma: no cover - the asking worker gave up
            pass
        finally:
            writer.close()

    async def _read_peer(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except (ConnectionRefusedError, FileNotFoundError):
            self._forget(path)
            return None
        except OSError:
            return None
        try:
            data = await reader.read()
        finally:
            writer.close()
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    @staticmethod
    def _forget(path: str) -> None:
        """A socket nobody listens on: its worker died without cleaning up (removed, unless its pid lives)."""
        try:
            pid = int(os.path.basename(path)[:-5])
            os.kill(pid, 0)
            return
        except ProcessLookupError:
            pass
        except (ValueError, OSError):
            return
        try:
            os.unlink(path)
        except OSError:
            pass

    async def others(self) -> List[Dict[str, Any]]:
        """The other workers' snapshots (those that answer within ``PEER_TIMEOUT``)."""
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(".sock")]
        except OSError:
            return []
        paths = [p for p in (os.path.join(self.directory, n) for n in names) if p != self.path]
        reads: List[Awaitable[Optional[Dict[str, Any]]]] = [
            asyncio.wait_for(self._read_peer(p), PEER_TIMEOUT) for p in paths]
        got = await asyncio.gather(*reads, return_exceptions=True)
        return [d for d in got if isinstance(d, dict)]

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if self.orphaned:  # the supervisor cannot remove its directory any more: the last worker out does
            try:
                os.rmdir(self.directory)
            except OSError:
                pass
