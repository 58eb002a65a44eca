"""Typed interface of the encoder core: ``eventpush._core`` (Cython) and its twin ``eventpush._core_py``.

Both modules define exactly these names with identical behaviour; ``eventpush.Encoder`` / ``eventpush.Batch`` are
the selected implementation (``eventpush.IMPLEMENTATION`` is ``"cython"`` or ``"python"``), ``EncoderC`` /
``EncoderPy`` (and ``BatchC`` / ``BatchPy``) name each one.

The contract in one paragraph: an ``Encoder`` is built for one ``Dialect``. Each event is validated with the
dialect's rules and stamped (id, timestamp) in one pass, serialized once (orjson, or the compiled core's own writer
for Connect and Barchart events, byte for byte the same), and its bytes are appended to an open batch buffer with
the framing around them. A batch is sealed when the next event would exceed
``max_batch_events`` or ``max_batch_bytes``, or on demand. A sealed ``Batch`` is immutable, exposes its body
through the buffer protocol (``memoryview(batch)`` is zero-copy), and remembers every event's offset, length,
collection and tag, so any subset can be re-framed for a retry from the stored bytes, never re-encoded.

Errors: bad input raises ``eventpush.errors.EventValidationError`` (rules, with the spec's exact messages in
``.message`` and ``.errors``), ``EventTooLargeError`` (per-event limit, ``.message`` = the dialect's
``too_large_message``), or ``EventTypeError`` (not a dict; unserializable value; unsupported key; NaN/Infinity;
nesting that orjson refuses: 255 nested containers, dicts, lists and tuples (and their subclasses) counted alike,
checked before orjson sees the event), each naming ``.index``, ``.collection`` and ``.field``
(dotted path such as ``"a.b[2].c"``; for rule errors the field as the rules name it, e.g. connect-python's leaf
property name). A failing event never leaves partial bytes in a batch. Checks run in this order: collection
name, the rules (all rule errors of one event in one exception), serialization, the per-event size limit. An aware
datetime whose UTC value falls outside years 1–9999 is an ``EventValidationError``: for the Connect-Ruby rules
(``"Date value out of range: …"``, ``.field`` its path), for Barchart the timestamp field's rule error.

Subclasses of ``dict`` and ``str`` are judged by their data (a dict's own storage, a str's characters), never by
overridden methods; ids and timestamps are stamped through the subclass's own ``__setitem__`` (an
``OrderedDict`` keeps its order), and the Connect-Ruby rules read a subclass's items through its ``items()``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .dialects import Dialect
from .errors import EventError

class Batch:
    """A sealed batch: one contiguous body plus the span of every event in it.

    Events are indexed in **body order**. For ``"collections"`` framing the body groups events by collection in
    first-seen order (push order within a collection), so body order can differ from push order; ``tag(i)``
    tells which input an event came from.

    Batches are made by an ``Encoder`` (the constructor is not public) and cannot be pickled (send ``body()``).
    In the twin a ``Batch`` is a ``bytes`` subclass holding the body (so ``memoryview(batch)`` is zero-copy and
    read-only on every Python); it counts exported views, and so refuses ``release()`` while one is alive, only
    on Python 3.12+ (PEP 688). The compiled core counts them on every version. After ``release()``, ``bytes(batch)``
    is empty in both; a twin batch's ``memoryview`` is empty from Python 3.12 (before, a ``bytes`` subclass cannot
    change what its buffer shows, and ``==`` / slicing always see the ``bytes`` it is).
    """

    @property
    def count(self) -> int:
        """Number of events."""
    @property
    def nbytes(self) -> int:
        """Length of the body in bytes."""
    @property
    def dialect(self) -> Dialect: ...
    def __len__(self) -> int:
        """Same as ``count``."""
    def __buffer__(self, flags: int) -> memoryview:
        """Zero-copy, read-only view of the body. While a view is alive the batch refuses ``release()``."""
    def body(self) -> bytes:
        """A copy of the body."""
    def event(self, i: int) -> bytes:
        """The encoded bytes of event ``i`` (no framing)."""
    def span(self, i: int) -> Tuple[int, int]:
        """``(offset, length)`` of event ``i`` inside the body."""
    def collection(self, i: int) -> Optional[str]:
        """The collection of event ``i`` (``None`` for dialects without collections)."""
    def tag(self, i: int) -> Any:
        """The tag given with event ``i`` (``add(..., tag=)``), or its input index for ``encode_batch``."""
    def tags(self) -> List[Any]:
        """All tags in body order."""
    def groups(self) -> List[Tuple[Optional[str], int, int]]:
        """``[(collection, start, stop), …]``: body-index ranges per collection, in body order (one group of
        collection ``None`` for dialects without collections)."""
    def subset(self, indices: Sequence[int]) -> "Batch":
        """A new sealed batch of the given events (body indices), framed anew from their stored bytes, in the
        order given (regrouped by collection, first-seen order); collections and tags kept. Raises
        ``IndexError`` for an index outside ``0 <= i < count`` (no negative indexing), ``TypeError`` for a
        non-int, ``ValueError`` for an empty subset. The limits are not applied."""
    def release(self) -> None:
        """Give the buffer back for reuse. Raises ``BufferError`` while a ``memoryview`` of the batch is alive;
        afterwards the batch is empty and unusable (``count == 0``)."""

class Encoder:
    """Validates, stamps, serializes and frames events for one dialect.

    ``clock``: a zero-argument callable returning **microseconds since the Unix epoch, UTC** (int); default: the
    system clock read in C. ``urandom``: a callable ``n -> bytes`` used to refill the buffered random pool from
    which UUID4 ids are drawn (RFC 4122 version and variant bits set); default ``os.urandom``. Both exist so tests
    can compare exact bytes between implementations.

    ``max_batch_events`` / ``max_batch_bytes`` default to the dialect's limits (``None`` = unlimited). A single event
    larger than ``max_batch_bytes`` (but within the per-event limit) gets a batch of its own.

    Not thread-safe: one encoder per thread, or a lock around it (the Batcher holds one).
    """

    def __init__(
        self,
        dialect: Dialect,
        *,
        max_batch_events: Optional[int] = ...,
        max_batch_bytes: Optional[int] = ...,
        clock: Optional[Callable[[], int]] = None,
        urandom: Optional[Callable[[int], bytes]] = None,
    ) -> None: ...
    @property
    def dialect(self) -> Dialect: ...
    @property
    def pending(self) -> int:
        """Events in the open (unsealed) batch."""
    @property
    def pending_bytes(self) -> int:
        """Body bytes of the open batch, as it would be if sealed now."""
    def encode(self, event: Any, collection: Optional[str] = None) -> bytes:
        """Validate, stamp and serialize one event; return its bytes (a single-event request body). Errors carry
        ``index=0`` and ``collection``. The collection may be omitted here even for ``"collections"`` framing
        (it only goes into the URL); when given it must be a ``str``. Does not touch the open batch."""
    def add(self, event: Any, collection: Optional[str] = None, tag: Any = None) -> Optional[Batch]:
        """Encode one event into the open batch.

        Returns the batch that was sealed to make room (the event then opens the next batch) or that became full
        with this event (``max_batch_events`` reached); otherwise ``None``. On bad input raises (``index=0``) and the
        open batch is unchanged. For ``"collections"`` framing ``collection`` must be a ``str`` (else
        ``EventTypeError``); other framings ignore it (``Batch.collection(i)`` is then ``None``).
        """
    def add_encoded(self, data: bytes, collection: Optional[str] = None, tag: Any = None) -> Optional[Batch]:
        """Like ``add`` for an event that ``encode()`` of an encoder of this dialect already turned into ``data``:
        appended as it is (no validation, no stamping; the per-event size limit still applies, as
        ``EventTooLargeError``). ``TypeError`` unless ``data`` is ``bytes``; for ``"collections"`` framing a
        collection that is no ``str`` raises ``EventTypeError`` and leaves the open batch unchanged."""
    def seal(self) -> Optional[Batch]:
        """Seal and return the open batch, or ``None`` when it is empty."""
    def encode_batch(
        self,
        events: Union[Sequence[Any], Mapping[str, Sequence[Any]]],
        collection: Optional[str] = None,
        *,
        stop_at_error: bool = False,
    ) -> Tuple[List[Batch], List[EventError]]:
        """Encode many events at once, independently of the open batch.

        ``events`` is a list (with ``collection`` for dialects that need one) or a mapping ``{collection: [events]}``
        (``collection`` must then be ``None``); a mapping value that is not a list raises ``EventTypeError``
        ("Events must be a list of dict objects", ``collection`` set). Every good event is encoded even when
        others fail. Returns the sealed batches (split by the limits; tags are the input positions: ``i`` for a list,
        ``(collection, i)`` for a mapping) and one error per bad event, in input order, each with ``.index`` (its
        position in its list) and ``.collection``. ``stop_at_error=True`` stops at the first bad event and returns
        ``([], [its error])``: nothing after it is stamped or encoded (connect-python builds one ``Event`` after
        another and stops at the first that raises).
        """

def uuid4_str(urandom: Optional[Callable[[int], bytes]] = None) -> str:
    """One UUID4 string from the shared buffered pool (or from ``urandom(16)`` when given); lowercase
    8-4-4-4-12 hex, byte 6 = ``(b & 0x0F) | 0x40``, byte 8 = ``(b & 0x3F) | 0x80``."""

def format_iso_naive(micros: int) -> str:
    """``(datetime(1970, 1, 1) + timedelta(microseconds=micros)).isoformat()``: naive UTC, microseconds only when
    non-zero. ``TypeError`` for a non-int (or bool), ``OverflowError`` outside years 1–9999."""

def format_iso_seconds_z(micros: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds, truncated); same errors as ``format_iso_naive``."""

