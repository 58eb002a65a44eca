"""The public surface of eventpush.barchart: ``__all__``, SDK_VERSION, and errors that pickle."""

from __future__ import annotations

import pickle
import types

import eventpush
import eventpush.barchart as bc
from eventpush.barchart.errors import malformed_reasons


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(bc).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert set(bc.__all__) == public
    assert len(bc.__all__) == len(set(bc.__all__))
    for name in bc.__all__:
        assert getattr(bc, name).__doc__ or name == "SDK_VERSION"


def test_sdk_version() -> None:
    assert bc.SDK_VERSION == "6.0.0"


def test_errors_pickle_with_their_context() -> None:
    e = bc.BarchartError("boom", [{"value": {"code": "X", "message": "m"}, "children": []}], 503)
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is bc.BarchartError and (e2.message, e2.reasons, e2.status) == (e.message, e.reasons, 503)
    v = bc.BarchartValidationError([(4, {"timestamp": 'The "timestamp" field cannot be interpreted.'})], "detail")
    v2 = pickle.loads(pickle.dumps(v))
    assert (v2.index, v2.field, v2.errors, v2.reasons, v2.failures, v2.detail) == (
        4, "timestamp", v.errors, malformed_reasons(["timestamp"]), v.failures, "detail")  # fmt: skip
    assert isinstance(v2, ValueError) and isinstance(v2, eventpush.EventValidationError)
    assert isinstance(v2, bc.BarchartError) and isinstance(v2, eventpush.EventPushError)
    s = pickle.loads(pickle.dumps(bc.BarchartStateError("Unable to use gateway, the gateway has been disposed.")))
    assert isinstance(s, RuntimeError) and str(s) == "Unable to use gateway, the gateway has been disposed."
