"""The one place that chooses between the compiled core and its pure-Python twin.

``EVENTPUSH_PURE=1`` (or true / yes / on) forces the twin; otherwise the compiled ``eventpush._core`` is used when
it was built, and the twin when it was not (a platform without a compiler). ``IMPLEMENTATION`` says which one is
active; the test suite checks that a normal build really loaded the compiled core.
"""

from __future__ import annotations

from types import ModuleType
from typing import Optional

from . import _core_py
from ._envflags import env_flag

core_py: ModuleType = _core_py
core_c: Optional[ModuleType]

try:
    from . import _core as _compiled  # type: ignore[attr-defined]
except ImportError:  # built without a compiler, or with EVENTPUSH_PURE=1
    core_c = None
else:
    core_c = _compiled

if env_flag("EVENTPUSH_PURE") or core_c is None:
    core: ModuleType = core_py
    IMPLEMENTATION = "python"
else:
    core = core_c
    IMPLEMENTATION = "cython"
