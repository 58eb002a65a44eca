"""Which core is active: a normal build must load the compiled core; EVENTPUSH_PURE selects the twin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import eventpush
from eventpush._envflags import env_flag

_PROBE = (
    "import sys, eventpush; impl = eventpush.IMPLEMENTATION; "
    "print(impl, 'eventpush._core' in sys.modules, eventpush.Encoder.__module__)"
)


def _probe(env):
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(env_flag("EVENTPUSH_PURE"), reason="EVENTPUSH_PURE is set: this leg tests the twin only")
def test_plain_import_loads_compiled_core(clean_env):
    clean_env.pop("EVENTPUSH_PURE", None)
    impl, loaded, module = _probe(clean_env)
    assert impl == "cython" and loaded == "True" and module == "eventpush._core"


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", " Yes "])
def test_pure_flag_selects_twin(clean_env, value):
    clean_env["EVENTPUSH_PURE"] = value
    impl, _loaded, module = _probe(clean_env)
    assert impl == "python" and module == "eventpush._core_py"


@pytest.mark.skipif(env_flag("EVENTPUSH_PURE"), reason="EVENTPUSH_PURE is set: this leg tests the twin only")
@pytest.mark.parametrize("value", ["0", "", "no", "false", "off"])
def test_other_values_keep_compiled_core(clean_env, value):
    clean_env["EVENTPUSH_PURE"] = value
    impl, _loaded, module = _probe(clean_env)
    assert impl == "cython" and module == "eventpush._core"


@pytest.mark.parametrize(
    "value, expected",
    [("1", True), ("true", True), ("yes", True), ("YES", True), ("on", True), ("0", False), ("", False),
     ("no", False), ("false", False), ("2", False)],
)
def test_env_flag(value, expected):
    assert env_flag("EVENTPUSH_PURE", {"EVENTPUSH_PURE": value}) is expected
    assert env_flag("EVENTPUSH_PURE", {}) is False


def test_names(core):
    assert set(core.__all__) == {"Encoder", "Batch", "BatcherBase", "uuid4_str", "format_iso_naive",
                                 "format_iso_seconds_z", "hub_connect_bulk", "hub_connect_scan", "hub_id_hashes",
                                 "hub_index_keys", "hub_timestamp_ok"}
    assert eventpush.EncoderPy.__module__ == "eventpush._core_py"
    assert eventpush.IMPLEMENTATION in ("cython", "python")
    if not env_flag("EVENTPUSH_PURE"):
        assert eventpush.EncoderC.__module__ == "eventpush._core"
        assert os.path.basename(eventpush._impl.core_c.__file__).startswith("_core.")
