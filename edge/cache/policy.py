"""The caching rules of a shared cache (RFC 9111), as pure functions: no I/O here.

The proxy asks four questions of this module, in the order of a request:
  - what does the client ask of the cache? (`parse_request`, section 5.2.1)
  - may a stored response be reused, and how? (`reuse`, sections 4 and 4.2)
  - may this new response be stored, and for how long? (`decide_store`, sections 3 and 4.2)
  - after an error or a 304, what now? (`can_serve_stale_on_error`, `freshen`, section 4.3.4)
Every rule quotes the section it follows; tests/edge/test_policy.py checks each one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult

from multidict import CIMultiDict, MultiMapping

from edge.cache.entry import Entry
from edge.config.terms import Defaults, RuleTerms
from edge.http.directives import DELTA_MAX, Directives, parse_directives, parse_targeted
from edge.http.httpdate import date_or, parse_http_date

Headers = MultiMapping[str]

# RFC 9110 section 15.1: status codes that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# RFC 9111 section 5.2.2.3 must-understand: the status codes whose caching requirements this
# cache understands and implements: the final codes RFC 9110 section 15 defines, except 206
# (this cache stores no partial content) and 304 (it freshens, never stores). Others (451 of
# RFC 7725, 299, 599...) are not stored under must-understand.
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205}
    | {300, 301, 302, 303, 305, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | set(range(500, 506))
)
# What a config rule's TTL may apply to: successes, permanent redirects and "gone" answers,
# never errors that may be transient (a 500 must not be pinned for a day).
RULE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
# RFC 9110 section 7.6.1 (plus Keep-Alive, Proxy-Connection): never stored or forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
MAX_STALE_ANY = -1
HEURISTIC_FRACTION = 0.1  # RFC 9111 section 4.2.2: "typical setting ... 10%"


@dataclass(frozen=True, slots=True)
class RequestCacheControl:
    """The request's cache directives (RFC 9111 section 5.2.1)."""

    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None
    max_stale: int | None = None  # MAX_STALE_ANY when given without a value
    min_fresh: int | None = None
    only_if_cached: bool = False
    stale_if_error: int | None = None


@dataclass(frozen=True, slots=True)
class StoreDecision:
    """Whether to store a response, and the numbers reuse decisions will need."""

    store: bool
    reason: str = ""
    lifetime: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    no_cache: bool = False
    keep_for_validation: float = 0.0
    from_rule: bool = False
    """The lifetime is a config rule's TTL: the edge's own policy, counted from arrival."""

    def meta(self, initial_age: float) -> dict[str, float]:
        # A rule's TTL means "keep it this long once here", as nginx's proxy_cache_valid and
        # Varnish's beresp.ttl do: the origin's slowness must not eat it (a 15 s answer with
        # a 15 s rule would otherwise arrive stale). Age stays the RFC 9111 4.2.3 value.
        lifetime = self.lifetime + initial_age if self.from_rule else self.lifetime
        return {
            "lifetime": lifetime,
            "age0": initial_age,
            "swr": self.stale_while_revalidate,
            "sie": self.stale_if_error,
            "mr": 1.0 if self.must_revalidate else 0.0,
            "nc": 1.0 if self.no_cache else 0.0,
        }

    def keep_seconds(self) -> float:
        """How long the entry is worth keeping: fresh time plus the stale windows."""
        return self.lifetime + max(
            self.stale_while_revalidate, self.stale_if_error, self.keep_for_validation
        )


class Reuse(enum.Enum):
    FRESH = "fresh"
    STALE_ALLOWED = "stale"  # the client accepts it (max-stale)
    STALE_WHILE_REVALIDATE = "swr"  # RFC 5861 section 3: serve, refresh in the background
    VALIDATE = "validate"  # RFC 9111 section 4.3: ask the origin first


def header_values(headers: Headers, name: str) -> list[str]:
    return headers.getall(name, [])


