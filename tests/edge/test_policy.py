"""The caching rules (RFC 9111, RFC 9110, RFC 5861, RFC 9213), one test beside each sentence."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cache import policy
from edge.cache.policy import (
    MAX_STALE_ANY,
    Defaults,
    Reuse,
    RuleTerms,
    can_serve_stale_on_error,
    current_age,
    explicit_lifetime,
    freshen_matches,
    heuristic_lifetime,
    initial_age,
    invalidation_targets,
    merged_headers,
    not_modified_for,
    parse_request,
    reuse,
    validators_for,
)
from edge.http.httpdate import format_http_date
from tests.edge.core_helpers import NOW, cc, date, decide, hdrs, make_entry

DAY = 86400.0
FRESH60 = {"Cache-Control": "max-age=60", "Date": date()}


def lifetime_of(response: dict[str, str] | list[tuple[str, str]], **kw: object) -> float:
    d = decide(response, **kw)  # type: ignore[arg-type]
    assert d.store, d.reason
    return d.lifetime


# == 3. Storing responses ==================================================================


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_only_get_is_stored(method: str) -> None:
    """3: "the request method is understood by the cache" -- this edge stores GET answers."""
    assert decide(FRESH60, method=method).reason == "method"


@pytest.mark.parametrize("status", [100, 101, 103, 206, 304])
def test_non_final_and_partial_statuses_are_not_stored(status: int) -> None:
    """3: "the response status code is final (see Section 15 of [HTTP])"; 3.3: "A cache MUST
    NOT use an incomplete response to answer requests unless the response has been made
    complete"; a 304 only updates a stored response (4.3.4)."""
    assert decide(FRESH60, status=status).reason == "status"


def test_request_no_store() -> None:
    """5.2.1.5: "The no-store request directive indicates that a cache MUST NOT store any part
    of either this request or any response to it." """
    assert decide(FRESH60, request={"Cache-Control": "no-store"}).reason == "request-no-store"


def test_response_no_store() -> None:
    """3: "the no-store cache directive is not present in the response"."""
    assert decide({"Cache-Control": "max-age=60, no-store"}).reason == "no-store"


@pytest.mark.parametrize("status", [200, 203, 204, 301, 404, 410, 500, 503])
def test_must_understand_overrides_no_store_for_understood_statuses(status: int) -> None:
    """5.2.2.3: "The must-understand response directive limits caching of the response to a
    cache that understands and conforms to the requirements for that response's status code.
    A response that contains the must-understand directive SHOULD also contain the no-store
    directive. When a cache that implements the must-understand directive receives a
    response that includes it, the cache SHOULD ignore the no-store directive if it
    understands and implements the status code's caching requirements." """
    d = decide({"Cache-Control": "max-age=60, must-understand, no-store"}, status=status)
    assert d.store and d.lifetime == 60.0
    assert decide({"Cache-Control": "Must-Understand, No-Store, max-age=60"}).store
    # The same in the targeted field (RFC 9213: its directives are Cache-Control's).
    assert decide({"CDN-Cache-Control": "max-age=60, must-understand, no-store"}).store
    # no-store alone still forbids storing.
    assert decide({"Cache-Control": "max-age=60, no-store"}, status=status).reason == "no-store"


@pytest.mark.parametrize("status", [299, 418, 429, 451, 599])
def test_must_understand_with_a_status_not_understood(status: int) -> None:
    """3: a cache MUST NOT store a response unless, "if the response status code is 206 or
    304, or the must-understand cache directive (see Section 5.2.2.3) is present: the cache
    understands the response status code"."""
    for value in ("max-age=60, must-understand, no-store", "max-age=60, must-understand"):
        assert decide({"Cache-Control": value}, status=status).reason == "must-understand"
    assert not decide({"Cache-Control": "max-age=60, must-understand"}, status=206).store


def test_must_understand_never_overrides_other_prohibitions() -> None:
    """5.2.2.3 lifts the response's no-store only: the request's no-store (5.2.1.5) and
    private (5.2.2.7) still apply."""
    mu = {"Cache-Control": "max-age=60, must-understand, no-store"}
    assert decide(mu, request={"Cache-Control": "no-store"}).reason == "request-no-store"
    private = {"Cache-Control": "max-age=60, must-understand, no-store, private"}
    assert decide(private).reason == "private"


@pytest.mark.parametrize("value", ["private", 'private="Set-Cookie", max-age=60', "PRIVATE"])
def test_private(value: str) -> None:
    """3: "if the cache is shared: the private response directive is either not present or
    allows a shared cache to store a modified response"; 5.2.2.7: "a shared cache MUST NOT
    store the response" (the qualified form is treated as unqualified: stricter)."""
    assert decide({"Cache-Control": value}).reason == "private"


def test_authorization_needs_an_explicit_permission() -> None:
    """3.5: "A shared cache MUST NOT use a cached response to a request with an Authorization
    header field ... unless the response contains a Cache-Control field with a response
    directive (Section 5.2.2) that allows it to be stored by a shared cache ... In this
    specification, the following Cache-Control response directives (Section 5.2.2) have such
    an effect: must-revalidate, public, and s-maxage." """
    auth = {"Authorization": "Bearer x"}
    assert decide(FRESH60, request=auth).reason == "authorization"
    for allowed in ("public, max-age=60", "max-age=60, must-revalidate", "s-maxage=60"):
        assert decide({"Cache-Control": allowed}, request=auth).store, allowed
    # proxy-revalidate is not one of them
    assert not decide({"Cache-Control": "max-age=60, proxy-revalidate"}, request=auth).store


def test_set_cookie_is_not_stored() -> None:
    """Edge policy beyond the RFC (as Varnish's builtin VCL): a Set-Cookie answer is one
    user's."""
    assert decide({**FRESH60, "Set-Cookie": "sid=1"}).reason == "set-cookie"


@pytest.mark.parametrize("vary", ["*", "Accept, *", " * "])
def test_vary_star(vary: str) -> None:
    """4.1: "A stored response with a Vary header field value containing a member "*" always
    fails to match." -- storing it is useless."""
    assert decide({**FRESH60, "Vary": vary}).reason == "vary-star"


