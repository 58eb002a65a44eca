"""Shared fixtures: the implementation under test (compiled core and pure twin), free ports, subprocess servers.

Area-specific fixtures (hub servers, fault-injecting servers, RabbitMQ, Chromium) live in the conftest.py of each
test folder.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Iterator

import pytest

from eventpush._envflags import env_flag


def _compiled_or_none() -> "ModuleType | None":
    try:
        return importlib.import_module("eventpush._core")
    except ImportError:
        return None


_PURE_ONLY = env_flag("EVENTPUSH_PURE")
_CORE_C = None if _PURE_ONLY else _compiled_or_none()

_CORE_PARAMS = [pytest.param("python", id="py")]
if not _PURE_ONLY:
    # In a normal build the compiled core must be there: a missing extension fails (see test_implementation.py)
    # rather than silently running only the twin.
    _CORE_PARAMS.insert(0, pytest.param("cython", id="c", marks=pytest.mark.c_extension))


@pytest.fixture(scope="session", params=_CORE_PARAMS)
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The encoder core module under test: ``eventpush._core`` then ``eventpush._core_py``."""
    if request.param == "python":
        return importlib.import_module("eventpush._core_py")
    if _CORE_C is None:
        pytest.fail("the compiled core eventpush._core is not built (set EVENTPUSH_PURE=1 to test the twin only)")
    return _CORE_C


from support.net import free_port  # noqa: E402 - re-exported: `from tests.conftest import free_port` works too


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture
def clean_env() -> Iterator[dict]:
    """A copy of the environment for child processes."""
    env = dict(os.environ)
    yield env
