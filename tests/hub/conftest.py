"""Hub fixtures: the real hub (``python -m eventpush.cli.serve`` → uvicorn) in a subprocess on a free port,
stopped (SIGTERM, then SIGKILL) at teardown. Helpers live in hub_support.py."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional

import pytest

from hub_support import KEY, PROJECT, Hub

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """Keep each phase's report on the test item, for the fixtures' teardown (``hub_factory``)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def hub_factory(tmp_path: Any, request: Any) -> Iterator[Any]:
    """Start hubs with custom options: ``hub_factory("--sink")``; all are stopped at teardown, and when the test
    failed their logs are printed (the report's captured teardown output): a 500's traceback is only there."""
    started: List[Hub] = []

    def make(*args: str, db: Optional[str] = None, start: bool = True) -> Hub:
        h = Hub(tmp_path, *args, db=db)
        started.append(h)
        return h.start() if start else h

    try:
        yield make
    finally:
        for h in started:
            h.stop()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            for h in started:
                print(f"--- the log of the hub on port {h.port} ({h.log_path}), its last 20,000 characters:")
                print(h.logs()[-20_000:])


@pytest.fixture(scope="module")
def hub(tmp_path_factory: Any) -> Iterator[Hub]:
    """One hub per test module, with project ``proj-1`` / ``key-1`` (and a second key) configured and a 1 MiB
    body limit. Tests use their own collection names."""
    tmp = tmp_path_factory.mktemp("hub")
    h = Hub(tmp, "--project", f"{PROJECT}:{KEY}", "--project", f"{PROJECT}:master-key", "--project", "proj-2:key-2",
            "--max-body", str(1024 * 1024), "--body-timeout", "2")
    h.start()
    try:
        yield h
    finally:
        h.stop()