def test_no_freshness_information_no_validator_is_not_stored() -> None:
    """3: a response is stored only if it "contains" explicit freshness, public, s-maxage,
    or "has a status code that is defined as heuristically cacheable"; without any way to
    compute freshness and without a validator, it could never be reused."""
    assert decide({}, status=500).reason == "no-freshness"
    assert decide({"Cache-Control": "public"}, status=500).reason == "no-freshness"
    assert decide({}, status=200).reason == "no-freshness"


def test_validator_only_is_stored_to_be_revalidated() -> None:
    d = decide({"ETag": '"v1"'})
    assert d.store and d.lifetime == 0.0


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_heuristic_statuses(status: int) -> None:
    """RFC 9110 15.1: "Responses with status codes that are defined as heuristically
    cacheable (e.g., 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and 501 in this
    specification) can be reused by a cache with heuristic expiration"."""
    lm = {"Date": date(), "Last-Modified": date(-1000)}
    assert lifetime_of(lm, status=status) == pytest.approx(100.0)


@pytest.mark.parametrize("status", [302, 307, 400, 403, 500, 502, 503])
def test_non_heuristic_statuses_need_explicit_freshness(status: int) -> None:
    """RFC 9110 15.1: "all other status codes are not heuristically cacheable"; explicit
    freshness makes them storable (RFC 9111 3: "a max-age response directive")."""
    lm = {"Date": date(), "Last-Modified": date(-1000)}
    assert not decide(lm, status=status).store
    assert lifetime_of({"Cache-Control": "max-age=30"}, status=status) == 30.0


# -- config rules -------------------------------------------------------------------------

RULE = RuleTerms(ttl=15.0)


@pytest.mark.parametrize("status", sorted(policy.RULE_STATUSES))
def test_rule_ttl_fills_in_for_rule_statuses(status: int) -> None:
    assert lifetime_of({}, status=status, rule=RULE) == 15.0


@pytest.mark.parametrize("status", [302, 403, 405, 414, 500, 501, 502, 503, 504])
def test_rule_ttl_never_pins_other_statuses(status: int) -> None:
    """A 500 must not be pinned for the rule's TTL (transient errors)."""
    d = decide({}, status=status, rule=RULE)
    assert not d.store or d.lifetime != 15.0


def test_prefer_origin_vs_prefer_rule() -> None:
    """prefer: origin -- the origin's explicit freshness wins; prefer: rule -- the rule's."""
    assert lifetime_of(FRESH60, rule=RULE) == 60.0
    assert lifetime_of(FRESH60, rule=RuleTerms(ttl=15.0, rule_wins=True)) == 15.0
    # the rule never lifts a prohibition
    assert decide({"Cache-Control": "no-store"}, rule=RuleTerms(ttl=15, rule_wins=True)).reason == (
        "no-store"
    )
    d = decide({"Cache-Control": "no-cache"}, rule=RuleTerms(ttl=15, rule_wins=True))
    assert d.store and d.no_cache


def test_rule_and_default_stale_windows() -> None:
    """RFC 5861 windows: the origin's own directive, else the rule's, else the default."""
    rule = RuleTerms(ttl=15, stale_while_revalidate=5, stale_if_error=50)
    defaults = Defaults(stale_if_error=DAY, stale_while_revalidate=1)
    d = decide({}, rule=rule, defaults=defaults)
    assert (d.stale_while_revalidate, d.stale_if_error) == (5, 50)
    d = decide(
        {"Cache-Control": "max-age=1, stale-while-revalidate=7, stale-if-error=70"},
        rule=rule,
        defaults=defaults,
    )
    assert (d.stale_while_revalidate, d.stale_if_error) == (7, 70)
    d = decide(FRESH60, defaults=defaults)
    assert (d.stale_while_revalidate, d.stale_if_error) == (1, DAY)
    assert d.keep_seconds() >= 60 + DAY


def test_stale_on_arrival_without_validator_or_window_is_not_stored() -> None:
    assert decide({"Cache-Control": "max-age=0"}).reason == "stale-on-arrival"
    assert decide({"Cache-Control": "max-age=0", "ETag": '"x"'}).store
    assert decide({"Cache-Control": "max-age=0, stale-if-error=60"}).store


# == 4.2.1 Freshness lifetime ==============================================================


def test_precedence_s_maxage_max_age_expires() -> None:
    """4.2.1: "If the cache is shared and the s-maxage response directive is present, use its
    value, or If the max-age response directive is present, use its value, or If the Expires
    response header field is present, use its value minus the value of the Date response
    header field (using the time the message was received if it is not present ...), or
    Otherwise, no explicit expiration time is present in the response. A heuristic freshness
    lifetime might be applicable"."""
    lm = {"Date": date(), "Last-Modified": date(-100_000), "Expires": date(300)}
    assert lifetime_of({**lm, "Cache-Control": "s-maxage=10, max-age=20"}) == 10.0
    assert lifetime_of({**lm, "Cache-Control": "max-age=20"}) == 20.0
    assert lifetime_of(lm) == 300.0
    del lm["Expires"]
    assert lifetime_of(lm) == pytest.approx(10_000.0)  # heuristic: 10% of 100000 s


def test_expires_without_date_uses_the_response_time() -> None:
    assert lifetime_of({"Expires": date(120)}, response_time=NOW) == 120.0
    assert lifetime_of({"Expires": date(120), "Date": "garbage"}, response_time=NOW) == 120.0
    # Expires in the past relative to Date: stale at once (validator keeps it storable)
    assert lifetime_of({"Expires": date(-10), "Date": date(), "ETag": '"x"'}) == 0.0


@pytest.mark.parametrize(
    "expires",
    [
        "0",
        "-1",
        "yesterday",
        "Sun, 31 Feb 2024 00:00:00 GMT",
        # Future dates, but not in one of the three HTTP-date formats (RFC 9110 5.6.7):
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 2050 02:01:18 AEST",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18  Aug  2050 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02.01.18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
    ],
)
def test_invalid_expires_is_stale(expires: str) -> None:
    """5.3: "A cache recipient MUST interpret invalid date formats, especially the value "0",
    as representing a time in the past (i.e., "already expired")." """
    assert lifetime_of({"Expires": expires, "Date": date(), "ETag": '"x"'}) == 0.0
    assert decide({"Expires": expires}).reason == "stale-on-arrival"


