"""Numbers: exact percentiles, an HdrHistogram-style log-bucket histogram, a Zipf sampler."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Sequence

PERCENTILES = (
    0.0,
    10.0,
    25.0,
    50.0,
    75.0,
    90.0,
    95.0,
    99.0,
    99.5,
    99.9,
    99.95,
    99.99,
    100.0,
)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (p in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    if p <= 0:
        return sorted_values[0]
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def percentiles(
    values: Iterable[float], ps: Sequence[float] = PERCENTILES
) -> list[tuple[float, float]]:
    ordered = sorted(values)
    if not ordered:
        return []
    return [(p, percentile(ordered, p)) for p in ps]


class LogHistogram:
    """Counts values in buckets whose width grows with the value (as HdrHistogram does).

    Integers below 2**(sub_bits+1) are counted exactly; above, a bucket spans 2**shift
    values where shift grows by one per power of two, so every value is known to within
    a relative error of 2**-(sub_bits+1) (0.4 % for sub_bits=7) in constant memory.
    Record in a fixed unit (the load test records microseconds).
    """

    def __init__(self, sub_bits: int = 7) -> None:
        self.sub_bits = sub_bits
        self.counts: dict[tuple[int, int], int] = {}
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def _key(self, value: int) -> tuple[int, int]:
        shift = max(0, value.bit_length() - (self.sub_bits + 1))
        return shift, value >> shift

    def record(self, value: float, count: int = 1) -> None:
        v = max(0, round(value))
        key = self._key(v)
        self.counts[key] = self.counts.get(key, 0) + count
        self.total += count
        self.min = v if self.min is None else min(self.min, v)
        self.max = v if self.max is None else max(self.max, v)

    def merge(self, other: LogHistogram) -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.total += other.total
        for v in (other.min, other.max):
            if v is not None:
                self.min = v if self.min is None else min(self.min, v)
                self.max = v if self.max is None else max(self.max, v)

    @staticmethod
    def _bounds(key: tuple[int, int]) -> tuple[int, int]:
        shift, top = key
        low = top << shift
        return low, low + (1 << shift) - 1

    def value_at(self, p: float) -> float:
        """The value at percentile p (nearest rank), the middle of its bucket, clamped."""
        if self.total == 0:
            raise ValueError("empty histogram")
        if p <= 0 and self.min is not None:
            return float(self.min)
        rank = max(1, math.ceil(p / 100 * self.total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                low, high = self._bounds(key)
                mid = (low + high) / 2
                assert self.min is not None and self.max is not None
                return float(min(max(mid, self.min), self.max))
        assert self.max is not None
        return float(self.max)

    def percentiles(self, ps: Sequence[float] = PERCENTILES) -> list[tuple[float, float]]:
        return [(p, self.value_at(p)) for p in ps]

    def mean(self) -> float:
        if self.total == 0:
            return 0.0
        s = 0.0
        for key, n in self.counts.items():
            low, high = self._bounds(key)
            s += n * (low + high) / 2
        return s / self.total


def zipf_weights(n: int, s: float = 1.0) -> list[float]:
    """Probabilities of ranks 1..n under Zipf's law with exponent s."""
    raw = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class ZipfSampler:
    """Draws ranks 0..n-1 with Zipf popularity (rank 0 the most popular), reproducibly."""

    def __init__(self, n: int, s: float = 1.0, seed: int = 7) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.s = s
        self.weights = zipf_weights(n, s)
        self.cumulative: list[float] = []
        acc = 0.0
        for w in self.weights:
            acc += w
            self.cumulative.append(acc)
        self.rng = random.Random(seed)

    def sample(self) -> int:
        return min(self.n - 1, bisect.bisect_left(self.cumulative, self.rng.random()))
