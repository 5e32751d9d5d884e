"""Cache keys: the primary key (RFC 9111 section 2) and the Vary secondary key (section 4.1).

The edge fronts one origin, so the primary key is the path plus the normalized query
(the Host header is not in the key: a client cannot create entries under another name).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote_plus

from multidict import MultiMapping

from edge.config import QueryPolicy
from edge.entry import Entry
from edge.httpdate import parse_http_date

ABSENT = "\x00"  # a Vary'd header the request did not send (distinct from an empty value)


def query_names(raw_query: str) -> frozenset[str]:
    if not raw_query:
        return frozenset()
    return frozenset(name for name, _ in parse_qsl(raw_query, keep_blank_values=True))


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
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if name == "x-gzip":
            name = "gzip"  # RFC 9110 8.4.1.3: "A recipient SHOULD consider "x-gzip" to be
            # equivalent to "gzip"."
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if q > 0 and name in ("gzip", "br", "zstd", "deflate", "*"):
            codings.add(name)
    return ",".join(sorted(codings))


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
        rank = (parse_http_date(entry.header("Date")) or entry.response_time, entry.response_time)
        if best is None or rank > best_rank:
            best, best_rank = entry, rank
    return best