def hub_timestamp_ok(text: str) -> bool:
    """``True`` when ``text`` is a timestamp the hub accepts: ``YYYY-MM-DDTHH:MM[:SS[.1-9 digits]]`` with an
    optional ``Z`` or ``±HH[:]MM`` offset (month 01–12, day 01–31, hour 00–23, minute 00–59, second 00–60)."""

def hub_id_hashes(key: bytes, cid: int, ids: List[str]) -> List[int]:
    """The hub's keyed id hashes (its duplicate index): for each id of the list ``ids``, SipHash-2-4 under the
    16-byte ``key`` of ``cid`` as 8 bytes (little-endian two's complement) followed by the id's UTF-8 bytes, as a
    signed 64-bit int. ``ValueError`` for a key that is not 16 bytes, ``TypeError`` for a non-list or a non-str
    id, ``OverflowError`` for a ``cid`` beyond 64 bits, ``UnicodeEncodeError`` for an id with a lone surrogate."""

def hub_index_keys(hashes: List[int], shift: int, bits: int) -> str:
    """The hub's index keys of ``hashes`` (signed 64-bit ints, as ``hub_id_hashes`` gives them): ``(h >> shift) &
    (2**bits - 1)`` for each, in ascending order, as the text of a JSON array. ``TypeError`` for a non-list or a
    non-int hash, ``OverflowError`` for a hash beyond 64 bits, ``ValueError`` unless ``shift`` and ``bits`` select
    1 to 63 bits of a 64-bit hash."""

