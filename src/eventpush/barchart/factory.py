"""``EventFactory``: builds events for one customer, product and product version (spec/barchart.md §5)."""

from __future__ import annotations

import builtins
import time
from typing import Any, Dict, List, Mapping, Sequence, Union

from .enums import CustomerType, EventType, ProductType

__all__ = ["EventFactory"]


class EventFactory:
    """Builds ``{customer, product, version, type, timestamp, context}`` events, filling context items from a
    per-factory cache of context values (``set_context``)."""

    __slots__ = ("_customer", "_product", "_version", "_cache")

    def __init__(self, customer: CustomerType, product: ProductType, version: str) -> None:
        if not isinstance(customer, CustomerType):
            raise TypeError(f"customer must be a CustomerType, not {type(customer).__name__}")
        if not isinstance(product, ProductType):
            raise TypeError(f"product must be a ProductType, not {type(product).__name__}")
        if not isinstance(version, str):
            raise TypeError(f"version must be a str, not {type(version).__name__}")
        self._customer = customer
        self._product = product
        self._version = version
        self._cache: Dict[str, str] = {}

    @classmethod
    def for_(cls, customer: CustomerType, product: ProductType, version: str) -> "EventFactory":
        """Same as the constructor (the JS ``EventFactory.for``)."""
        return cls(customer, product, version)

    @property
    def customer(self) -> CustomerType:
        """The customer of every event built."""
        return self._customer

    @property
    def product(self) -> ProductType:
        """The product of every event built."""
        return self._product

    @property
    def version(self) -> str:
        """The product version of every event built."""
        return self._version

    def set_context(self, key: str, value: str) -> None:
        """Cache ``value`` for the context key ``key`` (both str) for later ``build`` calls."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        if not isinstance(value, str):
            raise TypeError(f"value must be a str, not {type(value).__name__}")
        self._cache[key] = value

    def clear_context(self, key: str) -> None:
        """Forget the cached value of ``key`` (no error when absent)."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        self._cache.pop(key, None)

    def reset_context(self) -> None:
        """Forget every cached context value."""
        self._cache = {}

    def build(self, type: EventType, context: Union[Sequence[Any], Mapping[str, Any]]) -> Dict[str, Any]:  # noqa: A002
        """A new event of ``type`` stamped with the current time (int epoch milliseconds).

        A list context is kept as given, except that a ``None`` item at position *i* takes the cached value of
        ``type.context_keys[i]`` (or stays ``None``). A dict context becomes a list in ``type.context_keys`` order:
        a cached value wins over the passed one, otherwise ``context.get(key) or None`` (falsy values become
        ``None``); keys that the type does not define are ignored.
        """
        if not isinstance(type, EventType):
            raise TypeError(f"type must be an EventType, not {builtins.type(type).__name__}")
        keys = type.context_keys
        cache = self._cache
        items: List[Any]
        if isinstance(context, Mapping):
            items = [cache[k] if k in cache else (context.get(k) or None) for k in keys]
        elif isinstance(context, (list, tuple)):
            n = len(keys)
            items = [
                v if v is not None else (cache.get(keys[i]) if i < n else None) for i, v in enumerate(context)
            ]
        else:
            raise TypeError(f"context must be a list or a dict, not {builtins.type(context).__name__}")
        return {
            "customer": self._customer,
            "product": self._product,
            "version": self._version,
            "type": type,
            "timestamp": time.time_ns() // 1_000_000,
            "context": items,
        }

    def __repr__(self) -> str:
        return f"EventFactory({self._customer!r}, {self._product!r}, {self._version!r})"

    def __str__(self) -> str:
        return "[EventFactory]"

