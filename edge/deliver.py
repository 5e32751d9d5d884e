"""Responses to clients: from a stored entry (with Age, 304s, ranges, HEAD), and the
headers that show what the edge did (X-Cache, Cache-Status (RFC 9211), Via, X-Served-By)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from edge import policy
from edge.entry import Entry
from edge.ranges import if_range_allows, multipart_body, plan_ranges

# Fields meant for this cache only (RFC 9213 leaves CDN-Cache-Control to pass on; the
# Surrogate-Control spec asks surrogates to remove theirs). Tags unless configured to keep.
EDGE_ONLY = frozenset({"surrogate-control"})
TAG_HEADERS = frozenset({"surrogate-key", "cache-tag"})
# Computed by aiohttp for the body we send, or by us.
RECOMPUTED = frozenset({"content-length", "age", "x-cache", "cache-status", "x-served-by"})


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node is, as shown in headers."""

    node: str
    keep_tags: bool = False

    @property
    def via(self) -> str:
        return f"1.1 {self.node} (woodytoys-edge)"


def client_headers(
    stored: CIMultiDict[str] | tuple[tuple[str, str], ...], ident: Identity
) -> CIMultiDict[str]:
    drop = EDGE_ONLY | RECOMPUTED | (frozenset() if ident.keep_tags else TAG_HEADERS)
    pairs = stored.items() if isinstance(stored, CIMultiDict) else stored
    return CIMultiDict((k, v) for k, v in pairs if k.lower() not in drop)


def mark(
    headers: CIMultiDict[str],
    ident: Identity,
    x_cache: str,
    status: str,
    age: float | None = None,
    origin_ms: float | None = None,
) -> None:
    """Add the headers of DESIGN.md: X-Cache, Cache-Status, Age, X-Served-By, Via."""
    headers["X-Cache"] = x_cache
    headers["Cache-Status"] = f"{ident.node}; {status}" if status else ident.node
    headers["X-Served-By"] = ident.node
    if age is not None:
        headers["Age"] = str(int(age))
    prior = headers.getall("Via", [])
    headers.popall("Via", None)
    headers["Via"] = ", ".join([*prior, ident.via])
    if origin_ms is not None:
        headers["Server-Timing"] = f"origin;dur={origin_ms:.1f}"


def hit_status(entry: Entry, now: float, extra: str = "") -> str:
    """RFC 9211: `hit; ttl=<remaining freshness>` (negative when stale)."""
    ttl = int(entry.meta.get("lifetime", 0.0) - policy.current_age(entry, now))
    return f"hit; ttl={ttl}" + (f"; {extra}" if extra else "")


def from_entry(
    request: web.BaseRequest,
    entry: Entry,
    ident: Identity,
    x_cache: str,
    status: str,
    now: float,
    origin_ms: float | None = None,
) -> web.Response:
    """Answer from a stored response: 304 to a matching conditional, 206/416 to a Range,
    HEAD without a body (aiohttp sends none for HEAD), the whole body otherwise."""
    headers = client_headers(entry.headers, ident)
    age = policy.current_age(entry, now)
    mark(headers, ident, x_cache, status, age, origin_ms)
    if entry.status == 200 and policy.not_modified_for(request.headers, entry):
        # RFC 9110 section 15.4.5: a 304 carries the fields the 200 would have, minus content.
        keep = set(policy.HEADERS_IN_304) | {
            "age",
            "x-cache",
            "cache-status",
            "x-served-by",
            "via",
            "server-timing",
        }
        return web.Response(
            status=304, headers=CIMultiDict((k, v) for k, v in headers.items() if k.lower() in keep)
        )
    body = entry.body
    if entry.status != 200:
        return web.Response(status=entry.status, headers=headers, body=body)
    headers["Accept-Ranges"] = "bytes"
    range_header = request.headers.get("Range")
    if range_header is None or request.method not in ("GET", "HEAD"):
        return web.Response(status=200, headers=headers, body=body)
    if not if_range_allows(
        request.headers.get("If-Range"),
        entry.header("ETag"),
        entry.header("Last-Modified"),
        entry.header("Date"),
    ):
        return web.Response(status=200, headers=headers, body=body)
    plan = plan_ranges(range_header, len(body))
    if plan.whole:
        return web.Response(status=200, headers=headers, body=body)
    if plan.unsatisfiable:
        # RFC 9110 section 15.5.17: 416 with Content-Range: bytes */<length>.
        headers.popall("Content-Type", None)
        headers["Content-Range"] = f"bytes */{len(body)}"
        return web.Response(status=416, headers=headers, text="range not satisfiable\n")
    if len(plan.ranges) == 1:
        first, last = plan.ranges[0]
        headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        return web.Response(status=206, headers=headers, body=body[first : last + 1])
    multipart, content_type = multipart_body(body, plan.ranges, headers.get("Content-Type"))
    headers["Content-Type"] = content_type
    return web.Response(status=206, headers=headers, body=multipart)


def error_response(
    status: int, message: str, ident: Identity, x_cache: str, cache_status: str
) -> web.Response:
    """A short plain-text error page from the edge itself."""
    headers: CIMultiDict[str] = CIMultiDict({"Cache-Control": "no-store"})
    mark(headers, ident, x_cache, cache_status)
    return web.Response(status=status, text=f"{status}: {message}\n", headers=headers)