def test_expires_in_the_three_formats_and_any_case() -> None:
    """RFC 9110 5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept
    all three HTTP-date formats"; RFC 9111 4.2: "a cache recipient SHOULD match the field
    value case-insensitively"."""
    start = {"Date": "Sun, 06 Nov 1994 08:49:37 GMT"}
    for expires in (
        "Sun, 06 Nov 1994 08:50:37 GMT",
        "Sunday, 06-Nov-94 08:50:37 GMT",
        "Sun Nov  6 08:50:37 1994",
        "SUN, 06 NOV 1994 08:50:37 gmt",
    ):
        assert lifetime_of({**start, "Expires": expires}) == 60.0


def test_invalid_date_is_absent() -> None:
    """An invalid Date is no date: Expires counts from the response time (RFC 9110 6.6.1: a
    recipient without a usable Date records the time the response was received)."""
    h = {"Expires": date(120), "Date": "Tue, 14 Nov 2023 22:11:20 UTC"}  # 120 s before NOW
    assert lifetime_of(h, response_time=NOW) == 120.0


def test_duplicate_expires_is_stale() -> None:
    """4.2.1: "two Expires header field lines" with different values: "considered stale"."""
    two = [("Expires", date(100)), ("Expires", date(200)), ("ETag", '"x"')]
    assert lifetime_of(two) == 0.0
    same = [("Expires", date(100)), ("Expires", date(100)), ("Date", date())]
    assert lifetime_of(same) == 100.0


@pytest.mark.parametrize(
    "value",
    [
        "max-age=60, max-age=120",
        "s-maxage=5, s-maxage=6, max-age=60",
        "max-age=abc",
        "max-age=-5",
        "max-age=1.5",
        "s-maxage=",
    ],
)
def test_conflicting_or_invalid_freshness_is_stale(value: str) -> None:
    """4.2.1: "either the first occurrence should be used or the response should be considered
    stale" ... "Caches are encouraged to consider responses that have invalid freshness
    information (e.g., a max-age directive with non-integer content) to be stale." """
    assert lifetime_of({"Cache-Control": value, "ETag": '"x"', "Expires": date(999)}) == 0.0


def test_delta_seconds_overflow_clamps_to_2_31() -> None:
    """1.2.2: "the cache MUST consider the value to be 2147483648 (2^31)"."""
    assert lifetime_of({"Cache-Control": "max-age=99999999999999999999"}) == 2.0**31


def test_targeted_fields_take_precedence() -> None:
    """RFC 9213 2.1: a cache using a targeted field "MUST use them to determine the freshness
    lifetime" and "SHOULD ignore the Expires header field and all Cache-Control header
    fields"; CDN-Cache-Control over Surrogate-Control over Cache-Control here."""
    both = {
        "Cache-Control": "no-store",
        "Surrogate-Control": "max-age=20",
        "CDN-Cache-Control": "max-age=30",
        "Expires": date(500),
        "Date": date(),
    }
    assert lifetime_of(both) == 30.0
    del both["CDN-Cache-Control"]
    assert lifetime_of(both) == 20.0
    # Expires is ignored under a targeted field: no explicit lifetime, heuristic/rule instead
    only = {"Surrogate-Control": "stale-if-error=60", "Expires": date(500), "ETag": '"e"'}
    assert lifetime_of(only) == 0.0
    assert lifetime_of(only, rule=RULE) == 15.0
    # and its prohibitions are the ones obeyed
    assert decide({"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=60"}).reason == (
        "no-store"
    )
    assert decide({"CDN-Cache-Control": "private", "Cache-Control": "public"}).reason == "private"


@pytest.mark.parametrize("value", ["", " , ", "=5"])
def test_empty_or_unparseable_targeted_field_is_ignored(value: str) -> None:
    """RFC 9213 2.1: "If a targeted field in a given response is empty, or a parsing error is
    encountered, that field SHOULD be ignored by the cache (i.e., it should behave as if the
    field were not present, likely falling back to other cache-control mechanisms
    present)." """
    assert lifetime_of({"CDN-Cache-Control": value, "Cache-Control": "max-age=60"}) == 60.0


@pytest.mark.parametrize(
    "value",
    ["max-age=10000, &&&&&", 'max-age="10000"', "max-age =100", "max-age= 100", "MaX-aGe=100"],
)
def test_invalid_cdn_cache_control_falls_back_to_cache_control(value: str) -> None:
    """RFC 9213 2.1: CDN-Cache-Control is a Structured Field Dictionary; "If a targeted field
    in a given response is empty, or a parsing error is encountered, that field MUST be
    ignored by the cache (i.e., it behaves as if the field were not present, likely falling
    back to other cache-control mechanisms present)." Not half of it: all of it."""
    assert decide({"CDN-Cache-Control": value, "Cache-Control": "no-store"}).reason == "no-store"
    assert lifetime_of({"CDN-Cache-Control": value, "Cache-Control": "max-age=1"}) == 1.0
    # The next field in the target list then applies, before Cache-Control.
    both = {"CDN-Cache-Control": value, "Surrogate-Control": "max-age=20", "Expires": date(9)}
    assert lifetime_of(both) == 20.0
    d, source = policy.edge_directives(hdrs({"CDN-Cache-Control": value}))
    assert source == "cache-control" and not d


def test_valid_cdn_cache_control_wins() -> None:
    """RFC 9213 2.1: a cache that uses the field "MUST use them to determine the freshness
    lifetime" -- including with 11 digits (RFC 8941 integers have up to 15) and parameters
    on directives, which "are to be ignored"."""
    assert lifetime_of({"CDN-Cache-Control": "max-age=99999999999"}) == 2.0**31
    assert lifetime_of({"CDN-Cache-Control": "max-age=60;foo=1", "Cache-Control": "no-store"}) == 60
    assert lifetime_of({"CDN-Cache-Control": "foobar, max-age=3600"}) == 3600.0
    # Two lines are one dictionary, the last value of a key wins (RFC 8941 4.2, 4.2.2).
    two = [("CDN-Cache-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=60")]
    assert lifetime_of(two) == 60.0


def test_explicit_lifetime_none_without_information() -> None:
    d, source = policy.edge_directives(hdrs())
    assert explicit_lifetime(d, source, hdrs(), NOW) is None


# == 4.2.2 Heuristic freshness =============================================================


