"""The flow core: what to do with a request, as plain data. No sockets, no awaits.

The engine (`edge.engine.engine`) asks two questions, and carries the answers out:

  recv(request)                  -> Admin | Purge | Pass | Reject | Lookup   (before the cache)
  lookup(request, stored, now)   -> Hit | Miss | Reject                       (after the lookup)

In the vocabulary Varnish users know: recv, hash (`edge.cache.keys`), hit, miss, pass;
deliver is `edge.cache.respond`. The caching rules themselves are `edge.cache.policy` (RFC
9111 as pure functions).
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiMapping

from edge.cache import policy
from edge.cache.entry import Entry
from edge.cache.keys import QueryNames, cache_key
from edge.config.settings import EdgeConfig, Rule

ADMIN_PREFIX = "/_edge/"
SAFE_METHODS = frozenset({"GET", "HEAD"})
NO_RULE = Rule(match="/*")
NO_REQUEST_CC = policy.RequestCacheControl()
# Methods the edge cannot relay: a tunnel (RFC 9110 section 9.3.6) is not a cache's job.
REFUSED_METHODS = frozenset({"CONNECT"})
ALLOWED = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, PURGE"


@dataclass(frozen=True, slots=True)
class Admin:
    """An `/_edge/` endpoint: answered by the edge itself, never cached, never proxied."""

    path: str


@dataclass(frozen=True, slots=True)
class Purge:
    """`PURGE /path`: the Varnish and Squid convention."""


@dataclass(frozen=True, slots=True)
class Pass:
    """Straight to the origin and back; nothing stored, collapsed or replayed.
    `reason` is what Cache-Status says (`fwd=<reason>`)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    """An answer from the edge itself, without the origin."""

    status: int
    message: str
    x_cache: str = ""
    detail: str = ""
    allow: str = ""
    close: bool = False


@dataclass(frozen=True, slots=True)
class Lookup:
    """A cacheable request: look `key` up. `target` is what a fetch asks the origin for:
    exactly what the key says, so a parameter the key ignores cannot change what others get."""

    key: str
    rule: Rule
    target: str


Route = Admin | Purge | Pass | Reject | Lookup


def recv(method: str, target: str, cfg: EdgeConfig) -> Route:
    """What kind of request this is, before any lookup (Varnish's vcl_recv)."""
    path, _, query = target.partition("?")
    query = query.partition("#")[0]
    if path.startswith(ADMIN_PREFIX):
        return Admin(path)
    if method in REFUSED_METHODS:
        # RFC 9110 section 15.5.6: a 405 "MUST generate an Allow header field".
        return Reject(
            405,
            "CONNECT is not supported: this is a caching reverse proxy, not a forward proxy",
            allow=ALLOWED,
            close=True,
        )
    if path == "*":
        # RFC 9110 section 9.3.7: OPTIONS * asks about the server, not a resource.
        return Reject(200, f"methods allowed here: {ALLOWED}", allow=ALLOWED)
    if method == "PURGE":
        return Purge()
    if method not in SAFE_METHODS:
        return Pass("method")
    rule = cfg.rule_for(path, QueryNames(query))
    if rule is not None and rule.bypass:
        return Pass("bypass")
    rule = rule or NO_RULE
    key = cache_key(path, query, rule.query)
    return Lookup(key, rule, key)  # what the origin is asked is what the key says


@dataclass(frozen=True, slots=True)
class Hit:
    """Serve `entry`. `x_cache` is HIT or STALE; `refresh`: revalidate in the background
    (RFC 5861 section 3)."""

    entry: Entry
    x_cache: str
    detail: str = ""
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class Miss:
    """Ask the origin. `stale`: a stored response to revalidate with (RFC 9111 section 4.3);
    `collapse`: the answer is expected to be shareable, so concurrent misses share one fetch;
    `fill`: the client asked for a HEAD or a Range, but the fetch is a whole GET that fills
    the cache (nginx's `proxy_cache_convert_head`), and the client's answer comes from it."""

    fwd: str
    stale: Entry | None
    collapse: bool
    fill: bool = False


Decision = Hit | Miss | Reject | Pass
# RFC 9111 section 5.2.1.7: only-if-cached and nothing stored that may answer: "respond ...
# with a 504 (Gateway Timeout)".
NOT_CACHED = Reject(504, "not in cache (only-if-cached)", "MISS", "detail=only-if-cached")


def expected_shareable(rule: Rule, stored: Entry | None, known_cacheable: bool) -> bool:
    """Collapse and convert only what is expected to be cacheable: a rule with a TTL names
    it, a copy is stored, or its last answer was stored. A write behind GET is never any of
    these, so it is never collapsed, converted or replayed."""
    return rule.terms.ttl is not None or stored is not None or known_cacheable


def lookup(
    method: str,
    has_range: bool,
    req_cc: policy.RequestCacheControl,
    rule: Rule,
    entry: Entry | None,
    any_variant: bool,
    known_cacheable: bool,
    now: float,
) -> Decision:
    """Hit or miss (RFC 9111 section 4), given the stored variant for this request."""
    if entry is not None:
        how = policy.reuse(entry, req_cc, now)
        if how is policy.Reuse.FRESH:
            return Hit(entry, "HIT")
        if how is policy.Reuse.STALE_ALLOWED:
            return Hit(entry, "STALE", "detail=max-stale")
        if how is policy.Reuse.STALE_WHILE_REVALIDATE:
            return Hit(entry, "STALE", "detail=stale-while-revalidate", refresh=True)
    if req_cc.only_if_cached:
        return NOT_CACHED
    shareable = expected_shareable(rule, entry, known_cacheable)
    partial = method == "HEAD" or has_range
    if partial and not shareable:
        # Nothing says it is cacheable: pass the HEAD or Range through as it is (a write
        # behind GET is never turned into a GET).
        return Pass("method" if method == "HEAD" else "range")
    fwd = "stale" if entry is not None else ("vary-miss" if any_variant else "uri-miss")
    if entry is not None and (req_cc.no_cache or req_cc.max_age is not None):
        fwd = "request"
    return Miss(fwd, entry, collapse=shareable, fill=partial)


def may_share_with_follower(
    decision: policy.StoreDecision,
    leader_vary: tuple[tuple[str, str], ...],
    follower_vary: tuple[tuple[str, str], ...],
) -> bool:
    """A collapsed client may take the leader's answer only if it is stored (so it is
    shareable: not private, no Set-Cookie...) and selected by the same Vary'd values."""
    return decision.store and leader_vary == follower_vary


def stale_on_error(
    candidates: list[Entry], req_cc: policy.RequestCacheControl, now: float
) -> Entry | None:
    """RFC 5861 section 4: the first stored response that may stand in for a failed origin."""
    for entry in candidates:
        if policy.can_serve_stale_on_error(entry, req_cc, now):
            return entry
    return None


def wants_304(request_headers: MultiMapping[str], entry: Entry) -> bool:
    """The client's conditional GET/HEAD matches this stored 200 (RFC 9110 section 13.2.2)."""
    return entry.status == 200 and policy.not_modified_for(request_headers, entry)
