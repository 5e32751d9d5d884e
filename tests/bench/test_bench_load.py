"""`bench load` with tiny durations and few connections: shape and sanity of its output."""

from __future__ import annotations

from typing import Any

import pytest

from bench.load.options import edge_sections
from tests.bench.helpers import require_edge, require_tool, run_json

TINY = ["--duration", "1", "--rounds", "1", "--connections", "4", "--large-connections", "2"]


def _outcome(data: dict[str, Any], scenario: str, server: str) -> dict[str, Any]:
    return next(o for o in data["outcomes"] if o["scenario"] == scenario and o["server"] == server)


def test_load_hits_herd_and_miss_cost_through_nginx() -> None:
    require_tool("nginx")
    require_tool("wrk")
    data = run_json(
        [
            "load",
            *TINY,
            "--scenarios",
            "a,c,e",
            "--caches",
            "nginx",
            "--herd",
            "8",
            "--herd-seconds",
            "0.5",
            "--miss-requests",
            "30",
        ]
    )
    assert data["kind"] == "load" and data["loader"] == "wrk"
    a = _outcome(data, "a", "nginx")
    assert a["error"] is None, a["error"]
    assert a["result"]["requests"] > 0 and a["result"]["rps"] > 0
    assert a["extra"]["warm_verdicts"][-1] == "HIT"
    p = dict((pp, v) for pp, v in a["result"]["percentiles_ms"])
    assert 0 < p[50.0] <= p[99.0] <= p[100.0]
    herd = _outcome(data, "c", "nginx")["extra"]
    assert herd["origin_requests"] == 1  # proxy_cache_lock collapses the herd
    assert herd["statuses"] == {"200": 8} and herd["same_body"]
    miss = _outcome(data, "e", "nginx")["result"]
    assert miss["requests"] == 30 and miss["cache"].get("read:MISS") == 30
    direct = _outcome(data, "e", "origin direct")["result"]
    assert direct["requests"] == 30
    assert set(data["ratios"]) == {"a", "c", "e"}
    # CPU of nginx's process tree (master and 2 workers) per request, beside requests/s
    assert a["extra"]["cpu_per_request"]["cpu_us"] > 0
    assert a["extra"]["rounds"][0]["cpu_us"] > 0
    # 30 misses may take less than one 10 ms clock tick of CPU: measured, maybe 0
    assert _outcome(data, "e", "nginx")["extra"]["cpu_per_request"]["cpu_us"] >= 0
    assert set(data["cpu_ratios"]) == {"a", "e"}


def test_load_own_generator_and_mixed_traffic() -> None:
    require_tool("nginx")
    data = run_json(
        [
            "load",
            *TINY,
            "--loader",
            "aiohttp",
            "--scenarios",
            "b,d",
            "--caches",
            "nginx",
            "--keys",
            "20",
            "--mixed-connections",
            "4",
        ]
    )
    assert data["loader"] == "aiohttp"
    b = _outcome(data, "b", "nginx")["result"]
    assert b["tool"] == "aiohttp" and b["bytes"] >= 5 * 1024 * 1024 * b["requests"] > 0
    assert len(b["samples_ms"]) == b["requests"]  # every sample kept
    d = _outcome(data, "d", "nginx")
    x = d["extra"]
    assert x["reads"] > 0 and x["writes"] > 0
    assert 0 < x["hit_ratio"] <= 1 and 0 < x["offload"] <= 1
    assert x["origin_writes"] == x["writes"]  # writes are never cached


def test_load_herd_through_varnish() -> None:
    require_tool("varnishd")
    data = run_json(
        [
            "load",
            *TINY,
            "--scenarios",
            "c",
            "--caches",
            "varnish",
            "--herd",
            "8",
            "--herd-seconds",
            "0.5",
        ]
    )
    assert _outcome(data, "c", "varnish")["extra"]["origin_requests"] == 1


def test_load_edge_against_nginx() -> None:
    """Runs once `python -m edge serve` exists; ratios edge/nginx (and edge/floor, the floor
    a proxy in e) are then reported.

    One edge worker: collapsing is per process, so with --edge-workers 2 a herd spread over
    both workers by SO_REUSEPORT reaches the origin once per worker (the load report shows it).
    """
    require_edge()
    require_tool("nginx")
    data = run_json(
        [
            "load",
            *TINY,
            "--scenarios",
            "a,c,e",
            "--caches",
            "edge,nginx,floor",
            "--edge-workers",
            "1",
            "--herd",
            "8",
            "--herd-seconds",
            "0.5",
            "--miss-requests",
            "30",
        ]
    )
    assert _outcome(data, "c", "edge")["extra"]["origin_requests"] == 1
    assert data["ratios"]["a"]["edge/nginx"] is not None
    assert data["ratios"]["e"]["edge/nginx"] is not None
    # In e the floor is a proxy (bench.floor --proxy): the least a miss costs on this stack.
    assert _outcome(data, "e", "floor")["error"] is None
    assert _outcome(data, "e", "floor")["result"]["requests"] == 30
    assert data["ratios"]["e"]["edge/floor"] is not None


def test_the_floors_answer_plain_and_https_and_stay_out_of_other_scenarios() -> None:
    """`--caches floor,floor-hit`: bench.floor (the edge's stack, a constant answer) and
    bench.floor --hit (the least a cache does for a hit) measured beside the edge in a and
    h, with edge/floor ratios; in b they refuse with their reason."""
    require_edge()
    require_tool("wrk")
    data = run_json(
        [
            "load",
            *TINY,
            "--scenarios",
            "a,b,h",
            "--caches",
            "edge,floor,floor-hit",
            "--edge-workers",
            "1",
        ]
    )
    for letter in ("a", "h"):
        for kind, verdict in (("floor", "FLOOR"), ("floor-hit", "FLOOR-HIT")):
            floor = _outcome(data, letter, kind)
            assert floor["error"] is None, floor["error"]
            assert floor["extra"]["warm_verdicts"][-1] == verdict  # never the edge's HIT
            assert floor["result"]["requests"] > 0
            assert floor["extra"]["cpu_per_request"]["cpu_us"] > 0
            assert data["ratios"][letter][f"edge/{kind}"] is not None
    for kind in ("floor", "floor-hit"):
        assert "a, h and j only" in _outcome(data, "b", kind)["error"]


def test_edge_set_gives_the_edge_a_key_over_its_configuration() -> None:
    """`--edge-set SECTION.KEY=VALUE` reaches the edge bench load starts: a value the edge
    takes runs; one it refuses (two workers without the node tier) comes back as that edge's
    failure to start."""
    require_tool("nginx")
    require_edge()
    base = ["load", *TINY, "--scenarios", "e", "--caches", "edge", "--miss-requests", "20"]
    off = run_json([*base, "--edge-workers", "1", "--edge-set", "node_cache.enabled=false"])
    assert off["options"]["edge_sections"] == {"node_cache": {"enabled": False}}
    edge = _outcome(off, "e", "edge")
    assert edge["error"] is None, edge["error"]
    assert edge["result"]["requests"] == 20
    refused = run_json([*base, "--edge-workers", "2", "--edge-set", "node_cache.enabled=false"])
    error = _outcome(refused, "e", "edge")["error"]
    assert error is not None and "exited" in error
    assert edge_sections(["memory.max_bytes=64m", "memory.sendfile=no"]) == {
        "memory": {"max_bytes": "64m", "sendfile": False}
    }
    with pytest.raises(SystemExit, match=r"SECTION\.KEY=VALUE"):
        edge_sections(["node_cache=false"])
