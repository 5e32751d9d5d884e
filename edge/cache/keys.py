"""Cache keys: the primary key (RFC 9111 section 2) and the Vary secondary key (section 4.1).

The edge fronts one origin, so the primary key is the path plus the normalized query
(the Host header is not in the key: a client cannot create entries under another name).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote_plus

from multidict import MultiMapping

from edge.cache.entry import Entry
from edge.config.settings import QueryPolicy
from edge.http.httpdate import date_or
from edge.http.weights import weighted

ABSENT = "\x00"  # a Vary'd header the request did not send (distinct from an empty value)


def query_names(raw_query: str) -> frozenset[str]:
    if not raw_query:
        return frozenset()
    return frozenset(name for name, _ in parse_qsl(raw_query, keep_blank_values=True))


class QueryNames:
    """`query_names` of a query, parsed only when first asked (most rules name no query
    parameter: a request whose rule names none never parses its query for them)."""

    __slots__ = ("_names", "raw")

    def __init__(self, raw_query: str) -> None:
        self.raw = raw_query
        self._names: frozenset[str] | None = None

    def __contains__(self, name: object) -> bool:
        if self._names is None:
            self._names = query_names(self.raw)
        return name in self._names


def normalized_query(raw_query: str, policy: QueryPolicy) -> str:
    """The query parameters that make the key, sorted by name so their order never splits the
    cache. Each parameter is kept byte for byte as the client sent it (decoding and re-encoding
    would map `%FF` and `%FE` both to U+FFFD: two URLs, one key); only the names are decoded,
    to match the policy. The sort is stable: `a=2&a=1` keeps its values in their order."""
    if not raw_query or policy.mode == "none":
        return ""
    kept: list[tuple[str, str]] = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name = unquote_plus(piece.partition("=")[0])
        if policy.keeps(name):
            kept.append((name, piece))
    kept.sort(key=lambda pair: pair[0])
    return "&".join(piece for _, piece in kept)


def cache_key(raw_path: str, raw_query: str, policy: QueryPolicy) -> str:
    query = normalized_query(raw_query, policy)
    return f"{raw_path}?{query}" if query else raw_path


def _accept_encoding(value: str) -> str:
    """Accept-Encoding reduced to the codings with q > 0 that matter, sorted.

    Fewer variants, same meaning: `gzip, deflate, br` and `br;q=1.0, gzip` select the
    same stored variant when the origin only knows gzip and br.
    """
    codings: set[str] = set()
    for name, q in weighted(value):
        if name == "x-gzip":
            name = "gzip"  # RFC 9110 8.4.1.3: "A recipient SHOULD consider "x-gzip" to be
            # equivalent to "gzip"."
        if q > 0 and name in ("gzip", "br", "zstd", "deflate", "*"):
            codings.add(name)
    return ",".join(sorted(codings))


# RFC 9110 12.5.4: language-range is RFC 4647 2.1's basic range,
#   language-range = (1*8ALPHA *("-" 1*8alphanum)) / "*"
# and 12.4.2: weight = OWS ";" OWS "q=" qvalue,
#   qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_LANGUAGE_MEMBER = re.compile(
    r"([a-z]{1,8}(?:-[a-z0-9]{1,8})*|\*)(?:[ \t]*;[ \t]*q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?))?",
    re.ASCII | re.IGNORECASE,
)


def _accept_language(value: str) -> str:
    # The usual values are short and few: cache them (at most 1024 x 256 chars).
    return _normalized_languages(value) if len(value) <= 256 else _languages(value)


def _languages(value: str) -> str:
    """Accept-Language with its ranges lower-cased and sorted by weight, then by name.

    RFC 9111 4.1 allows "normalizing both header field values in a way that is known to have
    identical semantics ... (e.g., reordering field values when order is not significant;
    case-normalizing values where values are defined to be case insensitive)". Language
    ranges match case-insensitively (RFC 4647 3.3.1, the Basic Filtering RFC 9110 12.5.4
    names: a range matches a tag "if, in a case-insensitive comparison, it exactly equals
    the tag" or a prefix of it), and the weight, not the position, ranks them: RFC 9110
    12.5.4 "Note that some recipients treat the order in which language tags are listed as
    an indication of descending priority, particularly for tags that are assigned equal
    quality values (no value is the same as q=1). However, this behavior cannot be relied
    upon." So `fr, en` and `EN, fr`
    select one variant; `en;q=0.5, fr` and `fr, en;q=0.500` too. A value with any member
    that is not a valid range and weight is left as it came (only its whitespace
    normalized): no guess at what a malformed value means.
    """
    ranked: list[tuple[int, str]] = []
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue  # RFC 9110 5.6.1: empty list elements do not count
        m = _LANGUAGE_MEMBER.fullmatch(member)
        if m is None:
            return value
        name, q = m.group(1).lower(), m.group(2)
        # Weight in thousandths: "0.5", "0.50" and "0.500" are one weight; no q is q=1.
        ranked.append((1000 if q is None else round(float(q) * 1000), name))
    ranked.sort(key=lambda pair: (-pair[0], pair[1]))
    return ", ".join(name if q == 1000 else f"{name};q={q / 1000:g}" for q, name in ranked)


_normalized_languages = functools.lru_cache(maxsize=1024)(_languages)


def vary_values(names: Sequence[str], headers: MultiMapping[str]) -> tuple[tuple[str, str], ...]:
    """The request's values for the Vary'd fields, normalized (RFC 9111 section 4.1:
    "normalizing both header field values in a way that is known to have identical semantics")."""
    out: list[tuple[str, str]] = []
    for name in names:
        values = headers.getall(name, [])
        if not values:
            out.append((name, ABSENT))
            continue
        # RFC 9110 5.3: several field lines are one value joined with ", "; list members are
        # compared without the optional whitespace around their commas, and runs of
        # whitespace count as one space.
        members = (" ".join(m.split()) for v in values for m in v.split(","))
        joined = ", ".join(m for m in members if m)
        if name == "accept-encoding":
            joined = _accept_encoding(joined)
        elif name == "accept-language":
            joined = _accept_language(joined)
        out.append((name, joined))
    return tuple(out)


def select_variant(entries: Sequence[Entry], headers: MultiMapping[str]) -> Entry | None:
    """The stored variant whose Vary'd request values match this request (4.1).

    4.1: when several match, "a cache SHOULD use the most recent response (as determined by
    the Date header field)" -- then the last received.
    """
    best: Entry | None = None
    best_rank = (0.0, 0.0)
    for entry in entries:
        if entry.vary:
            names = [name for name, _ in entry.vary]
            if vary_values(names, headers) != entry.vary:
                continue
        rank = (date_or(entry.header("Date"), entry.response_time), entry.response_time)
        if best is None or rank > best_rank:
            best, best_rank = entry, rank
    return best
