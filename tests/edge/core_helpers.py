"""Helpers for the unit tests of the caching core: build entries the way the fetcher does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multidict import CIMultiDict

from edge.cache import policy
from edge.cache.entry import Entry
from edge.cache.keys import vary_values
from edge.http.httpdate import format_http_date

NOW = 1_700_000_000.0  # a fixed "now" (2023-11-14): tests never read the clock
HeaderSpec = Mapping[str, str] | Sequence[tuple[str, str]]


def hdrs(spec: HeaderSpec | None = None, /, **named: str) -> CIMultiDict[str]:
    """Headers from a mapping, a list of pairs (for repeated fields), or keywords
    (`cache_control="max-age=60"` is `Cache-Control: max-age=60`)."""
    out: CIMultiDict[str] = CIMultiDict()
    if spec is not None:
        pairs = spec.items() if isinstance(spec, Mapping) else spec
        for k, v in pairs:
            out.add(k, v)
    for k, v in named.items():
        out.add(k.replace("_", "-"), v)
    return out


def date(offset: float = 0.0) -> str:
    """An IMF-fixdate `offset` seconds from NOW."""
    return format_http_date(NOW + offset)


def decide(
    response: HeaderSpec | None = None,
    *,
    status: int = 200,
    method: str = "GET",
    request: HeaderSpec | None = None,
    rule: policy.RuleTerms | None = None,
    defaults: policy.Defaults | None = None,
    response_time: float = NOW,
) -> policy.StoreDecision:
    return policy.decide_store(
        method,
        status,
        hdrs(request),
        hdrs(response),
        rule or policy.RuleTerms(),
        defaults or policy.Defaults(stale_if_error=0.0, stale_while_revalidate=0.0),
        response_time,
    )


def make_entry(
    response: HeaderSpec | None = None,
    *,
    status: int = 200,
    body: bytes = b"hello",
    request: HeaderSpec | None = None,
    rule: policy.RuleTerms | None = None,
    defaults: policy.Defaults | None = None,
    request_time: float | None = None,
    response_time: float = NOW,
    key: str = "/thing",
    invalidated: bool = False,
) -> Entry:
    """headers -> decide_store -> Entry, exactly as edge/upstream/fetch.py `_consume` does.

    Fails the test if the response would not be stored (a test building an entry means it).
    """
    rh = hdrs(response)
    req = hdrs(request)
    decision = policy.decide_store(
        "GET",
        status,
        req,
        rh,
        rule or policy.RuleTerms(),
        defaults or policy.Defaults(stale_if_error=0.0, stale_while_revalidate=0.0),
        response_time,
    )
    assert decision.store, f"test response not storable: {decision.reason}"
    rq = response_time if request_time is None else request_time
    meta = decision.meta(policy.initial_age(rh, rq, response_time))
    meta["keep"] = decision.keep_seconds()
    return Entry(
        key=key,
        status=status,
        headers=tuple(rh.items()),
        body=body,
        request_time=rq,
        response_time=response_time,
        vary=vary_values(policy.vary_names(rh), req),
        invalidated=invalidated,
        meta=meta,
    )


def cc(value: str | None = None, **named: str) -> policy.RequestCacheControl:
    """The request directives of `Cache-Control: value` (plus other request headers)."""
    h = hdrs(**named)
    if value is not None:
        h.add("Cache-Control", value)
    return policy.parse_request(h)