class HubKeyFilter:
    """The keys the hub's writer put in its index (``hub_index_keys``), kept in memory so that a key it never
    saw skips the look in SQLite: a split-block Bloom filter (each key sets one bit in each of the eight 64-bit
    words of one 64-byte block), 16 bits per key, in a chain of tables, the first sized for ``first_capacity``
    keys (a power of two, at least 32) and each next one for twice as many as the last, added when the last is
    full. Never a false negative; about 0.1% false positives per table at capacity. The compiled class holds
    the GIL through each call and the pure twin takes a lock: one thread may add while another splits."""

    keys: int  # keys added (a key added twice counts twice)
    def __init__(self, first_capacity: int = ...) -> None: ...
    @property
    def tables(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def __contains__(self, key: object) -> bool:
        """Whether ``key`` may have been added (``False`` for anything but an int from 0 to 10**18 - 1)."""
    def add(self, keys_json: str) -> int:
        """Add the keys of ``keys_json``, a JSON array of ints from 0 to 10**18 - 1 as ``hub_index_keys`` and
        SQLite's ``json_group_array`` write it; returns its last key, or -1 for ``"[]"``. ``ValueError`` for
        anything else (the keys before the bad element may have been added: for a filter, more is safe)."""
    def split(self, keys_json: str) -> Tuple[str, str]:
        """``(new, maybe)``: the keys of ``keys_json`` (as for ``add``) that were surely never added and the
        others, each a JSON array in the order given; ``(keys_json, "[]")``, the same str, when none may have
        been. ``ValueError`` as for ``add``."""
    def split_add(self, keys_json: str) -> Tuple[str, str]:
        """``split`` and ``add`` in one pass, key by key in the order given: each is looked at, then added (so a
        key that comes twice is ``maybe`` the second time). ``ValueError`` as for ``add``."""

class HubKeyLog:
    """The keys of the hub's key log (``ids_log``) and, for each, the rid of the chunk that logged it: an exact
    map in memory (the compiled class: open addressing over a table that ``clear`` keeps; the pure twin: a
    dict). The compiled class holds the GIL through each call and the pure twin takes a lock."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def get(self, key: object) -> Optional[int]:
        """The rid ``key`` is mapped to; ``None`` when it is not held (or not an int from 0 to 10**18 - 1)."""
    def add(self, keys_json: str, ref: int) -> int:
        """Map each key of ``keys_json`` (as for ``HubKeyFilter.add``) that is not held yet to ``ref`` (an int
        from 0 to 2**63 - 1); returns how many were added. ``ValueError`` / ``TypeError`` for bad arguments."""
    def absent(self, keys_json: str) -> str:
        """The keys of ``keys_json`` that are not held, a JSON array in the order given; ``keys_json`` itself,
        the same str, when none is held."""
    def clear(self) -> None:
        """Forget every key (the compiled class keeps its table for the next ones)."""

def hub_connect_bulk(events: Iterable[Any], max_event_bytes: float) -> Optional[Tuple[List[str], List[bytes]]]:
    """The hub's bulk path for one collection of a Connect batch. ``(ids, bodies)`` when every event is a dict
    with a string ``id`` of 1–255 characters without NUL (unique in ``events``) and a ``timestamp`` for which
    ``hub_timestamp_ok`` holds, whose keys are ASCII strings the hub cannot refuse at any depth (none with a ``.``
    or a leading ``$``, none over 255 characters, no root ``tp_…`` or ``_id`` in any case), whose values are JSON
    data (64-bit ints, finite floats below 2**63 in size: larger ones are how orjson.loads gives an integer too
    large for it) nested less than 255 deep, and whose body is at most ``max_event_bytes``;
    ``bodies[i] == orjson.dumps(events[i])``. ``None`` otherwise: the hub's exact path then decides, event by
    event, and says why. ``events`` may be any iterable (read until the first event that fails);
    ``max_event_bytes`` any number."""

def hub_connect_scan(raw: bytes, max_event_bytes: int) -> Optional[List[Tuple[str, List[str], List[bytes]]]]:
    """The hub's bulk path for a whole Connect batch body, read from its bytes. ``[(collection, ids, bodies),
    ...]`` in request order when ``hub_connect_bulk`` takes every collection of the parsed body and each event's
    bytes in ``raw`` are its ``bodies`` entry (compact, as orjson writes it); whitespace is allowed only around
    the body's own braces, brackets, colons and commas. ``None`` otherwise, and also for a body with a backslash
    anywhere, a collection twice, containers nested 32 deep, an object of more than 64 members or an integer of
    more than 18 digits: the hub then parses the body. The compiled core reads the bytes without making objects
    of them (the events' ids and bytes excepted); the twin parses and compares. ``max_event_bytes``: an int."""

class BatcherBase:
    """The hot path of ``eventpush.batcher.Batcher`` (its base class): ``push``. The subclass owns everything else
    and keeps ``_lock``, ``_encoder``, ``_ready``, ``_work``, ``_buffered`` and ``_limit`` current."""

    _lock: Any
    _encoder: Any
    _ready: Any
    _work: Any
    _buffered: int
    _limit: float
    """Any number (``math.inf``: no limit); ``push`` calls ``_make_room()`` while ``_buffered >= _limit``."""
    def _make_room(self) -> None: ...
    def push(self, event: Any, collection: Optional[str] = None) -> None:
        """Validate, stamp and encode ``event`` now; delivery happens in the background (see ``Batcher``)."""
    def push_encoded(self, data: bytes, collection: Optional[str] = None) -> None:
        """``push`` for bytes that ``Encoder.encode`` of this dialect returned (``Encoder.add_encoded``)."""
