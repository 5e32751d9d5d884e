"""`python -m bench.hitpath one`: the in-process hit it counts is a real hit, and each
variant leaves out the layer it says (counting itself, under valgrind, is the bench's)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.procs import REPO, ProcessGroup
from bench.servers import OriginSpec, start_origin


@pytest.fixture(scope="module")
def origin_url() -> str:  # type: ignore[misc]
    spec = OriginSpec(heavy_seconds=0.01, db_seconds=0.01, static_rate=0, impl="standin")
    with ProcessGroup() as group:
        yield start_origin(group, spec).url


def _one(origin: str, variant: str) -> dict[str, object]:
    argv = [sys.executable, "-m", "bench.hitpath", "one", "--origin", origin]
    argv += ["--variant", variant, "--n", "50"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def _answered(heads: int, hits: int) -> dict[str, object]:
    out = {"writes": 50, "x_cache": "X-Cache: HIT", "age": True}
    return {**out, "kept_heads": heads, "kept_hits": hits}


def test_every_fed_request_is_answered_from_the_cache_with_what_the_worker_keeps(
    origin_url: str,
) -> None:
    assert _one(origin_url, "hit") == _answered(heads=1, hits=1)


def test_the_general_way_keeps_neither_heads_nor_hits_and_answers_the_same(
    origin_url: str,
) -> None:
    assert _one(origin_url, "general") == _answered(heads=0, hits=0)
    assert _one(origin_url, "parsed") == _answered(heads=0, hits=1)


def test_the_floor_hit_reference_answers_every_request(origin_url: str) -> None:
    result = _one(origin_url, "floor-hit")
    assert {k: result[k] for k in ("writes", "x_cache", "age")} == {
        "writes": 50,
        "x_cache": "X-Cache: FLOOR-HIT",
        "age": True,
    }
