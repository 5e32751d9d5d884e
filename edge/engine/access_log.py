"""The access log: one line per answer, on the `edge.access` logger (stderr), in one of two
formats chosen by `edge serve --access-log [text|json]`.

text (the default)::

    127.0.0.1 "GET /5mo.jpg HTTP/1.1" 200 5000000 HIT 0.000412

client address, request line, status, body bytes, X-Cache, seconds.

json: one JSON object a line, for a log shipper (Loki, Elasticsearch, Vector...)::

    {"time": "2026-12-01T18:30:02.114Z", "node": "edge-1", "pid": 4242, "client": "127.0.0.1",
     "method": "GET", "target": "/5mo.jpg", "version": "1.1", "host": "127.0.0.1:8080",
     "status": 200, "bytes": 5000000, "cache": "MISS", "ttfb": 0.0123, "ttlb": 0.4121,
     "request_id": "9f0c...", "user_agent": "curl/8.5.0"}

`ttfb`: seconds from the end of the request head to the answer's head going out (for an
answer written whole, a hit, that is also `ttlb`); `ttlb`: to the last byte handed to the
socket. `request_id`: the client's `X-Request-Id` when it sent a usable one, else one the
edge made; the same value goes to the origin with the request (`request_id`), so the
origin's log and the edge's can be joined.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.http.request import Request

ACCESS = logging.getLogger("edge.access")
FORMAT = '%s "%s %s HTTP/%s" %d %d %s %.6f'
FORMATS = ("text", "json")
HEADER = "X-Request-Id"
MAX_ID = 200


def _usable(value: str) -> bool:
    return 0 < len(value) <= MAX_ID and value.isprintable() and value.isascii()


class _Ids:
    """New request ids: 64 random bits drawn once per process, then a counter (32 hex
    digits, unique across processes and nodes without a system call per request)."""

    def __init__(self) -> None:
        self.prefix = ""
        self.count = 0
        self.draw()

    def draw(self) -> None:
        self.prefix, self.count = secrets.token_hex(8), 0

    def next(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:016x}"


_IDS = _Ids()
# A forked worker draws its own (asking os.getpid() per id would be a system call each).
os.register_at_fork(after_in_child=_IDS.draw)


def request_id(req: Request) -> str:
    """The request's id: the client's X-Request-Id when usable (printable ASCII, at most
    200 characters), else a new one (`_Ids`); remembered on the request."""
    if req.request_id:
        return req.request_id
    given = req.headers.get(HEADER)
    if given is not None:
        given = given.strip()
        if _usable(given):
            req.request_id = given
            return given
    req.request_id = _IDS.next()
    return req.request_id


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def json_line(
    req: Request, node: str, status: int, size: int, x_cache: str, ttfb: float, ttlb: float
) -> str:
    headers = req.headers
    record = {
        "time": iso_time(time.time()),
        "node": node,
        "pid": os.getpid(),
        "client": req.peer or None,
        "method": req.method,
        "target": req.target,
        "version": req.version,
        "host": req.host or None,
        "status": status,
        "bytes": size,
        "cache": x_cache,
        "ttfb": round(ttfb, 6),
        "ttlb": round(ttlb, 6),
        "request_id": request_id(req),
        "user_agent": headers.get("User-Agent"),
    }
    return json.dumps(record, separators=(", ", ": "))


def write(
    logger: logging.Logger,
    fmt: str,
    req: Request,
    node: str,
    status: int,
    size: int,
    x_cache: str,
    now: float,
) -> None:
    """One line for one answer; `now`: `time.monotonic()` when its last byte went out."""
    ttlb = now - req.started if req.started else 0.0
    if fmt == "json":
        ttfb = req.first_byte - req.started if req.first_byte and req.started else ttlb
        logger.info("%s", json_line(req, node, status, size, x_cache, ttfb, ttlb))
        return
    logger.info(
        FORMAT, req.peer or "-", req.method, req.target, req.version, status, size, x_cache, ttlb
    )