def test_heuristic_is_ten_percent_capped() -> None:
    """4.2.2: "If the response has a Last-Modified header field ..., caches are encouraged to
    use a heuristic expiration value that is no more than some fraction of the interval since
    that time. A typical setting of this fraction might be 10%." """
    defaults = Defaults(heuristic_max=3600)
    h = hdrs({"Date": date(), "Last-Modified": date(-1000)})
    assert heuristic_lifetime(200, h, NOW, defaults) == pytest.approx(100.0)
    h = hdrs({"Date": date(), "Last-Modified": date(-10 * DAY)})
    assert heuristic_lifetime(200, h, NOW, defaults) == 3600.0
    # no Date: the response time stands in
    assert heuristic_lifetime(200, hdrs({"Last-Modified": date(-1000)}), NOW, defaults) == (
        pytest.approx(100.0)
    )


def test_no_heuristic_without_usable_last_modified() -> None:
    d = Defaults()
    assert heuristic_lifetime(200, hdrs(), NOW, d) is None
    assert heuristic_lifetime(200, hdrs({"Last-Modified": "junk"}), NOW, d) is None
    future = hdrs({"Date": date(), "Last-Modified": date(10)})
    assert heuristic_lifetime(200, future, NOW, d) is None
    assert heuristic_lifetime(500, hdrs({"Last-Modified": date(-1000)}), NOW, d) is None


def test_no_heuristic_when_explicit() -> None:
    """4.2.2: "A cache MUST NOT use heuristics to determine freshness when an explicit
    expiration time is present in the stored response." """
    assert lifetime_of({"Cache-Control": "max-age=0", "Last-Modified": date(-DAY)}) == 0.0


# == 4.2.3 Age ============================================================================


def test_initial_age_arithmetic() -> None:
    """4.2.3: apparent_age = max(0, response_time - date_value); response_delay =
    response_time - request_time; corrected_age_value = age_value + response_delay;
    corrected_initial_age = max(apparent_age, corrected_age_value)."""
    # Date 10 s before the response arrived; the request took 2 s; Age: 5 -> max(10, 7)
    h = hdrs({"Date": date(-10), "Age": "5"})
    assert initial_age(h, NOW - 2, NOW) == 10.0
    # Age dominates: max(10, 30 + 2)
    h = hdrs({"Date": date(-10), "Age": "30"})
    assert initial_age(h, NOW - 2, NOW) == 32.0
    # a Date in the future (clock skew) never makes the age negative
    assert initial_age(hdrs({"Date": date(100)}), NOW, NOW) == 0.0
    assert initial_age(hdrs(), NOW - 1.5, NOW) == 1.5


@pytest.mark.parametrize("age", ["-5", "abc", "1.5", "7200.0", "²", "", "abc, 5", "+5", "0x10"])
def test_invalid_age_is_ignored(age: str) -> None:
    """5.1: "If the field value (after discarding additional members, as per above) is invalid
    (e.g., it contains something other than a non-negative integer), a cache SHOULD ignore
    the field." """
    assert policy.age_value(hdrs({"Age": age})) is None
    assert initial_age(hdrs({"Age": age}), NOW, NOW) == 0.0


@pytest.mark.parametrize(
    "lines",
    [
        [("Age", "7200, 0")],
        [("Age", "7200,0")],
        [("Age", "7200"), ("Age", "0")],
        [("Age", "7200, 7200")],
        [("Age", " , 7200")],  # an empty member is no member (RFC 9110 5.6.1)
        [("Age", ""), ("Age", "7200")],
    ],
)
def test_list_based_age_uses_its_first_member(lines: list[tuple[str, str]]) -> None:
    """5.1: "Although it is defined as a singleton header field, a cache encountering a
    message with a list-based Age field value SHOULD use the first member of the field value,
    discarding subsequent ones." Two field lines are one list (RFC 9110 5.3), whether the
    caller passes them as two values or joined with ", "."""
    assert policy.age_value(hdrs(lines)) == 7200
    assert initial_age(hdrs(lines), NOW, NOW) == 7200.0
    # So `max-age=3600` with `Age: 7200, 0` arrives stale and is revalidated.
    e = make_entry([("Cache-Control", "max-age=3600"), ("ETag", '"x"'), *lines])
    assert policy.reuse(e, cc(), NOW) is policy.Reuse.VALIDATE


def test_list_based_age_with_a_zero_first() -> None:
    assert policy.age_value(hdrs([("Age", "0"), ("Age", "7200")])) == 0
    assert policy.age_value(hdrs({"Age": "0, 7200"})) == 0
    assert policy.age_value(hdrs()) is None


def test_huge_age_clamps() -> None:
    """5.1 / 1.2.2: delta-seconds overflow is 2^31."""
    assert initial_age(hdrs({"Age": "9" * 50}), NOW, NOW) == 2.0**31
    assert initial_age(hdrs({"Age": "000000000000007"}), NOW, NOW) == 7.0


def test_current_age_adds_resident_time() -> None:
    """4.2.3: resident_time = now - response_time; current_age = corrected_initial_age +
    resident_time."""
    e = make_entry({"Cache-Control": "max-age=60", "Age": "20", "Date": date()})
    assert current_age(e, NOW) == 20.0
    assert current_age(e, NOW + 15) == 35.0
    assert current_age(e, NOW - 100) == 20.0  # a clock going back never lowers it
    assert policy.is_fresh(e, NOW + 39) and not policy.is_fresh(e, NOW + 40)


# == 5.2.1 Request directives ==============================================================


def test_parse_request_directives() -> None:
    r = cc("no-cache, max-age=5, min-fresh=3, only-if-cached, stale-if-error=9")
    assert (r.no_cache, r.max_age, r.min_fresh, r.only_if_cached, r.stale_if_error) == (
        True,
        5,
        3,
        True,
        9,
    )
    assert cc("no-store").no_store
    assert cc("ONLY-IF-CACHED").only_if_cached
    assert parse_request(hdrs()) == policy.RequestCacheControl()


def test_pragma_no_cache_only_without_cache_control() -> None:
    """5.4 (RFC 7234): "When the Cache-Control header field is not present in a request,
    caches MUST consider the no-cache request pragma-directive as having the same effect as
    if "Cache-Control: no-cache" were present." (RFC 9111 deprecates Pragma; kept.)"""
    assert cc(Pragma="no-cache").no_cache
    assert cc(Pragma="No-Cache, x").no_cache
    assert not cc("max-age=60", Pragma="no-cache").no_cache
    assert not cc(Pragma="x-no-cache-please").no_cache


