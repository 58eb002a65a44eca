"""eventpush.bench — the load generator behind ``eventpush bench``.

::

    run_compare(events=…, batch=…, concurrency=…)   target-less: embedded hub, eventpush vs requests + json
    run_load(LoadConfig(url=…, dialect=…, …))        one closed- or open-model run against a target
    Histogram                                        log-bucketed latency histogram (bounded memory)
    EmbeddedHub                                      ``eventpush serve --sink`` in a child process
    render_report(doc) / write_report(doc, path)     the self-contained HTML report
    load_schema() / SCHEMA_PATH                      the JSON Schema of ``--json`` output (schema.json)
    is_loopback(url)                                 the safety check behind ``--yes``

The result documents (``mode: "load"`` and ``mode: "compare"``) are what ``--json`` prints; their schema ships in
this package and is described in ``docs/bench-schema.md``.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Dict

__all__ = [
    "run_compare",
    "run_load",
    "LoadConfig",
    "Histogram",
    "EmbeddedHub",
    "HubStartError",
    "render_report",
    "write_report",
    "load_schema",
    "SCHEMA_PATH",
    "is_loopback",
]

# name -> submodule; loaded on first use (PEP 562) so that building the CLI parser does not import the bench
_LAZY = {
    "run_compare": "compare",
    "run_load": "runner",
    "LoadConfig": "runner",
    "is_loopback": "runner",
    "Histogram": "histogram",
    "EmbeddedHub": "embedded",
    "HubStartError": "embedded",
    "render_report": "report",
    "write_report": "report",
}

#: the JSON Schema of the ``--json`` output
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'eventpush.bench' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


def load_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every ``--json`` document validates against."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema: Dict[str, Any] = json.load(f)
    return schema
