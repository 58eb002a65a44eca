"""Shared test servers (see :mod:`support.server`): ``EventServer`` and ``Faults``.

Importable from any test folder as ``support`` (``tests/`` is on ``sys.path`` because ``tests/conftest.py`` lives
there) or as ``tests.support`` when the repository root is on ``sys.path``.
"""

from .net import free_port, stop_process, wait_port
from .server import RETRY_ITEM_MESSAGE, EventServer, Faults

__all__ = ["EventServer", "Faults", "RETRY_ITEM_MESSAGE", "free_port", "wait_port", "stop_process"]