def test_max_stale() -> None:
    """5.2.1.2: "The max-stale request directive indicates that the client will accept a
    response that has exceeded its freshness lifetime. If a value is present, then the client
    is willing to accept a response that has exceeded its freshness lifetime by no more than
    the specified number of seconds. If no value is assigned to max-stale, then the client
    will accept a stale response of any age." """
    assert cc("max-stale").max_stale == MAX_STALE_ANY
    assert cc("max-stale=30").max_stale == 30
    assert cc('max-stale="30"').max_stale == 30


@pytest.mark.parametrize("value", ["max-stale=abc", "max-stale=", "max-stale=-1", "max-stale=1.5"])
def test_invalid_max_stale_is_ignored_not_any(value: str) -> None:
    """An invalid value is not "no value": it must not widen into "any age"."""
    assert cc(value).max_stale is None


def test_invalid_request_numbers() -> None:
    assert cc("max-age=abc").max_age == 0  # conservative: nothing but a fresh-from-origin
    assert cc("min-fresh=abc").min_fresh is None
    assert cc("stale-if-error=-3").stale_if_error is None


# == 4 / 4.2.4 Reuse =======================================================================

NO = policy.RequestCacheControl()


def test_fresh_then_validate() -> None:
    """4: a stored response may be reused if it "is fresh"; 4.2.4: "A cache MUST NOT
    generate a stale response unless ... permitted"."""
    e = make_entry(FRESH60)
    assert reuse(e, NO, NOW + 59) is Reuse.FRESH
    # 4.2: "a response is fresh if its age has not yet exceeded its freshness lifetime" and
    # "fresh" is freshness_lifetime > current_age: at exactly 60 s it is stale, and without
    # a stale-while-revalidate window it is not served.
    assert reuse(e, NO, NOW + 60) is Reuse.VALIDATE
    assert not can_serve_stale_on_error(e, NO, NOW + 60)


def test_request_no_cache_validates() -> None:
    """5.2.1.4: "The no-cache request directive indicates that the client prefers that a
    stored response not be used to satisfy the request without successful validation on the
    origin server." """
    assert reuse(make_entry(FRESH60), cc("no-cache"), NOW) is Reuse.VALIDATE
    assert reuse(make_entry(FRESH60), cc(Pragma="no-cache"), NOW) is Reuse.VALIDATE


def test_request_max_age() -> None:
    """5.2.1.1: "The max-age request directive indicates that the client prefers a response
    whose age is less than or equal to the specified number of seconds." """
    e = make_entry(FRESH60)
    assert reuse(e, cc("max-age=10"), NOW + 10) is Reuse.FRESH
    assert reuse(e, cc("max-age=10"), NOW + 11) is Reuse.VALIDATE
    assert reuse(e, cc("max-age=0"), NOW + 1) is Reuse.VALIDATE


def test_request_min_fresh() -> None:
    """5.2.1.3: "The min-fresh request directive indicates that the client prefers a response
    whose freshness lifetime is no less than its current age plus the specified time in
    seconds." """
    e = make_entry(FRESH60)
    assert reuse(e, cc("min-fresh=20"), NOW + 40) is Reuse.FRESH
    assert reuse(e, cc("min-fresh=20"), NOW + 41) is Reuse.VALIDATE


def test_request_max_stale() -> None:
    e = make_entry(FRESH60)
    assert reuse(e, cc("max-stale=30"), NOW + 90) is Reuse.STALE_ALLOWED
    assert reuse(e, cc("max-stale=30"), NOW + 91) is Reuse.VALIDATE
    assert reuse(e, cc("max-stale"), NOW + 10 * DAY) is Reuse.STALE_ALLOWED
    assert reuse(e, cc("max-stale=abc"), NOW + 61) is Reuse.VALIDATE
    # max-age still limits the age
    assert reuse(e, cc("max-stale, max-age=70"), NOW + 71) is Reuse.VALIDATE


@pytest.mark.parametrize(
    "value", ["max-age=60, must-revalidate", "max-age=60, proxy-revalidate", "s-maxage=60"]
)
def test_must_revalidate_blocks_stale_reuse(value: str) -> None:
    """5.2.2.2: "once the response has become stale, a cache MUST NOT reuse that response to
    satisfy another request until it has been successfully validated by the origin"; 5.2.2.8
    proxy-revalidate: the same for shared caches; 5.2.2.10: s-maxage "incorporates the
    semantics of the proxy-revalidate response directive". 4.2.4: "A cache MUST NOT generate
    a stale response if it is prohibited by an explicit in-protocol directive"."""
    e = make_entry({"Cache-Control": f"{value}, stale-while-revalidate=600, stale-if-error=600"})
    assert reuse(e, NO, NOW + 59) is Reuse.FRESH
    assert reuse(e, cc("max-stale"), NOW + 61) is Reuse.VALIDATE
    assert reuse(e, NO, NOW + 61) is Reuse.VALIDATE  # no stale-while-revalidate either
    assert not can_serve_stale_on_error(e, NO, NOW + 61)
    assert not can_serve_stale_on_error(e, cc("stale-if-error=999"), NOW + 61)


def test_no_cache_response_always_validates() -> None:
    """5.2.2.4: "The no-cache response directive, in its unqualified form (without an
    argument), indicates that the response MUST NOT be used to satisfy any other request
    without forwarding it for validation and receiving a successful response" (the qualified
    form is treated the same: stricter, still correct). 4.2.4 names "a no-cache response
    directive" among those that forbid a stale response, so stale-if-error does not apply."""
    for value in ("no-cache, max-age=600", 'no-cache="Set-Cookie", max-age=600'):
        e = make_entry({"Cache-Control": value + ", stale-if-error=600", "ETag": '"a"'})
        assert reuse(e, NO, NOW) is Reuse.VALIDATE
        assert reuse(e, cc("max-stale"), NOW) is Reuse.VALIDATE
        assert not can_serve_stale_on_error(e, NO, NOW + 700)


