"""Fixtures of the micro-benchmarks (pytest-benchmark). Not part of the test suite (``testpaths = ["tests"]``).

Run: ``python -m pytest benchmarks/bench_encoder.py --benchmark-columns=min,mean,rounds``
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_encoder  # noqa: E402


@pytest.fixture(scope="session")
def connect_events():
    """200,000 Connect-shaped events (about 250 bytes each once stamped), never mutated by the fixture's users."""
    return bench_encoder.connect_events(bench_encoder.N_EVENTS)


@pytest.fixture(scope="session")
def barchart_events():
    """200,000 Barchart-shaped events of about 250 bytes each."""
    return bench_encoder.barchart_events(bench_encoder.N_EVENTS)