def parse_request(headers: Headers) -> RequestCacheControl:
    """RFC 9111 section 5.2.1, and section 5.4 for `Pragma: no-cache` without Cache-Control."""
    values = header_values(headers, "Cache-Control")
    cc = parse_directives(values)
    no_cache = "no-cache" in cc
    if not values and "no-cache" in parse_directives(header_values(headers, "Pragma")):
        no_cache = True
    max_stale: int | None = None
    if "max-stale" in cc:
        # 5.2.1.2: "If no value is assigned to max-stale, then the client will accept a stale
        # response of any age." An invalid value (`max-stale=abc`, `max-stale=`) is ignored:
        # it must not widen into "any age".
        if cc["max-stale"] is None:
            max_stale = MAX_STALE_ANY
        else:
            given = cc.seconds("max-stale")
            max_stale = given if given is not None and given >= 0 else None
    max_age = cc.seconds("max-age")
    if max_age is not None and max_age < 0:
        max_age = 0  # an invalid max-age asks for nothing older than fresh-from-origin
    min_fresh = cc.seconds("min-fresh")
    sie = cc.seconds("stale-if-error")
    return RequestCacheControl(
        no_cache=no_cache,
        no_store="no-store" in cc,
        max_age=max_age,
        max_stale=max_stale,
        min_fresh=min_fresh if min_fresh is None or min_fresh >= 0 else None,
        only_if_cached="only-if-cached" in cc,
        stale_if_error=sie if sie is None or sie >= 0 else None,
    )


def edge_directives(headers: Headers) -> tuple[Directives, str]:
    """The directives that govern this cache, and the field they came from.

    RFC 9213 section 2.1: a cache that uses CDN-Cache-Control "MUST use them to determine
    the freshness lifetime ... and SHOULD ignore the Expires header field and all
    Cache-Control header fields". Surrogate-Control (Edge Architecture 1.0) targets
    surrogates the same way; a valid CDN-Cache-Control wins when both are present.
    """
    # RFC 9213 2.1: CDN-Cache-Control is a Structured Field Dictionary (RFC 8941); "If a
    # targeted field in a given response is empty, or a parsing error is encountered, that
    # field MUST be ignored by the cache" -- `max-age=10000, &&&&&` or `max-age="10000"`
    # falls back to the next field, not to half of itself.
    targeted = parse_targeted(header_values(headers, "CDN-Cache-Control"))
    if targeted is not None:
        return targeted, "cdn-cache-control"
    # Surrogate-Control (Edge Architecture 1.0) predates Structured Fields: it keeps the
    # lenient Cache-Control syntax, and is ignored when nothing in it parses.
    surrogate = parse_directives(header_values(headers, "Surrogate-Control"))
    if surrogate:
        return surrogate, "surrogate-control"
    return parse_directives(header_values(headers, "Cache-Control")), "cache-control"


def explicit_lifetime(
    cc: Directives, source: str, headers: Headers, response_time: float
) -> float | None:
    """Freshness lifetime from the origin's explicit information (RFC 9111 section 4.2.1).

    Returns None when the response carries none (then heuristics or rules may apply).
    """
    # 4.2.1: duplicate, conflicting values: "the response should be considered stale".
    if "s-maxage" in cc:
        s = cc.seconds("s-maxage")
        return 0.0 if s is None or s < 0 or "s-maxage" in cc.conflicts else float(s)
    if "max-age" in cc:
        m = cc.seconds("max-age")
        return 0.0 if m is None or m < 0 or "max-age" in cc.conflicts else float(m)
    if source != "cache-control":
        return None  # RFC 9213: Expires is ignored when a targeted field is used
    expires_values = header_values(headers, "Expires")
    if not expires_values:
        return None
    if len(set(expires_values)) > 1:
        return 0.0
    expires = parse_http_date(expires_values[0])
    if expires is None:
        # 5.3: invalid dates, "especially the value "0"", mean "already expired".
        return 0.0
    return max(0.0, expires - date_or(headers.get("Date"), response_time))


def heuristic_lifetime(
    status: int, headers: Headers, response_time: float, defaults: Defaults
) -> float | None:
    """RFC 9111 section 4.2.2: a fraction of the time since Last-Modified, capped."""
    if status not in HEURISTIC_STATUSES:
        return None
    last_modified = parse_http_date(headers.get("Last-Modified"))
    if last_modified is None:
        return None
    date = date_or(headers.get("Date"), response_time)
    if last_modified >= date:
        return None
    return min((date - last_modified) * HEURISTIC_FRACTION, defaults.heuristic_max)


