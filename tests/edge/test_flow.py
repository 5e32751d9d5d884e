"""The flow core (edge/cache/flow.py) on its own: what `recv` and `lookup` decide, as plain data.

No server, no clock: entries are built the way the fetcher builds them, `now` is passed in."""

from __future__ import annotations

from edge.cache import flow, policy
from edge.config.settings import Rule, load_config
from tests.edge.conftest import EDGE_YAML
from tests.edge.core_helpers import NOW, hdrs, make_entry

CFG = load_config(EDGE_YAML)
PLAIN = policy.RequestCacheControl()
TTL_RULE = Rule(match="/api/*", terms=policy.RuleTerms(ttl=30.0))


def rcc(value: str) -> policy.RequestCacheControl:
    return policy.parse_request(hdrs(cache_control=value))


# -- recv: before the cache ---------------------------------------------------------------


def test_admin_paths_are_the_edges_own_whatever_the_method() -> None:
    assert flow.recv("GET", "/_edge/stats", CFG) == flow.Admin("/_edge/stats")
    assert flow.recv("POST", "/_edge/purge?x=1", CFG) == flow.Admin("/_edge/purge")


def test_connect_is_refused_with_allow_and_the_connection_closes() -> None:
    route = flow.recv("CONNECT", "example.com:443", CFG)
    assert isinstance(route, flow.Reject)
    assert (route.status, route.close) == (405, True)
    assert "GET" in route.allow and "CONNECT" not in route.allow


def test_options_asterisk_asks_about_the_server() -> None:
    route = flow.recv("OPTIONS", "*", CFG)
    assert isinstance(route, flow.Reject) and route.status == 200 and route.allow


def test_purge_method_and_writes() -> None:
    assert flow.recv("PURGE", "/x", CFG) == flow.Purge()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert flow.recv(method, "/api/products", CFG) == flow.Pass("method")


def test_the_lookup_target_is_what_the_key_says() -> None:
    """A parameter the key ignores never reaches the origin on a shared fetch."""
    a = flow.recv("GET", "/api/misc/heavy?name=a&utm_source=x", CFG)
    b = flow.recv("GET", "/api/misc/heavy?utm_source=y&name=a", CFG)
    assert isinstance(a, flow.Lookup) and isinstance(b, flow.Lookup)
    assert a.key == b.key
    assert a.target == b.target


def test_a_get_behind_which_a_write_sits_is_not_a_lookup() -> None:
    """`/api/products?product=` adds a product: the config bypasses it."""
    assert flow.recv("GET", "/api/products?product=toy", CFG) == flow.Pass("bypass")


# -- lookup: after the cache --------------------------------------------------------------


def test_fresh_hit_stale_and_revalidation() -> None:
    entry = make_entry({"Cache-Control": "max-age=60, stale-while-revalidate=30"})
    fresh = flow.lookup("GET", False, PLAIN, TTL_RULE, entry, True, True, NOW + 10)
    assert fresh == flow.Hit(entry, "HIT")
    swr = flow.lookup("GET", False, PLAIN, TTL_RULE, entry, True, True, NOW + 70)
    assert isinstance(swr, flow.Hit) and swr.x_cache == "STALE" and swr.refresh
    late = flow.lookup("GET", False, PLAIN, TTL_RULE, entry, True, True, NOW + 200)
    assert isinstance(late, flow.Miss) and late.stale is entry and late.fwd == "stale"


def test_the_clients_no_cache_revalidates_a_fresh_copy() -> None:
    entry = make_entry({"Cache-Control": "max-age=60"})
    decision = flow.lookup("GET", False, rcc("no-cache"), TTL_RULE, entry, True, True, NOW + 1)
    assert isinstance(decision, flow.Miss) and decision.fwd == "request"


def test_only_if_cached_without_a_copy_is_a_504() -> None:
    decision = flow.lookup("GET", False, rcc("only-if-cached"), TTL_RULE, None, False, False, NOW)
    assert isinstance(decision, flow.Reject) and decision.status == 504


def test_a_cold_head_or_range_on_something_cacheable_becomes_a_filling_get() -> None:
    for method, has_range in (("HEAD", False), ("GET", True)):
        decision = flow.lookup(method, has_range, PLAIN, TTL_RULE, None, False, False, NOW)
        assert decision == flow.Miss("uri-miss", None, collapse=True, fill=True)


def test_a_head_on_what_nothing_says_is_cacheable_passes_through() -> None:
    """No rule TTL, nothing stored, never stored before: a HEAD is never turned into a GET
    (it may be a write behind a GET)."""
    decision = flow.lookup("HEAD", False, PLAIN, flow.NO_RULE, None, False, False, NOW)
    assert decision == flow.Pass("method")
    ranged = flow.lookup("GET", True, PLAIN, flow.NO_RULE, None, False, False, NOW)
    assert ranged == flow.Pass("range")


def test_misses_collapse_only_when_expected_to_be_shareable() -> None:
    unknown = flow.lookup("GET", False, PLAIN, flow.NO_RULE, None, False, False, NOW)
    assert isinstance(unknown, flow.Miss) and not unknown.collapse
    known = flow.lookup("GET", False, PLAIN, flow.NO_RULE, None, False, True, NOW)
    assert isinstance(known, flow.Miss) and known.collapse
    other_variant = flow.lookup("GET", False, PLAIN, TTL_RULE, None, True, False, NOW)
    assert isinstance(other_variant, flow.Miss) and other_variant.fwd == "vary-miss"


def test_a_follower_shares_only_a_stored_answer_of_the_same_variant() -> None:
    stored = policy.StoreDecision(store=True)
    not_stored = policy.StoreDecision(store=False)
    en, fr = (("accept-language", "en"),), (("accept-language", "fr"),)
    assert flow.may_share_with_follower(stored, en, en)
    assert not flow.may_share_with_follower(stored, en, fr)
    assert not flow.may_share_with_follower(not_stored, en, en)


def test_stale_if_error_picks_the_first_copy_allowed_to_stand_in() -> None:
    no = make_entry({"Cache-Control": "max-age=1"})
    yes = make_entry({"Cache-Control": "max-age=1, stale-if-error=600"})
    assert flow.stale_on_error([no, yes], PLAIN, NOW + 60) is yes
    assert flow.stale_on_error([no], PLAIN, NOW + 60) is None


def test_wants_304_matches_the_stored_validator() -> None:
    entry = make_entry({"Cache-Control": "max-age=60", "ETag": '"v1"'})
    assert flow.wants_304(hdrs(if_none_match='"v1"'), entry)
    assert not flow.wants_304(hdrs(if_none_match='"v2"'), entry)
