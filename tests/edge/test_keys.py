"""Cache keys (RFC 9111 section 2) and Vary (section 4.1)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edge.config import QueryPolicy
from edge.entry import Entry
from edge.keys import ABSENT, cache_key, normalized_query, query_names, select_variant, vary_values
from tests.edge.core_helpers import NOW, date, hdrs, make_entry

ALL = QueryPolicy("all")


def test_query_names() -> None:
    assert query_names("") == frozenset()
    assert query_names("a=1&b&c=%20") == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("policy", "query", "expected"),
    [
        (ALL, "b=2&a=1", "a=1&b=2"),  # sorted: order never splits the cache
        (ALL, "a=1&b=2", "a=1&b=2"),
        (ALL, "", ""),
        (ALL, "&&a=1&", "a=1"),
        (QueryPolicy("none"), "b=2&a=1", ""),
        (QueryPolicy("allow", frozenset({"name"})), "utm=x&name=bob&z=1", "name=bob"),
        (QueryPolicy("allow", frozenset({"name"})), "utm=x", ""),
        (
            QueryPolicy("ignore", frozenset({"utm_source", "fbclid"})),
            "fbclid=1&b=2&utm_source=x&a=1",
            "a=1&b=2",
        ),
    ],
)
def test_query_policies(policy: QueryPolicy, query: str, expected: str) -> None:
    assert normalized_query(query, policy) == expected


def test_repeated_parameters_keep_their_relative_order() -> None:
    """`sort=price&sort=name` and `sort=name&sort=price` may mean different things: the
    sort is by name only and stable."""
    assert normalized_query("sort=price&a=1&sort=name", ALL) == "a=1&sort=price&sort=name"
    assert normalized_query("sort=name&sort=price", ALL) != normalized_query(
        "sort=price&sort=name", ALL
    )


def test_parameters_are_kept_byte_for_byte() -> None:
    """Two different URLs must never share a key: `%FF` and `%FE` (not UTF-8) used to both
    decode to U+FFFD and re-encode identically."""
    assert normalized_query("a=%FF", ALL) != normalized_query("a=%FE", ALL)
    assert normalized_query("a=%FF", ALL) == "a=%FF"
    assert normalized_query("flag&x=a+b", ALL) == "flag&x=a+b"


def test_names_are_decoded_for_the_policy() -> None:
    allow = QueryPolicy("allow", frozenset({"a b"}))
    assert normalized_query("a+b=1&c=2", allow) == "a+b=1"
    assert normalized_query("a%20b=1", allow) == "a%20b=1"


def test_cache_key() -> None:
    """2: "The cache key is the information a cache uses to choose a response and is composed
    from, at a minimum, the request method and target URI" -- one origin, GET only: path and
    normalized query."""
    assert cache_key("/p", "b=1&a=2", ALL) == "/p?a=2&b=1"
    assert cache_key("/p", "", ALL) == "/p"
    assert cache_key("/p", "x=1", QueryPolicy("none")) == "/p"


# -- Vary ----------------------------------------------------------------------------------


def vv(name: str, *lines: str) -> str:
    h: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        h.add(name, line)
    return vary_values([name.lower()], h)[0][1]


def test_absent_differs_from_empty() -> None:
    """4.1: "If (after any normalization that might take place) a header field is absent from
    a request, it can only match another request if it is also absent there." """
    assert vv("Accept-Language") == ABSENT
    assert vv("Accept-Language", "") == ""
    assert vv("Accept-Language") != vv("Accept-Language", "")


def test_whitespace_and_multiple_lines() -> None:
    """4.1: the cache may normalize "both header field values in a way that is known to have
    identical semantics, according to the header field's specification (e.g., reordering
    field values when order is not significant; case-normalizing values where values are
    defined to be case insensitive)". RFC 9110 5.3: several field lines are one list joined
    with ", "; optional whitespace around commas carries no meaning."""
    one = vv("Accept-Language", "en,  fr;q=0.5", "de")
    assert one == vv("Accept-Language", "en, fr;q=0.5, de")
    assert one == vv("Accept-Language", "en ,fr;q=0.5 ,de")
    assert one == "en, fr;q=0.5, de"
    assert vv("Accept-Language", "en, fr") != vv("Accept-Language", "fr, en")  # order kept


def test_accept_encoding_normalization() -> None:
    """RFC 9110 12.5.3: codings are case-insensitive, "q=0" means "not acceptable", order
    carries no meaning; 8.4.1.3: "x-gzip" is "gzip"."""
    assert vv("Accept-Encoding", "gzip, deflate, br") == "br,deflate,gzip"
    assert vv("Accept-Encoding", "BR;q=1.0", "GZIP") == "br,gzip"
    assert vv("Accept-Encoding", "gzip, br;q=0") == "gzip"
    assert vv("Accept-Encoding", "gzip;q=0.000, br") == "br"
    assert vv("Accept-Encoding", "x-gzip") == "gzip"
    assert vv("Accept-Encoding", "identity") == vv("Accept-Encoding", "")  # both: identity only
    assert vv("Accept-Encoding", "gzip;q=bogus") == ""
    assert vv("Accept-Encoding") == ABSENT  # absent: "no preferences", not identity


def entry_with(vary: tuple[tuple[str, str], ...], rt: float = NOW, d: float = 0.0) -> Entry:
    return Entry("/k", 200, (("Date", date(d)),), b"", rt, rt, vary=vary)


def test_select_variant_matches_on_vary_values() -> None:
    """4.1: "the selecting header fields nominated by the stored response ... match"."""
    gz = entry_with((("accept-encoding", "gzip"),))
    br = entry_with((("accept-encoding", "br"),))
    assert select_variant([gz, br], hdrs({"Accept-Encoding": "br"})) is br
    assert select_variant([gz, br], hdrs({"Accept-Encoding": "GZIP, x-unknown"})) is gz
    assert select_variant([gz, br], hdrs({"Accept-Encoding": "zstd"})) is None
    assert select_variant([gz, br], hdrs()) is None


def test_select_variant_prefers_most_recent() -> None:
    """4.1: "If such a mechanism is not available, a cache SHOULD use the most recent response
    (as determined by the Date header field)"."""
    old = entry_with((), d=-100)
    new = entry_with((("accept-encoding", "gzip"),), d=0)
    assert select_variant([old, new], hdrs({"Accept-Encoding": "gzip"})) is new
    assert select_variant([new, old], hdrs({"Accept-Encoding": "gzip"})) is new
    assert select_variant([new, old], hdrs()) is old  # only the one without Vary matches


def test_vary_of_a_stored_entry_round_trips() -> None:
    e = make_entry(
        {"Cache-Control": "max-age=60", "Vary": "Accept-Encoding, accept-language"},
        request={"Accept-Encoding": "br, gzip", "Accept-Language": "fr"},
    )
    assert e.vary == (("accept-encoding", "br,gzip"), ("accept-language", "fr"))
    assert select_variant([e], hdrs({"Accept-Encoding": "gzip,br", "Accept-Language": "fr"})) is e
    assert select_variant([e], hdrs({"Accept-Encoding": "gzip,br"})) is None
