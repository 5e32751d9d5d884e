"""What the client receives, as plain data: status, header fields, body. No I/O here.

From a stored entry (200, 304 to a matching conditional, 206/416 to a Range, HEAD without
a body), from an origin's answer being streamed, and the edge's own short error pages;
with the headers that show what the edge did: X-Cache, Cache-Status (RFC 9211), Age, Via,
X-Served-By. The engine hands the `Answer` (`edge.http.answer`) to the request's door, which
writes it in its protocol's bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from multidict import MultiMapping

from edge.base.ledger import RETRY_AFTER
from edge.cache import policy
from edge.cache.entry import Entry
from edge.cache.images import IMAGE_FIELD
from edge.http.answer import Answer, Fields
from edge.http.ranges import if_range_allows, multipart_body, plan_ranges

# Fields meant for this cache only (RFC 9213 leaves CDN-Cache-Control to pass on; the
# Surrogate-Control spec asks surrogates to remove theirs). Tags unless configured to keep.
EDGE_ONLY = frozenset({"surrogate-control"})
TAG_HEADERS = frozenset({"surrogate-key", "cache-tag"})
# Written by the edge for the body it sends.
RECOMPUTED = frozenset(
    {"content-length", "age", "x-cache", "cache-status", "x-served-by", "via", "server-timing"}
)
# RFC 9110 section 15.4.5: a 304 carries the fields the 200 would have, minus content; plus
# what the edge says about itself.
IN_304 = frozenset(policy.HEADERS_IN_304) | {
    "age",
    "x-cache",
    "cache-status",
    "x-served-by",
    "via",
    "server-timing",
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node is, as shown in headers."""

    node: str
    keep_tags: bool = False

    def via(self, version: str = "1.1") -> str:
        """This hop in Via (RFC 9110 section 7.6.3): the received-protocol, then this node's
        name. On a request sent to the origin it is the version the client spoke ("1.1",
        "2"); on an answer, the version the answer was received in from the origin: "1.1"
        (aiohttp's client), whatever protocol the client speaks."""
        return f"{version} {self.node} (woodytoys-edge)"


def client_fields(stored: Iterable[tuple[str, str]], ident: Identity) -> Fields:
    """The stored (or origin's) fields a client may see, with this hop added to Via."""
    drop = EDGE_ONLY | RECOMPUTED | (frozenset() if ident.keep_tags else TAG_HEADERS)
    out: Fields = []
    vias: list[str] = []
    for name, value in stored:
        lname = name.lower()
        if lname == "via":
            vias.append(value)
        elif lname not in drop:
            out.append((name, value))
    out.append(("Via", ", ".join([*vias, ident.via()])))
    out.append(("X-Served-By", ident.node))
    return out


def add_accept_ranges(fields: Fields) -> None:
    """The edge answers Range on every stored 200 (RFC 9110 section 14.3): say so, once
    (the origin may have said it already)."""
    if not any(k.lower() == "accept-ranges" for k, _ in fields):
        fields.append(("Accept-Ranges", "bytes"))


def cache_fields(
    ident: Identity,
    x_cache: str,
    status: str,
    age: float | None = None,
    origin_ms: float | None = None,
) -> Fields:
    """X-Cache, Cache-Status (RFC 9211), Age (RFC 9111 section 5.1), Server-Timing."""
    out = [
        ("X-Cache", x_cache),
        ("Cache-Status", f"{ident.node}; {status}" if status else ident.node),
    ]
    if age is not None:
        out.append(("Age", str(int(age))))
    if origin_ms is not None:
        out.append(("Server-Timing", f"origin;dur={origin_ms:.1f}"))
    return out


def age_and_ttl(entry: Entry, now: float) -> tuple[int, int]:
    """A stored answer's Age (RFC 9111 section 4.2.3) and the freshness it has left, the
    `ttl` of Cache-Status (RFC 9211 section 2.7; negative when stale), in whole seconds."""
    age = policy.current_age(entry, now)
    return int(age), int(entry.meta.get("lifetime", 0.0) - age)


def hit_status(entry: Entry, now: float, extra: str = "") -> str:
    """RFC 9211: `hit; ttl=<remaining freshness>`."""
    ttl = age_and_ttl(entry, now)[1]
    return f"hit; ttl={ttl}" + (f"; {extra}" if extra else "")


def hit_stamp(entry: Entry, ident: Identity, now: float) -> Fields:
    """What a kept fresh hit's answer (`Answer.stamped`) is stamped with for each second of
    its age, after its other fields: Age (RFC 9111 section 5.1) and Cache-Status (RFC 9211
    section 2: `hit; ttl=<remaining freshness>`)."""
    age, ttl = age_and_ttl(entry, now)
    vary = entry.vary
    if vary and vary[-1][0] == IMAGE_FIELD:  # a converted image names its class
        return [
            ("Age", str(age)),
            ("Cache-Status", f"{ident.node}; hit; ttl={ttl}; detail={vary[-1][1]}"),
        ]
    return [("Age", str(age)), ("Cache-Status", f"{ident.node}; hit; ttl={ttl}")]


