"""eventpush.hub — the server side of the Connect and Barchart APIs (``eventpush serve``).

One raw ASGI application (:class:`HubApp`, built by :func:`create_app`) served by uvicorn; SQLite storage (WAL,
each request all or nothing on a dedicated writer thread, requests that queue up committed together, a 200 only
after the commit; checkpoints on a background thread); ``--sink`` validates and counts without storing.

Routes
    ``POST /connect/events/{collection}``   one event (spec/connect.md §1.2)
    ``POST /connect/events`` (and ``/connect/events/``)   a batch ``{collection: [events]}`` (§1.3)
    ``GET  /connect/events/{collection}?limit=N``   ``{"results": [...]}``, newest first, N in 1..10000 (default 100)
    ``POST /barchart/events``               ``{"events": [...]}`` (spec/barchart.md §1.1)
    ``GET  /barchart/service/version``      ``{"service": {...}}``
    ``GET  /health``, ``GET /stats``        liveness; the hub's counters, summed over every worker process
                                            (see :class:`~eventpush.hub.stats.Stats`, :mod:`eventpush.hub.workers`)
    ``/push…`` (HTTP and WebSocket), ``GET /push.js``   the realtime app of ``eventpush.realtime`` when installed
    ``--root connect|barchart`` also serves that API at ``/events…`` (and ``/service/version``).

Connect: statuses and bodies
    200  single event stored: EMPTY body. Batch: ``{coll: [{"success", "duplicate", "message"?}, …]}`` in request
         order; stored → ``{"success":true,"duplicate":false}``; a duplicate id (already stored, or earlier in the
         same batch and collection) → ``success false, duplicate true`` with a message; an invalid event →
         ``success false, duplicate false`` and the same message its single push would get (422 errors are joined
         as ``"field: description; …"``). One bad event never costs the others.
    400  ``{"errorMessage": "Property names starting with tp_ are reserved and cannot be set."}`` for a root
         property starting ``tp_`` (case-insensitive, like the Python, Ruby and .NET SDKs check it);
         ``"Property name _id is reserved and cannot be set."`` for ``_id`` (any case); also malformed JSON,
         invalid UTF-8, an empty body, a body that is not an object (single) or not ``{name: array}`` (batch),
         nesting deeper than 254 levels (what orjson writes back), a batch collection name that is empty or
         over 255 chars, and a batch that names one collection more than once, however spelled (``"c"``,
         ``"\\u0063"``; ``"a/b"``, ``"a\\/b"``): ``"Collection 'c' appears twice in the batch; send its events in
         one array."`` (a JSON parser would keep only the last array, and the first one's events would get no
         result).
    401  ``{"errorMessage":"Unauthorised. Please check your Project Id and API Key"}`` when projects are configured
         and ``X-Project-Id`` / ``X-Api-Key`` do not match one (checked before the body is read). Without any
         configured project every key is accepted (a warning at start) and a missing project id stores under "".
    404  unknown path; 405 wrong method (both ``{"errorMessage": …}``; a 405 has an ``Allow`` header, and HEAD
         is allowed wherever GET is).
    408  the body did not arrive within ``--body-timeout`` seconds (slow clients).
    409  single event whose ``id`` is already stored in (project, collection): ``{"errorMessage": "Duplicate …"}``.
    413  ``{"errorMessage":"Maximum event size of 64kb exceeded."}`` when the event, encoded as compact JSON (what
         is stored, server stamps included), exceeds 65,536 bytes; a batch over 5,000 events (counted over all
         collections) gets 413 ``"Maximum batch size of 5000 events exceeded (N events); split …"``; a body over
         ``--max-body`` (default 32 MiB) gets 413 before it is read further (Content-Length checked first, then
         counted while reading). Early answers (401, 413, 415) keep the connection open: uvicorn discards the
         rest of the body without buffering it, so the client reads the answer instead of a TCP reset (the
         rest must arrive within ``--body-timeout``, else the connection is closed).
    415  a Content-Type other than ``application/json`` / ``application/*+json`` or a charset other than UTF-8
         (a missing Content-Type is accepted as JSON), or a Content-Encoding other than ``identity`` (neither API
         documents compressed bodies).
    422  ``{"errors":[{"field", "description"}]}``: property names containing ``.`` or longer than 255 characters at
         any depth (dicts inside lists too; ``field`` is the property name, as connect-python keys it), a
         ``timestamp`` that is not an ISO-8601 date-time string (naive values and offsets are accepted: the
         Python SDK sends naive ``isoformat()``), an ``id`` that is not a non-empty string of ≤ 255 chars, and an
         empty or over-long collection name in the path. Precedence on one event: 400, then 422, then 413.
    500  ``{"errorMessage":"An error occurred while processing your request"}`` (e.g. the database failed; the
         transaction was rolled back, nothing of the request is stored). Also for a request the server cancels
         (its graceful shutdown ran out of ``--graceful-timeout``): its write is withdrawn before it commits (out
         of the queue, or out of the open group transaction, whose other requests still commit), so nothing of
         it is stored. A 500, or no answer at all, means nothing of the request was stored.
    An event without ``id`` (or with ``"id": null``) gets a UUID4 string appended; without ``timestamp`` (or null)
    the server time ``YYYY-MM-DDTHH:MM:SS.mmmZ``. Events are stored as received otherwise (compact JSON, key order
    kept, timestamps not rewritten). ``$``-prefixed names are accepted (the server rules of §2.1 do not forbid them).

Barchart: statuses and bodies
    200  a JSON array of EventFull: customer, product, type, version (when given), timestamp, context, ``batch``
         (one UUID4 per request), ``sequence`` (0-based position in the request). Only these fields are stored and
         returned (extra keys are dropped, as the SDK's EventSchema.CLIENT does). ``{"events": []}`` → ``[]``.
    400  FailureReason array; one root ``REQUEST_INPUT_MALFORMED`` per invalid event ("…events[3] is invalid.")
         with one ``REQUEST_PARAMETER_MALFORMED`` child per bad field ('The "timestamp" field cannot be
         interpreted.'); at most 100 roots. One invalid event rejects the whole request (the API has no per-event
         results). Malformed JSON / a body without an ``events`` array also answer 400 in this shape, as does a
         body whose top-level object repeats a name, however spelled (``"events"`` twice would keep only the last
         array): "The request body holds the field 'events' more than once; …". Checks:
         customer, product and type are known codes (exact, case-sensitive), timestamp an integer (an integral
         float is accepted), context an array, version a string when present. ``--strict-context`` adds: the type
         belongs to the product, and the per-customer transformers and validators (string / uuid /
         stringOptional) on context positions.
    413 / 415 / 408  as for Connect, in the FailureReason shape. 500: ``REQUEST_GENERAL_FAILURE``.

Operations
    Graceful shutdown: uvicorn stops accepting, in-flight requests finish, then the writer thread drains and the
    database closes. ``/stats`` reports the whole hub: with ``--workers N`` the worker that answers adds up every
    worker's counts (``"workers"``, ``"pids"``; ``"pid"`` is the answering worker), counted before each answer
    went out. Workers shut down when their supervisor dies (even by SIGKILL). The start is refused (exit 2) for
    a database that cannot be written (a read-only file too) and for a ``--keys-file`` without any key (it would
    leave authentication off); a keys file may start with a UTF-8 byte order mark.
    Access log: one JSON line per request on the logger ``eventpush.hub.access``. Realtime: after each commit
    every stored event is published to ``/collections/connect/{collection}`` or ``/collections/barchart/events``
    (not in ``--sink`` mode, where nothing is committed).
"""

from __future__ import annotations

from .app import HubApp, create_app
from .config import HubConfig, load_keys_file, parse_project

__all__ = ["HubApp", "HubConfig", "create_app", "load_keys_file", "parse_project"]
