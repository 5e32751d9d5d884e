"""Cache keys (RFC 9111 section 2) and Vary (section 4.1)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edge.cache.entry import Entry
from edge.cache.keys import (
    ABSENT,
    cache_key,
    normalized_query,
    query_names,
    select_variant,
    vary_values,
)
from edge.config.settings import QueryPolicy
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
    one = vv("X-Flavour", "en,  fr;q=0.5", "de")
    assert one == vv("X-Flavour", "en, fr;q=0.5, de")
    assert one == vv("X-Flavour", "en ,fr;q=0.5 ,de")
    assert one == "en, fr;q=0.5, de"
    # A field whose semantics the cache does not know keeps its order and case.
    assert vv("X-Flavour", "en, fr") != vv("X-Flavour", "fr, en")
    assert vv("X-Flavour", "EN") != vv("X-Flavour", "en")


def test_accept_language_normalization() -> None:
    """4.1 ("reordering field values when order is not significant; case-normalizing values
    where values are defined to be case insensitive"): language ranges compare
    case-insensitively (RFC 4647 3.3.1), and RFC 9110 12.5.4 ranks them by weight: "some
    recipients treat the order in which language tags are listed as an indication of
    descending priority, particularly for tags that are assigned equal quality values (no
    value is the same as q=1). However, this behavior cannot be relied upon." """
    al = "Accept-Language"
    assert vv(al, "en, fr") == vv(al, "fr, en") == vv(al, "FR, En") == "en, fr"
    assert vv(al, "en-US, fr;q=0.5, de;q=0.5") == vv(al, "EN-us, de;q=0.5,fr;q=0.500")
    assert vv(al, "en-US, fr;q=0.5, de;q=0.5") == "en-us, de;q=0.5, fr;q=0.5"
    assert vv(al, "fr;q=0.5", "en") == vv(al, "en, fr;q=0.5")  # two lines are one list
    assert vv(al, "en;q=1.0") == vv(al, "en") and vv(al, "en;Q=0.8") == "en;q=0.8"
    # Weights still count: different preferences stay different variants.
    assert vv(al, "en, fr;q=0.5") != vv(al, "fr, en;q=0.5")
    assert vv(al, "en;q=0, *") != vv(al, "*")  # q=0 is "not acceptable", not absent
    # A malformed member: nothing is reordered or lowered, only the whitespace as for any field.
    assert vv(al, "fr, EN;q=2") == "fr, EN;q=2"
    assert vv(al, "fr, en;level=1") != vv(al, "en;level=1, fr")
    assert vv(al) == ABSENT and vv(al, "") == ""


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


def test_select_variant_accept_language_case_and_equal_weight_order() -> None:
    """4.1: a stored variant for `fr, en` serves `EN, fr`; one for `fr, en;q=0.5` does not
    serve `en, fr;q=0.5`."""
    spec = {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
    both = make_entry(spec, request={"Accept-Language": "fr, en"})
    assert select_variant([both], hdrs({"Accept-Language": "EN, fr"})) is both
    assert select_variant([both], hdrs({"Accept-Language": "en;q=1, FR;q=1.000"})) is both
    french = make_entry(spec, request={"Accept-Language": "fr, en;q=0.5"})
    assert select_variant([french], hdrs({"Accept-Language": "en, fr;q=0.5"})) is None
    assert select_variant([french], hdrs({"Accept-Language": "en;q=0.50, Fr"})) is french
