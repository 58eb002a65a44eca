"""README.md tells the truth: its Python examples (the engine, Connect, realtime) and its hub curl examples run as
written against a real hub (`eventpush serve` on a free 127.0.0.1 port instead of 8787). The Barchart section is
run by tests/barchart/test_bc_readme.py."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Iterator

import pytest
from support.net import free_port, stop_process, wait_port
from support.readme import blocks
from support.readme import section as readme_section

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    return readme_section(README.read_text(encoding="utf-8"), title)


class Hub:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def local(self, code: str) -> str:
        return code.replace("http://127.0.0.1:8787", self.url)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("readme-hub")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventpush", "serve", "--port", str(port), "--db", str(tmp / "hub.db"),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30.0, proc)
        yield Hub(port)
    finally:
        stop_process(proc)


def run_python(code: str, tmp_path: Path) -> str:
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})  # noqa: S102 - our own README
    finally:
        os.chdir(cwd)
    return out.getvalue()


def test_engine_examples(hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = blocks(section("The engine"), "python")
    assert len(code) == 2
    monkeypatch.setenv("EVENTPUSH_SPOOL_DIR", str(tmp_path))
    spool = tmp_path / "spool"
    out = run_python(hub.local(code[0]), tmp_path)
    assert out == "b'{\"purchases\":['\n"
    out = run_python(hub.local(code[1]).replace("/tmp/eventpush-spool", str(spool)), tmp_path)
    assert out == "10000 0\n"


def test_connect_examples(hub: Hub, tmp_path: Path) -> None:
    code = blocks(section("Connect"), "python")
    assert len(code) == 2
    assert run_python(hub.local(code[0]), tmp_path) == "True 200\n[True, True]\n"
    out = run_python(hub.local(code[1]), tmp_path)
    assert out == "200 True hat\n[True]\npushed 200\n"


def test_realtime_examples(hub: Hub, tmp_path: Path) -> None:
    import requests

    code = blocks(section("Realtime"), "python")
    assert len(code) == 2
    # open the consumer's queue first (a message published to a channel with no queue is not kept): an SSE
    # response starts only once the subscription exists, and the queue outlives it by the queue TTL
    with requests.get(hub.url + "/push/greetings", headers={"Consumer-Id": "me", "Accept": "text/event-stream"},
                      stream=True, timeout=15) as r:
        assert r.status_code == 200
        next(r.iter_content(chunk_size=None))
    run_python(hub.local(code[0]), tmp_path)
    got = [requests.get(hub.url + "/push/greetings", headers={"Consumer-Id": "me"}, timeout=40).content
           for _ in range(4)]
    assert got == [b"hi there!", b"one", b"two", b"three"]
    run_python(code[1], tmp_path)


def test_hub_curl_examples(hub: Hub) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    shell = [b for b in blocks(section("The hub"), "sh") if "curl" in b]
    assert len(shell) == 2
    outputs = []
    for block in shell:
        commands = re.split(r"\n(?=curl )", hub.local(block).strip())
        for command in commands:
            command = "\n".join(line for line in command.splitlines() if not line.startswith("#"))
            proc = subprocess.run(["bash", "-c", command.replace("curl ", "curl -sS --max-time 10 ", 1)],
                                  capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, proc.stderr
            outputs.append(proc.stdout)
    single, batch, listing, barchart = outputs
    assert single.startswith("HTTP/1.1 200")
    assert batch == '{"purchases":[{"success":true,"duplicate":false},{"success":true,"duplicate":false}]}'
    assert '"results":[{"item":"gloves"' in listing
    assert '"context":["user-123","watchlist-456","AAPL"]' in barchart and '"sequence":0' in barchart
