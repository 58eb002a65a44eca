"""Parse boolean environment switches one way everywhere (runtime and ``setup.py``).

``bool(os.environ.get(...))`` treats ``"0"`` as on; this helper does not.
"""

from __future__ import annotations

import os

_TRUE = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str, environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Return True when ``name`` is set to 1 / true / yes / on (any case, surrounding spaces ignored)."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().lower() in _TRUE