def not_modified(fields: Fields) -> Fields:
    return [(k, v) for k, v in fields if k.lower() in IN_304]


def from_entry(
    entry: Entry,
    method: str,
    request_headers: MultiMapping[str],
    ident: Identity,
    x_cache: str,
    status: str,
    now: float,
    origin_ms: float | None = None,
) -> Answer:
    """Answer from a stored response: 304 to a matching conditional, 206/416 to a Range,
    the whole body otherwise (the protocol leaves the body out for HEAD)."""
    fields = client_fields(entry.headers, ident)
    fields += cache_fields(ident, x_cache, status, policy.current_age(entry, now), origin_ms)
    body = entry.body
    if entry.status == 200 and policy.not_modified_for(request_headers, entry):
        return Answer(304, not_modified(fields))
    if entry.status != 200:
        return Answer(entry.status, fields, body, len(body))
    add_accept_ranges(fields)
    range_header = request_headers.get("Range")
    if range_header is None or method not in ("GET", "HEAD"):
        return Answer(200, fields, body, len(body))
    if not if_range_allows(
        request_headers.get("If-Range"),
        entry.header("ETag"),
        entry.header("Last-Modified"),
        entry.header("Date"),
    ):
        return Answer(200, fields, body, len(body))
    plan = plan_ranges(range_header, len(body))
    if plan.whole:
        return Answer(200, fields, body, len(body))
    if plan.unsatisfiable:
        return unsatisfiable(fields, len(body))
    if len(plan.ranges) == 1:
        first, last = plan.ranges[0]
        fields.append(("Content-Range", f"bytes {first}-{last}/{len(body)}"))
        part = memoryview(body)[first : last + 1]  # no copy of the stored body
        return Answer(206, fields, part, len(part), at=first)
    content_type = next((v for k, v in fields if k.lower() == "content-type"), None)
    multipart, multipart_type = multipart_body(body, plan.ranges, content_type)
    fields = [(k, v) for k, v in fields if k.lower() != "content-type"]
    fields.append(("Content-Type", multipart_type))
    return Answer(206, fields, multipart, len(multipart))


def from_origin(
    status: int,
    origin_fields: MultiMapping[str],
    ident: Identity,
    x_cache: str,
    cache_status: str,
    origin_ms: float | None,
    length: int | None,
) -> Answer:
    """The head of an origin's answer passed on to a client (the body streams after it).
    The origin's own Age is kept: an upstream cache's age counts (RFC 9111 section 5.1)."""
    fields = client_fields(origin_fields.items(), ident)
    age = policy.age_value(origin_fields)
    fields += cache_fields(ident, x_cache, cache_status, age, origin_ms)
    return Answer(status, fields, b"", length)


def unsatisfiable(fields: Fields, length: int) -> Answer:
    """RFC 9110 section 15.5.17: a 416 with `Content-Range: bytes */<length>`, the stored
    answer's fields but for its Content-Type."""
    fields = [(k, v) for k, v in fields if k.lower() != "content-type"]
    fields += [
        ("Content-Range", f"bytes */{length}"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
    text = b"range not satisfiable\n"
    return Answer(416, fields, text, len(text))


def refusal(status: int, message: str) -> Answer:
    """The edge's own short answer, as every door and the engine write it: `<status>:
    <message>`, never stored; a 503 says when to try again (RFC 9110 section 10.2.3)."""
    body = f"{status}: {message}\n".encode()
    fields: Fields = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
    ]
    if status == 503:  # too many connections, or request bodies (limits.kept.bodies)
        fields.append(("Retry-After", str(RETRY_AFTER)))
    return Answer(status, fields, body, len(body))


def error(
    status: int,
    message: str,
    ident: Identity,
    x_cache: str = "",
    cache_status: str = "",
    allow: str = "",
    close: bool = False,
) -> Answer:
    """A short plain-text answer from the edge itself (`refusal`), with the cache's fields."""
    reply = refusal(status, message)
    fields = reply.fields
    if allow:
        fields.append(("Allow", allow))
    if x_cache:
        fields += cache_fields(ident, x_cache, cache_status)
        fields.append(("X-Served-By", ident.node))
    reply.close = close
    return reply


def plain(status: int, body: bytes, content_type: str, **extra: str) -> Answer:
    """An admin answer (JSON, Prometheus text, HTML)."""
    fields: Fields = [("Content-Type", content_type), ("Cache-Control", "no-store")]
    fields += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return Answer(status, fields, body, len(body))


JSON = "application/json; charset=utf-8"


def json_reply(body: object, status: int = 200, **extra: str) -> Answer:
    return plain(status, json.dumps(body).encode(), JSON, **extra)