def test_soft_purge_validates_but_stale_if_error_still_serves() -> None:
    """A soft-purged entry (entry.invalidated) is treated as stale: revalidate first; if the
    origin then fails, RFC 5861 stale-if-error may still use it."""
    e = make_entry({"Cache-Control": "max-age=600, stale-if-error=600"}, invalidated=True)
    assert reuse(e, NO, NOW) is Reuse.VALIDATE
    assert reuse(e, cc("max-stale"), NOW) is Reuse.VALIDATE
    assert not policy.is_fresh(e, NOW)
    assert can_serve_stale_on_error(e, NO, NOW + 1000)
    assert not can_serve_stale_on_error(e, NO, NOW + 1201)


def test_stale_while_revalidate_window() -> None:
    """RFC 5861 3: "indicates that caches MAY serve the response in which it appears after it
    becomes stale, up to the indicated number of seconds"."""
    e = make_entry({"Cache-Control": "max-age=60, stale-while-revalidate=30"})
    assert reuse(e, NO, NOW + 59) is Reuse.FRESH
    assert reuse(e, NO, NOW + 61) is Reuse.STALE_WHILE_REVALIDATE
    assert reuse(e, NO, NOW + 90) is Reuse.STALE_WHILE_REVALIDATE
    assert reuse(e, NO, NOW + 91) is Reuse.VALIDATE


def test_stale_while_revalidate_not_when_the_client_wants_fresh() -> None:
    """5.2.1.1 max-age: "Unless the max-stale request directive is also present, the client
    does not wish to receive a stale response"; 4.2.4: "A cache MUST NOT send stale responses
    unless ... explicitly permitted by the client or origin server"."""
    e = make_entry({"Cache-Control": "max-age=60, stale-while-revalidate=30"})
    assert reuse(e, cc("max-age=100"), NOW + 70) is Reuse.VALIDATE
    assert reuse(e, cc("min-fresh=1"), NOW + 70) is Reuse.VALIDATE
    assert reuse(e, cc("max-age=100, max-stale=20"), NOW + 70) is Reuse.STALE_ALLOWED


def test_stale_if_error_windows() -> None:
    """RFC 5861 4: "stale-if-error ... indicates that when an error is encountered, a cached
    stale response MAY be used to satisfy the request, regardless of other freshness
    information"; in a request, it says how stale the client accepts."""
    e = make_entry({"Cache-Control": "max-age=60, stale-if-error=100"})
    assert can_serve_stale_on_error(e, NO, NOW + 30)  # fresh: always
    assert can_serve_stale_on_error(e, NO, NOW + 160)
    assert not can_serve_stale_on_error(e, NO, NOW + 161)
    assert can_serve_stale_on_error(e, cc("stale-if-error=1000"), NOW + 1000)
    assert not can_serve_stale_on_error(e, cc("stale-if-error=0"), NOW + 61)
    bare = make_entry({"Cache-Control": "max-age=60"})
    assert not can_serve_stale_on_error(bare, NO, NOW + 61)
    defaults = make_entry({"Cache-Control": "max-age=60"}, defaults=Defaults(stale_if_error=DAY))
    assert can_serve_stale_on_error(defaults, NO, NOW + DAY)


# == 4.3 Validation =======================================================================


def test_validators_for() -> None:
    """4.3.1: "When generating a conditional request for validation, a cache ... MUST send the
    relevant entity tags (using If-Match, If-None-Match, or If-Range) if the entity tags were
    provided in the stored response(s) being validated" and "SHOULD send the Last-Modified
    value (using If-Modified-Since) if the request is not for a subrange, a single stored
    response is being validated, and that response contains a Last-Modified value"."""
    lm = date(-100)
    e = make_entry({**FRESH60, "ETag": 'W/"v1"', "Last-Modified": lm})
    assert validators_for(e) == {"If-None-Match": 'W/"v1"', "If-Modified-Since": lm}
    assert validators_for(make_entry(FRESH60)) == {}


def entry_v(**h: str) -> policy.Entry:
    return make_entry({**FRESH60, **{k.replace("_", "-"): v for k, v in h.items()}})


def test_freshen_strong_validator() -> None:
    """4.3.4: "If the new response contains a strong validator ..., then that strong
    validator identifies the selected representation for update. ... If none of the stored
    responses contain the same strong validator, then the cache MUST NOT use the new response
    to update any stored responses." """
    e = entry_v(ETag='"v1"')
    assert freshen_matches(e, hdrs({"ETag": '"v1"'}))
    assert not freshen_matches(e, hdrs({"ETag": '"v2"'}))
    assert not freshen_matches(entry_v(ETag='W/"v1"'), hdrs({"ETag": '"v1"'}))


def test_freshen_weak_validators() -> None:
    """4.3.4: "If the new response contains no strong validator but does contain one or more
    weak validators, and those validators correspond to one of the cache's stored responses,
    then the most recent of those matching stored responses is identified for update." """
    e = entry_v(ETag='W/"v1"', Last_Modified=date(-100))
    assert freshen_matches(e, hdrs({"ETag": 'W/"v1"'}))
    assert not freshen_matches(e, hdrs({"ETag": 'W/"v2"'}))
    assert freshen_matches(e, hdrs({"Last-Modified": date(-100)}))
    assert not freshen_matches(e, hdrs({"Last-Modified": date(-50)}))
    assert not freshen_matches(e, hdrs({"ETag": 'W/"v1"', "Last-Modified": date(-50)}))


def test_freshen_without_validator() -> None:
    """4.3.4: "If the new response does not include any form of validator ..., and there is
    only one stored response, and that stored response also lacks a validator, then that
    stored response is identified for update." """
    assert freshen_matches(entry_v(), hdrs())
    assert not freshen_matches(entry_v(ETag='"v1"'), hdrs())
    assert not freshen_matches(entry_v(Last_Modified=date(-100)), hdrs())