def age_value(headers: Headers) -> int | None:
    """The `Age` of a response (RFC 9111 section 5.1), or None when absent or invalid.

    5.1: "Although it is defined as a singleton header field, a cache encountering a message
    with a list-based Age field value SHOULD use the first member of the field value,
    discarding subsequent ones." and "If the field value (after discarding additional
    members, as per above) is invalid (e.g., it contains something other than a non-negative
    integer), a cache SHOULD ignore the field." So `Age: 7200, 0` and two lines `7200`, `0`
    are both 7200 (several lines are one list, RFC 9110 5.3, and empty members do not count,
    RFC 9110 5.6.1); `abc, 5`, `-1` and `1.5` are None.
    (The public cache-tests "age-parse" checks expect a list to be ignored; they are marked
    as information-gathering, not conformance, and RFC 9111's text above came after them.)
    """
    lines = header_values(headers, "Age")
    if not lines:
        return None
    first = next((m for line in lines for m in (p.strip(" \t") for p in line.split(",")) if m), "")
    # Age = delta-seconds = 1*DIGIT, ASCII digits only (str.isdigit() alone accepts "²").
    if not first.isascii() or not first.isdigit():
        return None
    # 1.2.2: a delta-seconds too large to represent is 2^31 (compared by length first, so a
    # thousand-digit value never becomes a huge int).
    first = first.lstrip("0") or "0"
    return DELTA_MAX if len(first) > 10 else min(int(first), DELTA_MAX)


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """corrected_initial_age of RFC 9111 section 4.2.3."""
    given = age_value(headers)
    age = 0.0 if given is None else float(given)
    date = parse_http_date(headers.get("Date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(entry: Entry, now: float) -> float:
    """current_age = corrected_initial_age + resident_time (RFC 9111 section 4.2.3)."""
    return entry.meta.get("age0", 0.0) + max(0.0, now - entry.response_time)


def is_fresh(entry: Entry, now: float) -> bool:
    """RFC 9111 section 4.2: fresh when freshness_lifetime > current_age."""
    return not entry.invalidated and entry.meta.get("lifetime", 0.0) > current_age(entry, now)


def fresh_until(entry: Entry) -> float:
    """The epoch second at which `entry` stops being fresh: freshness_lifetime >
    current_age (section 4.2) solved for now, so a hit compares one number."""
    meta = entry.meta
    return entry.response_time + meta.get("lifetime", 0.0) - meta.get("age0", 0.0)


def decide_store(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    rule: RuleTerms,
    defaults: Defaults,
    response_time: float,
) -> StoreDecision:
    """May a shared cache store this response (RFC 9111 section 3), and with what freshness?"""
    # 3: "the request method is understood by the cache" -- we store GET answers only;
    # HEAD is answered from a stored GET (section 4).
    if method != "GET":
        return StoreDecision(False, "method")
    # 3: "the response status code is final" (and 206/304 are not complete responses).
    if status < 200 or status in (206, 304):
        return StoreDecision(False, "status")
    # 5.2.1.5: no-store in the request: "MUST NOT store any part of either this request or
    # any response to it".
    if "no-store" in parse_directives(header_values(request_headers, "Cache-Control")):
        return StoreDecision(False, "request-no-store")
    cc, source = edge_directives(response_headers)
    plain_cc = (
        cc
        if source == "cache-control"
        else parse_directives(header_values(response_headers, "Cache-Control"))
    )
    # 3: "if the response status code is 206 or 304, or the must-understand cache directive
    # (see Section 5.2.2.3) is present: the cache understands the response status code".
    must_understand = "must-understand" in cc
    if must_understand and status not in UNDERSTOOD_STATUSES:
        return StoreDecision(False, "must-understand")
    # 3: "the no-store cache directive is not present in the response", and 5.2.2.3: "When a
    # cache that implements the must-understand directive receives a response that includes
    # it, the cache SHOULD ignore the no-store directive if it understands and implements the
    # status code's caching requirements."
    if "no-store" in cc and not must_understand:
        return StoreDecision(False, "no-store")
    # 3: "if the cache is shared: the private response directive is either not present or
    # allows a shared cache to store a modified response" -- we never store private answers.
    if "private" in cc:
        return StoreDecision(False, "private")
    # 3.5: a shared cache stores a response to a request with Authorization only if it has
    # must-revalidate, public or s-maxage.
    if "Authorization" in request_headers and not (
        {"must-revalidate", "public", "s-maxage"} & (set(cc) | set(plain_cc))
    ):
        return StoreDecision(False, "authorization")
    # Edge policy beyond the RFC (as Varnish's default): a Set-Cookie answer is one user's.
    if "Set-Cookie" in response_headers:
        return StoreDecision(False, "set-cookie")
    # 4.1: "A stored response with a Vary header field value containing a member "*" always
    # fails to match" -- storing it would be useless.
    vary = vary_names(response_headers)
    if "*" in vary:
        return StoreDecision(False, "vary-star")

    explicit = explicit_lifetime(cc, source, response_headers, response_time)
    lifetime: float | None = explicit
    from_rule = False
    if rule.ttl is not None and status in RULE_STATUSES and (rule.rule_wins or explicit is None):
        lifetime = rule.ttl
        from_rule = True
    if lifetime is None:
        # 4.2.2: heuristics only without explicit expiration; never for errors.
        lifetime = heuristic_lifetime(status, response_headers, response_time, defaults)
    if lifetime is None:
        # 3: storable only with explicit freshness, "public", or a heuristically cacheable status;
        # without a way to compute freshness, storing would only ever serve revalidations.
        # A response with a validator is still worth keeping: it is revalidated (4.3) with
        # a conditional request on each use, and a 304 saves sending the body again.
        if status not in HEURISTIC_STATUSES or not (
            "public" in cc or "no-cache" in cc or has_validator(response_headers)
        ):
            return StoreDecision(False, "no-freshness")
        lifetime = 0.0
    if explicit is None and status not in HEURISTIC_STATUSES and lifetime == 0.0:
        return StoreDecision(False, "status")

    swr = _window(
        cc, "stale-while-revalidate", rule.stale_while_revalidate, defaults.stale_while_revalidate
    )
    sie = _window(cc, "stale-if-error", rule.stale_if_error, defaults.stale_if_error)
    # 5.2.2.2 must-revalidate, 5.2.2.8 proxy-revalidate, and 5.2.2.10: s-maxage "incorporates
    # the semantics of the proxy-revalidate response directive" for a shared cache.
    must_revalidate = bool({"must-revalidate", "proxy-revalidate", "s-maxage"} & set(cc))
    # 5.2.2.4: no-cache (qualified forms are treated as unqualified: stricter, still correct).
    no_cache = "no-cache" in cc
    if (
        lifetime <= 0
        and not no_cache
        and not has_validator(response_headers)
        and (must_revalidate or (swr <= 0 and sie <= 0))
    ):
        return StoreDecision(False, "stale-on-arrival")
    keep = defaults.keep if has_validator(response_headers) else 0.0
    return StoreDecision(
        True, "", float(lifetime), swr, sie, must_revalidate, no_cache, keep, from_rule
    )


def _window(cc: Directives, name: str, rule_value: float | None, default: float) -> float:
    value = cc.seconds(name)
    if value is not None and value >= 0:
        return float(value)
    if rule_value is not None:
        return rule_value
    return default


def has_validator(headers: Headers) -> bool:
    return "ETag" in headers or "Last-Modified" in headers


def vary_names(headers: Headers) -> tuple[str, ...]:
    """Field names listed in Vary, lower-cased, de-duplicated, in order.

    An answer with a Content-Encoding that does not say it varies on Accept-Encoding is
    taken to vary on it anyway: the origin chose that coding from this client's
    Accept-Encoding (RFC 9110 section 12.5.3), and a cache keeping it for everyone would
    serve it to clients that cannot decode it (a misconfigured origin, common enough)."""
    names: list[str] = []
    for value in header_values(headers, "Vary"):
        for part in value.split(","):
            name = part.strip().lower()
            if name and name not in names:
                names.append(name)
    coding = headers.get("Content-Encoding", "").strip().lower()
    if coding and coding != "identity" and "accept-encoding" not in names and "*" not in names:
        names.append("accept-encoding")
    return tuple(names)


def fresh_for_any_request(entry: Entry, now: float) -> bool:
    """`reuse` answers FRESH for a request without cache directives (section 4: fresh, and
    no no-cache in the stored response): the question of every plain hit, in two tests."""
    return now < fresh_until(entry) and not entry.invalidated and not entry.meta.get("nc")


def reuse(entry: Entry, request: RequestCacheControl, now: float) -> Reuse:
    """How a stored response may be used for this request (RFC 9111 section 4 and RFC 5861)."""
    meta = entry.meta
    age = current_age(entry, now)
    lifetime = meta.get("lifetime", 0.0)
    fresh = lifetime > age and not entry.invalidated
    # 4: "the stored response does not contain the no-cache directive" unless validated;
    # 5.2.1.4: the request's no-cache asks for validation too.
    if meta.get("nc") or request.no_cache:
        return Reuse.VALIDATE
    # 5.2.1.1: max-age: "the client prefers a response whose age is less than or equal to".
    if request.max_age is not None and age > request.max_age:
        return Reuse.VALIDATE
    if fresh:
        # 5.2.1.3: min-fresh: fresh for at least the given number of seconds more.
        if request.min_fresh is not None and lifetime - age < request.min_fresh:
            return Reuse.VALIDATE
        return Reuse.FRESH
    if meta.get("mr"):
        # 5.2.2.2: "MUST NOT use the response to satisfy subsequent requests without
        # successful validation on the origin server".
        return Reuse.VALIDATE
    if entry.invalidated:
        return Reuse.VALIDATE  # soft purge: revalidate; stale-if-error may still use it
    staleness = age - lifetime
    if request.max_stale is not None and (
        request.max_stale == MAX_STALE_ANY or staleness <= request.max_stale
    ):
        return Reuse.STALE_ALLOWED  # 5.2.1.2
    # 5.2.1.1 max-age: "Unless the max-stale request directive is also present, the client
    # does not wish to receive a stale response"; 5.2.1.3 min-fresh wants a fresh one too.
    wants_fresh = request.max_age is not None or request.min_fresh is not None
    swr = meta.get("swr", 0.0)
    # Stale means age >= lifetime: at staleness 0 there must be a window to serve it in.
    if not wants_fresh and swr > 0 and staleness <= swr:
        return Reuse.STALE_WHILE_REVALIDATE  # RFC 5861 section 3
    return Reuse.VALIDATE


def can_serve_stale_on_error(entry: Entry, request: RequestCacheControl, now: float) -> bool:
    """RFC 5861 section 4 (stale-if-error), limited by RFC 9111 section 4.2.4:
    a cache "MUST NOT generate a stale response" when must-revalidate forbids it."""
    if entry.meta.get("mr") or entry.meta.get("nc"):
        # 4.2.4 also names "a no-cache response directive"; 5.2.2.4: no-cache "MUST NOT be
        # used to satisfy any other request without forwarding it for validation and
        # receiving a successful response".
        return False
    staleness = current_age(entry, now) - entry.meta.get("lifetime", 0.0)
    window = (
        request.stale_if_error if request.stale_if_error is not None else entry.meta.get("sie", 0.0)
    )
    # Fresh (staleness < 0) is always servable; stale (staleness >= 0) only inside a window.
    return staleness < 0 or (window > 0 and staleness <= window)


def validators_for(entry: Entry) -> dict[str, str]:
    """Conditional headers for revalidating a stored response (RFC 9111 section 4.3.1)."""
    out: dict[str, str] = {}
    etag = entry.header("ETag")
    if etag:
        out["If-None-Match"] = etag
    last_modified = entry.header("Last-Modified")
    if last_modified:
        out["If-Modified-Since"] = last_modified
    return out


def _etag_opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE (RFC 9110 8.8.3); etagc includes the comma.
_ENTITY_TAG = re.compile(r'\s*((?:W/)?"[^"]*"|\*|[^,\s]+)\s*(?:,|$)')


def etags_in(value: str) -> list[str]:
    """The members of an If-None-Match / If-Match list (a comma inside quotes is no separator)."""
    return [m.group(1) for m in _ENTITY_TAG.finditer(value) if m.group(1)]


def freshen_matches(entry: Entry, headers_304: Headers) -> bool:
    """RFC 9111 section 4.3.4: does this 304 apply to this stored response?"""
    new_etag = (headers_304.get("ETag") or "").strip()
    stored_etag = (entry.header("ETag") or "").strip()
    new_lm = headers_304.get("Last-Modified")
    if new_etag and not new_etag.startswith("W/"):
        # "If the new response contains a strong validator ..., then that strong validator
        # identifies the selected representation for update. ... If none of the stored
        # responses contain the same strong validator, then the cache MUST NOT use the new
        # response to update any stored responses."
        return stored_etag == new_etag
    if new_etag or new_lm:
        # "If the new response contains no strong validator but does contain one or more weak
        # validators, and those validators correspond to one of the cache's stored responses,
        # then the most recent of those matching stored responses is identified for update."
        if new_etag and _etag_opaque(new_etag) != _etag_opaque(stored_etag):
            return False
        return not new_lm or entry.header("Last-Modified") == new_lm
    # "If the new response does not include any form of validator ..., and there is only one
    # stored response, and that stored response also lacks a validator, then that stored
    # response is identified for update."
    return not stored_etag and entry.header("Last-Modified") is None


# 3.2: header fields a 304 must not replace in the stored response.
NOT_UPDATED_BY_304 = HOP_BY_HOP | {
    "proxy-authentication-info",
    "content-length",
    "content-encoding",
    "content-range",
}


def merged_headers(
    stored: Sequence[tuple[str, str]], update: Iterable[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """RFC 9111 section 3.2: replace stored fields with those of the newer (304) response."""
    update = list(update)
    # 3.1: not stored: "Header fields listed in the Connection header field" and the
    # Proxy-Authenticate, Proxy-Authentication-Info and Proxy-Authorization fields.
    skip = NOT_UPDATED_BY_304 | {
        token.strip().lower()
        for name, value in update
        if name.lower() == "connection"
        for token in value.split(",")
    }
    new: dict[str, list[tuple[str, str]]] = {}
    for name, value in update:
        lname = name.lower()
        if lname in skip:
            continue
        new.setdefault(lname, []).append((name, value))
    out = [(k, v) for k, v in stored if k.lower() not in new]
    for pairs in new.values():
        out.extend(pairs)
    return tuple(out)


def not_modified_for(request_headers: Headers, entry: Entry) -> bool:
    """RFC 9111 section 4.3.2 / RFC 9110 section 13.2.2: may we answer the client's
    conditional GET or HEAD with 304 from the stored response?"""
    inm = request_headers.get("If-None-Match")
    if inm is not None:
        # RFC 9110 13.1.2: weak comparison for If-None-Match.
        stored = entry.header("ETag")
        candidates = etags_in(",".join(request_headers.getall("If-None-Match")))
        if "*" in candidates:
            return True
        return stored is not None and any(
            _etag_opaque(c) == _etag_opaque(stored) for c in candidates
        )
    ims_lines = request_headers.getall("If-Modified-Since", [])
    if ims_lines:
        # RFC 9110 13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the
        # received field value is not a valid HTTP-date, [or] the field value has more than
        # one member" (two lines are a list of two, RFC 9110 5.3).
        ims = parse_http_date(ims_lines[0]) if len(ims_lines) == 1 else None
        if ims is None:
            return False
        # RFC 9111 4.3.2: a 304 when "the selected stored response has a Last-Modified field
        # value that is earlier than or equal to the conditional timestamp; no Last-Modified
        # field is present in the selected stored response, but it has a Date field value
        # that is earlier than or equal to the conditional timestamp; or neither ... is
        # present ..., but the cache recorded it as having been received at a time earlier
        # than or equal to the conditional timestamp." An invalid Last-Modified or Date is
        # not present.
        reference = parse_http_date(entry.header("Last-Modified"))
        if reference is None:
            reference = date_or(entry.header("Date"), entry.response_time)
        return reference <= ims
    return False


# RFC 9110 section 15.4.5: what a 304 carries from the 200 it stands for.
HEADERS_IN_304 = (
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
    "last-modified",
)


def invalidation_targets(
    method: str, status: int, request_path: str, response_headers: Mapping[str, str], host: str
) -> list[str]:
    """RFC 9111 section 4.4: after a non-error answer to an unsafe method, invalidate the
    target URI and the same-origin Location / Content-Location URIs."""
    if method in ("GET", "HEAD", "OPTIONS", "TRACE") or not 200 <= status < 400:
        return []
    from urllib.parse import urljoin, urlsplit

    targets = [request_path]
    base = f"http://{host}{request_path if request_path.startswith('/') else '/'}"
    for name in ("Location", "Content-Location"):
        value = response_headers.get(name)
        if not value:
            continue
        # RFC 9110 10.2.2 / 8.7: a relative reference is resolved against the target URI.
        parts = urlsplit(urljoin(base, value.strip()))
        # "a cache MUST NOT trigger an invalidation under these conditions if the origin ...
        # of the URI to be invalidated differs from that of the target URI".
        if parts.scheme not in ("http", "https") or _origin_of(parts) != _origin_of(urlsplit(base)):
            continue
        path = parts.path or "/"
        target = path + (f"?{parts.query}" if parts.query else "")
        if target not in targets:
            targets.append(target)
    return targets


def _origin_of(parts: SplitResult) -> tuple[str, int | None]:
    """(host, port) with the scheme's default port filled in; userinfo never matches."""
    if "@" in parts.netloc:
        return ("@", None)
    try:
        port = parts.port
    except ValueError:
        return ("@", None)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return ((parts.hostname or "").lower(), port)


def headers_from_pairs(pairs: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)
