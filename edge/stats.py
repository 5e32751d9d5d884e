"""Counters of one edge process, shown by /_edge/stats (JSON) and /_edge/metrics (Prometheus)."""

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

    def prometheus(self, node: str, memory: dict[str, int], redis_up: int) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        label = f'node="{_escape(node)}"'
        lines: list[str] = []
        results = self.results

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                all_labels = f"{label},{labels}" if labels else label
                lines.append(f"{name}{{{all_labels}}} {value}")

        metric(
            "edge_requests_total",
            "counter",
            "Requests answered, by X-Cache result.",
            [(f'result="{k}"', results[k]) for k in CACHE_RESULTS],
        )
        metric("edge_bytes_served_total", "counter", "Body bytes sent.", [("", self.bytes_served)])
        metric(
            "edge_origin_fetches_total",
            "counter",
            "Requests sent to the origin.",
            [("", self.origin_fetches)],
        )
        metric(
            "edge_origin_errors_total",
            "counter",
            "Origin failures, by kind.",
            [(f'kind="{_escape(k)}"', v) for k, v in sorted(self.origin_errors.items())],
        )
        metric(
            "edge_origin_seconds_total",
            "counter",
            "Time spent waiting for origin headers.",
            [("", round(self.origin_seconds, 6))],
        )
        metric(
            "edge_collapsed_total",
            "counter",
            "Requests that waited for another's fetch.",
            [("", self.collapsed)],
        )
        metric("edge_stored_total", "counter", "Responses stored.", [("", self.stored)])
        metric(
            "edge_purges_total",
            "counter",
            "Purge requests, by kind.",
            [(f'kind="{_escape(k)}"', v) for k, v in sorted(self.purges.items())],
        )
        metric(
            "edge_purged_entries_total",
            "counter",
            "Entries removed or marked stale by purges.",
            [("", self.purged_entries)],
        )
        metric(
            "edge_purge_failures_total",
            "counter",
            "Purges applied on this node only: the shared tier was unreachable.",
            [("", self.purge_failures)],
        )
        metric(
            "edge_bus_purges_total",
            "counter",
            "Purges of other nodes applied from the purge bus, by kind.",
            [(f'kind="{_escape(k)}"', v) for k, v in sorted(self.bus_purges.items())],
        )
        metric(
            "edge_bus_purged_entries_total",
            "counter",
            "Entries removed or marked stale by purges from the bus.",
            [("", self.bus_purged_entries)],
        )
        metric(
            "edge_memory_entries",
            "gauge",
            "Entries in the memory tier.",
            [("", memory.get("entries", 0))],
        )
        metric(
            "edge_memory_bytes",
            "gauge",
            "Bytes in the memory tier.",
            [("", memory.get("bytes", 0))],
        )
        metric("edge_redis_up", "gauge", "1 when the shared Redis tier answers.", [("", redis_up)])
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
