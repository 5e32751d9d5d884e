"""Counters of one edge process. `edge.ops.nodeview` sums every worker's; /_edge/stats shows the
sums as JSON and `edge.ops.metrics` as Prometheus text."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

# X-Cache values, in the order they are reported.
CACHE_RESULTS = ("HIT", "MISS", "STALE", "REVALIDATED", "EXPIRED", "BYPASS")


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    counted: Counter[str] = field(default_factory=Counter)
    hits: int = 0
    """Fresh hits, counted apart: the hit path adds one integer."""
    origin_fetches: int = 0
    origin_errors: Counter[str] = field(default_factory=Counter)
    origin_seconds: float = 0.0
    collapsed: int = 0
    stored: int = 0
    bytes_served: int = 0
    purges: Counter[str] = field(default_factory=Counter)
    """Purge requests this node took (API, PURGE, invalidations), by kind."""
    purged_entries: int = 0
    """Entries removed or marked stale in this node's memory, by any purge."""
    purge_failures: int = 0
    """Purges taken while the shared tier was unreachable (applied on this node only)."""
    bus_purges: Counter[str] = field(default_factory=Counter)
    """Purges announced by other nodes and applied here from the bus, by kind (plus
    "resync" and "blind", the bus's own safety purges)."""
    bus_purged_entries: int = 0
    background_refreshes: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def record(self, result: str, nbytes: int) -> None:
        self.counted[result] += 1
        self.bytes_served += nbytes

    @property
    def results(self) -> Counter[str]:
        """Answers by X-Cache value."""
        out = self.counted.copy()
        out["HIT"] += self.hits
        return out

    @property
    def requests(self) -> int:
        return self.hits + sum(self.counted.values())

    def as_dict(self, memory: dict[str, int], redis: dict[str, object]) -> dict[str, object]:
        results = self.results
        hits = results["HIT"] + results["STALE"] + results["REVALIDATED"]
        lookups = hits + results["MISS"] + results["EXPIRED"]
        return {
            "uptime_seconds": round(time.time() - self.started, 1),
            "requests": self.requests,
            "hits": hits,
            "misses": self.results["MISS"] + self.results["EXPIRED"],
            "hit_ratio": round(hits / lookups, 4) if lookups else 0.0,
            "results": {k: self.results[k] for k in CACHE_RESULTS},
            "bytes_served": self.bytes_served,
            "origin_fetches": self.origin_fetches,
            "origin_seconds": round(self.origin_seconds, 6),
            "origin_errors": dict(self.origin_errors),
            "collapsed": self.collapsed,
            "stored": self.stored,
            "background_refreshes": self.background_refreshes,
            "purges": dict(self.purges),
            "purged_entries": self.purged_entries,
            "purge_failures": self.purge_failures,
            "bus_purges": dict(self.bus_purges),
            "bus_purged_entries": self.bus_purged_entries,
            "memory": memory,
            "redis": redis,
        }
