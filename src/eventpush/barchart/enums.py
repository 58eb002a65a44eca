"""The Barchart enumerations: ``CustomerType``, ``ProductType``, ``EventType`` (all 220) and ``EventJobStatus``.

The members are built at import from ``eventpush._barchart_data`` (generated from ``barchart_enums.json`` by
``scripts/gen_barchart_data.py``), so codes stay byte for byte what ``@barchart/events-api-common`` 6.0.0 defines.
Each member's value is its **code**; member names are the upper-case JS names (``WATCHLIST_SYMBOL_ADDED`` has the
code ``WATCHLIST-SYMBOL-ADDED``), and ``ENTITLEMWENTS_AUTHORIZATION_FAILED`` is a real ``Enum`` alias of
``ENTITLEMENTS_AUTHORIZATION_FAILED``.

The classes mix in ``str`` (like ``enum.StrEnum``), so a member *is* its code: it compares equal to the code
string, serializes as the code with ``json``/``orjson``, and can be put into an event as is.
"""

from __future__ import annotations

import re
from enum import Enum
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .. import _barchart_data as _data

__all__ = [
    "CustomerType",
    "ProductType",
    "EventType",
    "EventJobStatus",
    "ContextValidator",
    "ContextTransformer",
    "CONTEXT_VALIDATORS",
    "CONTEXT_TRANSFORMERS",
]


def _new_coded(cls: type, code: str, description: str) -> Any:
    # Enum replaces a class's __new__ by its value lookup once members exist, so subclasses call this helper.
    obj: Any = str.__new__(cls, code)
    obj._value_ = code
    obj._description = description
    return obj


class _CodedEnum(str, Enum):
    """Base of the Barchart enumerations: value = code, plus ``description`` and an exact ``parse``."""

    def __new__(cls, code: str, description: str, *_rest: Any) -> "_CodedEnum":
        return _new_coded(cls, code, description)  # type: ignore[no-any-return]

    @property
    def code(self) -> str:
        """The code sent on the wire (byte for byte as in the JS source)."""
        return self._value_  # type: ignore[no-any-return]

    @property
    def description(self) -> str:
        """The human-readable description."""
        return self._description  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def parse(cls, code: Any) -> Optional[Any]:
        """The member whose code is exactly ``code`` (case-sensitive, like ``Enum.fromCode``), or ``None``."""
        if isinstance(code, cls):
            return code
        if type(code) is not str:
            return None
        return cls._value2member_map_.get(code)

    # str() and format() give the code on every Python version (3.11 changed them for mixed-in enums).
    def __str__(self) -> str:
        return self._value_  # type: ignore[no-any-return]

    def __format__(self, spec: str) -> str:
        return format(str(self._value_), spec)

    def __reduce_ex__(self, proto: Any) -> Any:
        # Pickle by member name (the str mixin would otherwise pickle the plain string).
        return getattr, (self.__class__, self._name_)


def _build(base: type, name: str, rows: Any, values: Callable[[dict], tuple], doc: str) -> Any:
    names: List[Tuple[str, tuple]] = []
    for row in rows:
        value = values(row)
        names.append((row["member"], value))
        for alias in row.get("aliases", ()):
            # Same value -> Enum makes the name an alias of the member defined first.
            names.append((alias, value))
    cls = base(name, names, module=__name__, qualname=name)
    cls.__doc__ = doc
    return cls


class _Customer(_CodedEnum):
    pass


CustomerType = _build(
    _Customer,
    "CustomerType",
    _data.CUSTOMERS,
    lambda r: (r["code"], r["description"]),
    "The customer of an event (``BARCHART``, ``TGAM``).",
)


class _Product(_CodedEnum):
    pass


ProductType = _build(
    _Product,
    "ProductType",
    _data.PRODUCTS,
    lambda r: (r["code"], r["description"]),
    "The product that emitted an event (9 products; code = description).",
)


class ContextValidator:
    """A named predicate for one context position (``string``, ``uuid``, ``stringOptional``); call it with the
    value. The SDK never applies validators; eventpush does only with ``validate_context=True``."""

    __slots__ = ("name", "description", "_fn")

    def __init__(self, name: str, description: str, fn: Callable[[Any], bool]) -> None:
        self.name = name
        self.description = description
        self._fn = fn

    def __call__(self, value: Any) -> bool:
        return bool(self._fn(value))

    def __repr__(self) -> str:
        return f"<ContextValidator {self.name}>"

    def __reduce__(self) -> Any:
        return (_validator, (self.name,))


class ContextTransformer:
    """A named transformation for one context position (``stringOptional``: falsy -> ``''``)."""

    __slots__ = ("name", "description", "_fn")

    def __init__(self, name: str, description: str, fn: Callable[[Any], Any]) -> None:
        self.name = name
        self.description = description
        self._fn = fn

    def __call__(self, value: Any) -> Any:
        return self._fn(value)

    def __repr__(self) -> str:
        return f"<ContextTransformer {self.name}>"

    def __reduce__(self) -> Any:
        return (_transformer, (self.name,))


# The npm ``uuid`` package's validate() regex (versions 1-8, nil and max), case-insensitive.
_UUID_RE = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$",
    re.IGNORECASE,
)


