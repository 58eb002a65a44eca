"""The public namespace of eventpush.realtime: ``__all__`` lists exactly the public names, each documented."""

from __future__ import annotations

import pickle
import types

import eventpush.realtime as rt
from eventpush.realtime import (
    BrokerRefusedError,
    BrokerUnavailableError,
    InvalidChannelError,
    MessageTooLargeError,
    PublishUnconfirmedError,
)


def test_all_is_exactly_the_public_names():
    public = {n for n, v in vars(rt).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    public -= {"annotations"}
    assert set(rt.__all__) == public
    for name in rt.__all__:
        assert getattr(rt, name).__doc__, f"{name} has no docstring"


def test_errors_pickle_with_context():
    for exc in (
        InvalidChannelError("channel must not be empty", index=3),
        MessageTooLargeError("too big", index=0),
        BrokerUnavailableError("down", method="PUBLISH", url="amqp://guest:***@127.0.0.1:5672/"),
        BrokerRefusedError("refused"),
        PublishUnconfirmedError("unknown", unconfirmed=[0, 1], withdrawn=[2], channel="/c"),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    e = pickle.loads(pickle.dumps(InvalidChannelError("bad", index=2)))
    assert e.field == "channel" and e.index == 2 and isinstance(e, ValueError)
    u = pickle.loads(pickle.dumps(PublishUnconfirmedError("unknown", unconfirmed=[0], withdrawn=[1, 2], channel="/c")))
    assert (u.unconfirmed, u.withdrawn, u.channel) == ([0], [1, 2], "/c")
