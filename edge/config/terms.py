"""What the configuration says about freshness: a rule's terms and the edge-wide defaults,
plain values that the caching rules (`edge.cache.policy`) take."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuleTerms:
    """What a config rule says about freshness, for origins that send no caching headers."""

    ttl: float | None = None
    rule_wins: bool = False
    """True: the rule's TTL replaces the origin's freshness. False: only fills in when absent."""
    stale_while_revalidate: float | None = None
    stale_if_error: float | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    """Edge-wide defaults (config `defaults:`)."""

    stale_if_error: float = 0.0
    stale_while_revalidate: float = 0.0
    heuristic_max: float = 86400.0
    keep: float = 3600.0
    """How long past its stale windows a response with a validator is kept for revalidation
    (Varnish's `beresp.keep`): a conditional request and a 304 instead of the whole body."""