def test_merged_headers_on_304() -> None:
    """3.2: "the cache MUST add each header field in the provided response to the stored
    response, replacing field values that are already present, with the following
    exceptions: Header fields excepted from storage in Section 3.1, ... The Content-Length
    header field." (Content-Encoding and Content-Range describe the stored body: kept.)"""
    stored = (
        ("Content-Type", "text/plain"),
        ("Content-Length", "5"),
        ("Content-Encoding", "gzip"),
        ("Cache-Control", "max-age=60"),
        ("ETag", '"v1"'),
        ("X-Multi", "a"),
        ("X-Multi", "b"),
    )
    update = [
        ("Cache-Control", "max-age=600"),
        ("Content-Length", "0"),
        ("Content-Encoding", "br"),
        ("Content-Range", "bytes 0-0/5"),
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Authentication-Info", "x"),
        ("X-Multi", "c"),
        ("X-Multi", "d"),
        ("ETag", '"v1"'),
        ("X-New", "n"),
    ]
    merged = merged_headers(stored, update)
    m = hdrs(list(merged))
    assert m.getall("Cache-Control") == ["max-age=600"]
    assert m["Content-Length"] == "5" and m["Content-Encoding"] == "gzip"
    assert m.getall("X-Multi") == ["c", "d"]
    assert m["X-New"] == "n" and m["Content-Type"] == "text/plain"
    for gone in (
        "Content-Range",
        "Connection",
        "X-Hop",
        "Keep-Alive",
        "Transfer-Encoding",
        "Proxy-Authenticate",
        "Proxy-Authentication-Info",
    ):
        assert gone not in m, gone


def test_freshened_entry_as_the_fetcher_builds_it() -> None:
    """4.3.4: "the cache ... MUST ... use other header fields provided in the 304 (Not
    Modified) response to replace all instances of the corresponding header fields in the
    stored response", then the freshness is computed anew."""
    e = make_entry({"Cache-Control": "max-age=60", "ETag": '"v1"', "Date": date()})
    merged = merged_headers(e.headers, [("Cache-Control", "max-age=600"), ("Date", date(100))])
    later = make_entry(list(merged), response_time=NOW + 100)
    assert reuse(later, NO, NOW + 650) is Reuse.FRESH


# -- client conditionals (RFC 9110 13.2.2, RFC 9111 4.3.2) --------------------------------


def nm(entry: policy.Entry, **h: str) -> bool:
    return not_modified_for(hdrs({k.replace("_", "-"): v for k, v in h.items()}), entry)


def test_if_none_match_weak_comparison() -> None:
    """RFC 9110 13.1.2: "A recipient MUST use the weak comparison function when comparing
    entity tags for If-None-Match"."""
    e = entry_v(ETag='"v1"')
    assert nm(e, If_None_Match='"v1"')
    assert nm(e, If_None_Match='W/"v1"')
    assert nm(entry_v(ETag='W/"v1"'), If_None_Match='"v1"')
    assert nm(e, If_None_Match='"x", "v1"')
    assert not nm(e, If_None_Match='"v2"')
    assert not nm(entry_v(), If_None_Match='"v1"')


def test_if_none_match_commas_inside_tags() -> None:
    """RFC 9110 8.8.3: etagc = "!" / %x23-7E / obs-text -- the comma is allowed inside."""
    e = entry_v(ETag='"a,b"')
    assert nm(e, If_None_Match='"x", "a,b"')
    assert not nm(e, If_None_Match='"a"')


def test_if_none_match_star() -> None:
    """RFC 9110 13.1.2: "If the field value is "*", the condition is false if the origin
    server has a current representation for the target resource." """
    assert nm(entry_v(), If_None_Match="*")


def test_if_none_match_wins_over_if_modified_since() -> None:
    """RFC 9110 13.1.3: "A recipient MUST ignore If-Modified-Since if the request contains an
    If-None-Match header field"."""
    e = entry_v(ETag='"v1"', Last_Modified=date(-100))
    assert not nm(e, If_None_Match='"v2"', If_Modified_Since=date())


def test_if_modified_since() -> None:
    """RFC 9111 4.3.2: a 304 if "the selected stored response has a Last-Modified field value
    that is earlier than or equal to the conditional timestamp; no Last-Modified field is
    present in the selected stored response, but it has a Date field value that is earlier
    than or equal to the conditional timestamp; or neither Last-Modified nor Date is present
    in the selected stored response, but the cache recorded it as having been received at a
    time earlier than or equal to the conditional timestamp"."""
    e = entry_v(Last_Modified=date(-100))
    assert nm(e, If_Modified_Since=date(-100))
    assert nm(e, If_Modified_Since=date(-50))
    assert not nm(e, If_Modified_Since=date(-101))
    dated = make_entry({"Cache-Control": "max-age=60", "Date": date(-10)})
    assert nm(dated, If_Modified_Since=date(-10))
    assert not nm(dated, If_Modified_Since=date(-11))
    bare = make_entry({"Cache-Control": "max-age=60"})
    assert nm(bare, If_Modified_Since=date())
    assert not nm(bare, If_Modified_Since=date(-1))