def _is_uuid(value: Any) -> bool:
    return type(value) is str and _UUID_RE.match(value) is not None


_VALIDATOR_FUNCS: Dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str) and len(v) > 0,
    "uuid": _is_uuid,
    "stringOptional": lambda v: isinstance(v, str),
}
_TRANSFORMER_FUNCS: Dict[str, Callable[[Any], Any]] = {
    "stringOptional": lambda v: v if v else "",
}

#: name -> ContextValidator, for every validator the data defines.
CONTEXT_VALIDATORS: Mapping[str, ContextValidator] = MappingProxyType(
    {
        name: ContextValidator(name, spec["description"], _VALIDATOR_FUNCS[name])
        for name, spec in _data.VALIDATOR_DEFINITIONS.items()
    }
)
#: name -> ContextTransformer, for every transformer the data defines.
CONTEXT_TRANSFORMERS: Mapping[str, ContextTransformer] = MappingProxyType(
    {
        name: ContextTransformer(name, spec["description"], _TRANSFORMER_FUNCS[name])
        for name, spec in _data.TRANSFORMER_DEFINITIONS.items()
    }
)


def _validator(name: str) -> ContextValidator:
    return CONTEXT_VALIDATORS[name]


def _transformer(name: str) -> ContextTransformer:
    return CONTEXT_TRANSFORMERS[name]


def _per_customer(table: Mapping[str, Any], lookup: Mapping[str, Any]) -> Mapping[Any, Tuple[Any, ...]]:
    return MappingProxyType(
        {
            CustomerType(customer): tuple(None if n is None else lookup[n] for n in entries)
            for customer, entries in table.items()
        }
    )


class _EventTypeBase(_CodedEnum):
    def __new__(cls, code: str, description: str, product: Optional[str], keys: tuple, validators: Any,
                transformers: Any) -> "_EventTypeBase":
        obj = _new_coded(cls, code, description)
        obj._product = None if product is None else ProductType(product)  # type: ignore[attr-defined]
        obj._context_keys = tuple(keys)  # type: ignore[attr-defined]
        obj._validators = _per_customer(dict(validators), CONTEXT_VALIDATORS)  # type: ignore[attr-defined]
        obj._transformers = _per_customer(dict(transformers), CONTEXT_TRANSFORMERS)  # type: ignore[attr-defined]
        return obj

    @property
    def product(self) -> Any:
        """The ``ProductType`` this event type belongs to."""
        return self._product  # type: ignore[attr-defined]

    @property
    def context_keys(self) -> Tuple[str, ...]:
        """Names of the ``context`` items, by position."""
        return self._context_keys  # type: ignore[attr-defined, no-any-return]

    @property
    def validators(self) -> Mapping[Any, Tuple[Optional[ContextValidator], ...]]:
        """``{CustomerType: (validator or None per context position)}``; empty when the type has none."""
        return self._validators  # type: ignore[attr-defined, no-any-return]

    @property
    def transformers(self) -> Mapping[Any, Tuple[Optional[ContextTransformer], ...]]:
        """``{CustomerType: (transformer or None per context position)}``; empty when the type has none."""
        return self._transformers  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def get_context_keys_for(cls, product: Any) -> List[str]:
        """The unique union of the context keys of every event type of ``product`` (first-seen order)."""
        product = ProductType.parse(product)
        seen: Dict[str, None] = {}
        for member in cls:
            if member.product is product:
                for key in member.context_keys:
                    seen.setdefault(key, None)
        return list(seen)


EventType = _build(
    _EventTypeBase,
    "EventType",
    _data.EVENT_TYPES,
    lambda r: (
        r["code"],
        r["description"],
        r["product"],
        tuple(r["context_keys"]),
        tuple((k, tuple(v)) for k, v in r["validators"].items()),
        tuple((k, tuple(v)) for k, v in r["transformers"].items()),
    ),
    "The type of an event: all 220 types of ``@barchart/events-api-common`` 6.0.0, with product, context keys, "
    "validators and transformers.",
)


class _JobStatusBase(_CodedEnum):
    def __new__(cls, code: str, description: str, initial: bool, terminal: bool) -> "_JobStatusBase":
        obj = _new_coded(cls, code, description)
        obj._initial = initial  # type: ignore[attr-defined]
        obj._terminal = terminal  # type: ignore[attr-defined]
        return obj

    @property
    def initial(self) -> bool:
        """True for the status a report job starts in (``RUNNING``)."""
        return self._initial  # type: ignore[attr-defined, no-any-return]

    @property
    def terminal(self) -> bool:
        """True for statuses a report job ends in (``COMPLETE``, ``TIMEOUT``, ``FAILED``)."""
        return self._terminal  # type: ignore[attr-defined, no-any-return]


EventJobStatus = _build(
    _JobStatusBase,
    "EventJobStatus",
    _data.JOB_STATUSES,
    lambda r: (r["code"], r["description"], r["initial"], r["terminal"]),
    "The status of a report job: ``RUNNING`` (initial); ``COMPLETE``, ``TIMEOUT``, ``FAILED`` (terminal).",
)
