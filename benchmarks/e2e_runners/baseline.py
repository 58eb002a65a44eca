"""The plain pure-Python baseline: requests.Session + json.dumps, batches of 500, id and timestamp stamped like
connect-python does (uuid4, datetime.utcnow().isoformat())."""

from __future__ import annotations

import datetime
import json
import uuid


def run_requests(ctx) -> None:
    import requests

    session = requests.Session()
    url = ctx.url + "/events"
    headers = {"Content-Type": "application/json", "X-Project-Id": "p", "X-Api-Key": "k"}
    coll = ctx.collection
    for chunk in ctx.chunks(500):
        for ev in chunk:
            ev["id"] = str(uuid.uuid4())
            ev["timestamp"] = datetime.datetime.utcnow().isoformat()
        r = session.post(url, data=json.dumps({coll: chunk}), headers=headers, timeout=60)
        r.raise_for_status()
    session.close()


def _prepare() -> None:
    import requests  # noqa: F401


ROWS = [
    {"name": "baseline: requests.Session + json.dumps, 500 per request", "run": run_requests, "marker": b'"id":',
     "requires": ("requests",), "prepare": _prepare},
]
