"""What one worker measures about the answers it sends, beyond `edge.base.stats`' counters:
latency histograms by cache path (hit, miss, pass) and the most requested URLs.

`Observer.answered` runs once per answer (the engine's `log` hook), hits included, so it
does a handful of dict and list operations and nothing else. Everything here is
per-process and synchronous; `edge.ops.nodeview` sums what the workers of a node publish.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the latency histograms' buckets; +Inf is implied. From 0.1 ms
(a hit from the worker's hot copy) to 30 s (a 5 MB image at a throttled origin)."""

PATHS = ("hit", "miss", "pass")
PATH_OF = {
    "HIT": "hit",
    "STALE": "hit",
    "MISS": "miss",
    "EXPIRED": "miss",
    "REVALIDATED": "miss",
    "BYPASS": "pass",
}
"""Which histogram an X-Cache verdict goes to: served from cache, fetched for the cache
(a revalidation is a round trip to the origin), or passed through."""

TOP_KEEP = 2000
"""URLs counted per worker; past twice this, the counters keep their TOP_KEEP largest."""
TOP_BYTES = 512 << 10
"""Bytes of URLs counted per worker (a client's long, distinct targets): past it, the
counters keep their largest within half of it each."""
TOP_PUBLISH = 20
"""URLs per list in a published snapshot."""


class Histogram:
    """Cumulative-at-export histogram: per-bucket counts, their sum and count."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": round(self.sum, 6)}


class Observer:
    """One worker's latency histograms and URL counters."""

    def __init__(self) -> None:
        self.latency = {p: Histogram() for p in PATHS}
        self.hit_counts = self.latency["hit"].counts  # the hit path's bucket, looked up once
        self.url_hits: Counter[str] = Counter()
        """Answers served from cache (HIT, STALE), by request target."""
        self.url_bytes: Counter[str] = Counter()
        """Body bytes sent, by request target (every verdict)."""
        self.url_key_bytes = 0  # the targets' lengths in the counters (counted high)

    def answered(self, target: str, x_cache: str, size: int, seconds: float) -> None:
        path = PATH_OF.get(x_cache)
        if path is None:  # "-": an answer of the edge's own (421, 400...)
            return
        self.latency[path].observe(seconds)
        url_hits, url_bytes = self.url_hits, self.url_bytes
        new = target not in url_bytes and target not in url_hits
        if path == "hit":
            url_hits[target] += 1
        elif not size:
            return
        if size:
            url_bytes[target] += size
        if new:
            self.url_key_bytes += len(target)
            if self._over():
                self.trim()

    def hit(self, target: str, size: int, n: int = 1) -> None:
        """`n` fresh hits on `target`, `size` body bytes in all, answered in the loop turn
        their requests were parsed in: their latency is far under the first bucket
        (100 µs), so no clock is read for them."""
        self.hit_counts[0] += n
        url_hits = self.url_hits
        before = url_hits.get(target)
        url_hits[target] = n if before is None else before + n
        if size:
            self.url_bytes[target] += size
        if before is None:  # only a new URL can grow the counters past their bound
            self.url_key_bytes += len(target)
            if self._over():
                self.trim()

    def _over(self) -> bool:
        return (
            len(self.url_hits) > 2 * TOP_KEEP
            or len(self.url_bytes) > 2 * TOP_KEEP
            or self.url_key_bytes > TOP_BYTES
        )

    def trim(self) -> None:
        self.url_hits = _largest(self.url_hits)
        self.url_bytes = _largest(self.url_bytes)
        self.url_key_bytes = sum(len(k) for k in self.url_hits.keys() | self.url_bytes.keys())

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency": {p: h.as_dict() for p, h in self.latency.items()},
            "top_hits": self.url_hits.most_common(TOP_PUBLISH),
            "top_bytes": self.url_bytes.most_common(TOP_PUBLISH),
        }


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a histogram's bucket counts, interpolated inside its bucket as
    Prometheus' histogram_quantile does (None when empty; the last finite bound when it
    falls in +Inf)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n:
            if i == len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            low = LATENCY_BUCKETS[i - 1] if i else 0.0
            high = LATENCY_BUCKETS[i]
            return low + (high - low) * (rank - seen) / n
        seen += n
    return LATENCY_BUCKETS[-1]


def _largest(counter: Counter[str]) -> Counter[str]:
    """`counter`'s TOP_KEEP largest, within TOP_BYTES / 2 of targets."""
    kept: Counter[str] = Counter()
    size = 0
    for key, n in counter.most_common(TOP_KEEP):
        size += len(key)
        if size > TOP_BYTES // 2:
            break
        kept[key] = n
    return kept