def test_if_modified_since_on_a_fresh_answer_without_last_modified() -> None:
    """RFC 9110 13.1.3: the origin "SHOULD generate a 304 (Not Modified) response" when "the
    selected representation's last modification date is earlier or equal to the date
    provided in the field value"; with no Last-Modified, RFC 9111 4.3.2 judges with the
    stored Date ("no Last-Modified field is present in the selected stored response, but it
    has a Date field value that is earlier than or equal to the conditional timestamp")."""
    fresh = make_entry({"Cache-Control": "max-age=600", "Date": date(-100)})
    assert policy.reuse(fresh, cc(), NOW) is policy.Reuse.FRESH
    assert nm(fresh, If_Modified_Since=date(-100))  # the Date the client was given
    assert nm(fresh, If_Modified_Since=date())
    assert not nm(fresh, If_Modified_Since=date(-101))
    # The Date in the other two formats, and in any case, is the same timestamp.
    day, dd, mon, yyyy, hms, _ = date(-100).split()
    long_day = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday"}
    long_day |= {"Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}
    rfc850 = f"{long_day[day[:3]]}, {dd}-{mon}-{yyyy[2:]} {hms} GMT"
    assert nm(fresh, If_Modified_Since=rfc850)
    assert nm(fresh, If_Modified_Since=date(-100).upper())
    # An invalid Last-Modified is no Last-Modified: the Date decides.
    bad_lm = make_entry(
        {"Cache-Control": "max-age=600", "Date": date(-100), "Last-Modified": "yesterday"}
    )
    assert nm(bad_lm, If_Modified_Since=date(-100))
    # A Date at the epoch is a date, not "no Date".
    epoch = make_entry({"Cache-Control": "max-age=600", "Date": format_http_date(0.0)})
    assert nm(epoch, If_Modified_Since=format_http_date(0.0))


def test_if_modified_since_with_two_members_is_ignored() -> None:
    """RFC 9110 13.1.3: "A recipient MUST ignore the If-Modified-Since header field if ... the
    field value has more than one member"; two field lines are two members (RFC 9110 5.3)."""
    e = entry_v(Last_Modified=date(-100))
    two = hdrs([("If-Modified-Since", date()), ("If-Modified-Since", date())])
    assert not not_modified_for(two, e)


@pytest.mark.parametrize(
    "ims",
    [
        "yesterday",
        "0",
        f"{date(-5)}, {date(-4)}",
        "Tue, 14 Nov 2023 22:13:20 UTC",  # not an HTTP-date (RFC 9110 5.6.7)
        "Tue, 14 Nov 23 22:13:20 GMT",
    ],
)
def test_invalid_if_modified_since_is_ignored(ims: str) -> None:
    """RFC 9110 13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the
    received field value is not a valid HTTP-date, the field value has more than one
    member"."""
    assert not nm(entry_v(Last_Modified=date(-100)), If_Modified_Since=ims)


def test_no_conditionals() -> None:
    assert not nm(entry_v(ETag='"v1"'))


# == 4.4 Invalidation ======================================================================

HOST = "shop.example"


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE"])
def test_safe_methods_invalidate_nothing(method: str) -> None:
    assert invalidation_targets(method, 200, "/a", {}, HOST) == []


@pytest.mark.parametrize("status", [100, 199, 400, 404, 500, 503])
def test_errors_invalidate_nothing(status: int) -> None:
    """4.4: "A cache MUST invalidate the target URI ... when it receives a non-error status
    code in response to an unsafe request method (including methods whose safety is
    unknown)." Non-error: 2xx and 3xx."""
    assert invalidation_targets("POST", status, "/a", {"Location": "/b"}, HOST) == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PURGE-ISH"])
@pytest.mark.parametrize("status", [200, 204, 301, 399])
def test_unsafe_success_invalidates_the_target(method: str, status: int) -> None:
    assert invalidation_targets(method, status, "/a?x=1", {}, HOST) == ["/a?x=1"]


def test_location_and_content_location_same_origin_only() -> None:
    """4.4: "A cache MAY invalidate other URIs ... the URI(s) in the Location and
    Content-Location response header fields (if present) ... However, a cache MUST NOT
    trigger an invalidation under these conditions if the origin (Section 4.3.1 of [HTTP]) of
    the URI to be invalidated differs from that of the target URI"."""
    h = {"Location": "/orders/7", "Content-Location": "http://shop.example/orders/7?v=2#x"}
    assert invalidation_targets("POST", 201, "/orders", h, HOST) == [
        "/orders",
        "/orders/7",
        "/orders/7?v=2",
    ]
    for other in (
        "http://evil.example/orders",
        "//evil.example/orders",
        "https://shop.example/orders/1",  # another scheme is another origin
        "http://shop.example:8080/x",
        "http://user@shop.example/x",
        "mailto:a@shop.example",
    ):
        assert invalidation_targets("POST", 201, "/orders", {"Location": other}, HOST) == [
            "/orders"
        ], other
    # the default port is the same origin
    assert invalidation_targets(
        "POST", 201, "/o", {"Location": "http://SHOP.example:80/p"}, HOST
    ) == ["/o", "/p"]


def test_relative_references_resolve_against_the_target() -> None:
    """RFC 9110 10.2.2: "If the Location value is a relative reference, ... the final value
    is computed by resolving it against the target URI"."""
    assert invalidation_targets("POST", 303, "/shop/cart?a=1", {"Location": "checkout"}, HOST) == [
        "/shop/cart?a=1",
        "/shop/checkout",
    ]
    assert invalidation_targets("POST", 303, "/shop/cart", {"Location": "../x?y=1"}, HOST) == [
        "/shop/cart",
        "/x?y=1",
    ]


# == properties ==========================================================================

HEADER_NAMES = st.sampled_from(
    [
        "Cache-Control",
        "CDN-Cache-Control",
        "Surrogate-Control",
        "Expires",
        "Date",
        "Age",
        "Last-Modified",
        "ETag",
        "Vary",
        "Pragma",
    ]
)


@given(
    st.lists(st.tuples(HEADER_NAMES, st.text(max_size=40)), max_size=6),
    st.lists(st.tuples(HEADER_NAMES, st.text(max_size=40)), max_size=4),
    st.integers(100, 599),
)
def test_decide_store_and_reuse_never_raise(
    response: list[tuple[str, str]], request: list[tuple[str, str]], status: int
) -> None:
    d = decide(response, status=status, request=request)
    assert d.lifetime >= 0 and d.stale_if_error >= 0 and d.stale_while_revalidate >= 0
    req = parse_request(hdrs(request))
    if d.store:
        e = make_entry(response, status=status, request=request)
        for dt in (0, 1, 100, 10_000):
            reuse(e, req, NOW + dt)
            can_serve_stale_on_error(e, req, NOW + dt)
            not_modified_for(hdrs(request), e)


def test_store_decision_meta_is_what_entries_carry() -> None:
    d = decide({"Cache-Control": "max-age=60, must-revalidate, no-cache"})
    meta = d.meta(3.0)
    assert meta == {"lifetime": 60.0, "age0": 3.0, "swr": 0.0, "sie": 0.0, "mr": 1.0, "nc": 1.0}
    assert dataclasses.replace(d, stale_if_error=10).keep_seconds() >= 70


def test_a_coded_answer_varies_on_accept_encoding_even_when_it_does_not_say_so() -> None:
    """RFC 9110 12.5.3: the origin chose the coding from this client's Accept-Encoding; kept
    for every client, it would reach clients that cannot decode it."""
    assert policy.vary_names(hdrs(content_encoding="gzip")) == ("accept-encoding",)
    assert policy.vary_names(hdrs(content_encoding="br", vary="Accept-Language")) == (
        "accept-language",
        "accept-encoding",
    )
    assert policy.vary_names(hdrs(content_encoding="gzip", vary="Accept-Encoding")) == (
        "accept-encoding",
    )
    assert policy.vary_names(hdrs(content_encoding="identity")) == ()
    assert policy.vary_names(hdrs(vary="Cookie")) == ("cookie",)
