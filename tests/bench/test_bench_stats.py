"""Percentiles, the log-bucket histogram and the Zipf sampler on known data."""

from __future__ import annotations

import collections
import random

import pytest

from bench.stats import LogHistogram, ZipfSampler, percentile, percentiles, zipf_weights


def test_exact_percentiles_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99.9) == 7.0
    assert dict(percentiles([3.0, 1.0, 2.0], (50.0, 100.0))) == {50.0: 2.0, 100.0: 3.0}
    with pytest.raises(ValueError):
        percentile([], 50)


def test_histogram_small_values_are_exact() -> None:
    hist = LogHistogram(sub_bits=7)
    for v in range(1, 201):
        hist.record(v)
    assert hist.value_at(50) == 100
    assert hist.value_at(100) == 200
    assert hist.value_at(0) == 1


@pytest.mark.parametrize("p", [10.0, 50.0, 90.0, 99.0, 99.9])
def test_histogram_percentiles_within_bucket_error(p: float) -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(7, 1.5) for _ in range(50_000)]  # µs, long tail
    hist = LogHistogram(sub_bits=7)
    for v in values:
        hist.record(v)
    exact = percentile(sorted(round(v) for v in values), p)
    assert hist.value_at(p) == pytest.approx(exact, rel=2**-7)
    assert hist.total == len(values)


def test_histogram_merge_and_mean() -> None:
    a, b = LogHistogram(), LogHistogram()
    for v in range(1000, 2000):
        a.record(v)
    for v in range(2000, 3000):
        b.record(v)
    a.merge(b)
    assert a.total == 2000
    assert a.min == 1000 and a.max == 2999
    assert a.value_at(50) == pytest.approx(2000, rel=0.01)
    assert a.mean() == pytest.approx(2000, rel=0.01)


def test_zipf_weights_follow_the_law() -> None:
    w = zipf_weights(100, 1.0)
    assert sum(w) == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(2.0)
    assert w[0] / w[9] == pytest.approx(10.0)
    assert zipf_weights(10, 0.0) == pytest.approx([0.1] * 10)


def test_zipf_sampler_has_the_right_skew() -> None:
    n, draws = 100, 40_000
    sampler = ZipfSampler(n, 1.0, seed=5)
    counts = collections.Counter(sampler.sample() for _ in range(draws))
    weights = zipf_weights(n, 1.0)
    for rank in (0, 1, 4, 9):
        assert counts[rank] / draws == pytest.approx(weights[rank], abs=0.01)
    top10 = sum(counts[r] for r in range(10)) / draws
    assert top10 == pytest.approx(sum(weights[:10]), abs=0.02)  # ~56 % on 10 % of the keys
    assert set(counts) <= set(range(n))
    # the same seed gives the same sequence
    a, b = ZipfSampler(n, seed=1), ZipfSampler(n, seed=1)
    assert [a.sample() for _ in range(50)] == [b.sample() for _ in range(50)]
