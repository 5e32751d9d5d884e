"""One test per module of bench/load/scenarios/: its metric, its report rows, what it sends.

These run no server (the real runs are in test_bench_load.py, and below for f and g)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.load.options import Options
from bench.load.render import ratios, round_ratios
from bench.load.scenario import CPU_METRIC, Outcome
from bench.load.scenarios import MODULES, REGISTRY
from bench.loadgen import LoadResult
from tests.bench.helpers import require_edge, require_tool, run_json

OPTS = Options(duration=3, rounds=3)


def _result(rps: float, p50: float = 1.0) -> LoadResult:
    return LoadResult("wrk", int(rps), 1.0, int(rps) * 1024, 0, [(50.0, p50), (99.0, 2 * p50)])


def _hit(letter: str, server: str, rps: list[float], cpu_us: list[float]) -> Outcome:
    rounds = [
        {"rps": r, "bytes_per_s": r * 1024, "cpu_us": c, "user_us": c / 2, "system_us": c / 2}
        for r, c in zip(rps, cpu_us, strict=True)
    ]
    cpu = sum(cpu_us) / len(cpu_us)
    return Outcome(
        letter,
        server,
        _result(sorted(rps)[len(rps) // 2]),
        {
            "rounds": rounds,
            "warm_verdicts": ["MISS", "HIT"],
            "cpu_per_request": {"cpu_us": cpu, "user_us": cpu / 2, "system_us": cpu / 2},
        },
    )


def _hit_pair(letter: str) -> list[Outcome]:
    return [
        _hit(letter, "edge", [100, 120, 90], [40, 42, 44]),
        _hit(letter, "nginx", [100, 100, 100], [20, 20, 20]),
    ]


def test_registry_has_every_scenario_module_once() -> None:
    folder = Path(__file__).resolve().parents[2] / "bench" / "load" / "scenarios"
    files = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert sorted(MODULES) == files
    assert list(REGISTRY) == sorted(REGISTRY) == [m[0] for m in MODULES]


def _check_hit_scenario(letter: str) -> Any:
    scenario = REGISTRY[letter]
    outcomes = _hit_pair(letter)
    table = scenario.rows(OPTS, outcomes)
    assert "CPU µs/req" in table.headers and len(table.rows) == 2
    cpu = table.rows[0][table.headers.index("CPU µs/req")]
    assert cpu == "42.0 (u 21.0 + s 21.0)"
    assert scenario.cpu and scenario.metric.higher_is_better
    assert ratios(outcomes, letter, scenario.metric)["edge/nginx"] == pytest.approx(1.0)
    assert round_ratios(outcomes, letter, CPU_METRIC)["edge/nginx"] == [2.0, 2.1, 2.2]
    assert ratios(outcomes, letter, CPU_METRIC)["edge/nginx"] == pytest.approx(2.1)
    return scenario


def test_a_small_hits() -> None:
    scenario = _check_hit_scenario("a")
    assert scenario.connections(OPTS) == OPTS.connections
    assert scenario.request_headers({"ETag": '"x"'}) == {}


def test_b_large_hits() -> None:
    scenario = _check_hit_scenario("b")
    assert scenario.connections(OPTS) == OPTS.large_connections
    assert scenario.metric.round_key == "bytes_per_s"


def test_c_herd() -> None:
    scenario = REGISTRY["c"]
    edge = Outcome("c", "edge", extra={"origin_requests": 2, "slowest_s": 1.2, "statuses": {}})
    nginx = Outcome("c", "nginx", extra={"origin_requests": 1, "slowest_s": 1.1})
    assert ratios([edge, nginx], "c", scenario.metric)["edge/nginx"] == 2.0
    assert not scenario.metric.higher_is_better and not scenario.cpu
    table = scenario.rows(OPTS, [edge, nginx])
    assert [r[1] for r in table.rows] == ["2", "1"]


def test_d_mixed() -> None:
    scenario = REGISTRY["d"]
    x = {"hit_ratio": 0.9, "offload": 0.95, "origin_writes": 5, "writes": 5}
    table = scenario.rows(OPTS, [Outcome("d", "edge", _result(10), x)])
    assert table.rows[0][:5] == ["edge", "10.0", "90.0%", "95.0%", "5/5"]
    failed = scenario.rows(OPTS, [Outcome("d", "edge", error="refused")])
    assert failed.rows[0][1] == "refused"


def test_e_miss_cost() -> None:
    scenario = REGISTRY["e"]
    cpu = {"cpu_us": 500.0, "user_us": 400.0, "system_us": 100.0}
    direct = Outcome("e", "origin direct", _result(100, p50=0.2))
    edge = Outcome("e", "edge", _result(100, p50=0.7), {"cpu_per_request": cpu})
    half = {"cpu_per_request": {**cpu, "cpu_us": 250.0}}
    nginx = Outcome("e", "nginx", _result(100, p50=0.5), half)
    table = scenario.rows(OPTS, [direct, edge, nginx])
    added = table.headers.index("added p50")
    assert table.rows[1][added] == "0.500 ms"
    assert table.rows[1][-1] == "500.0 (u 400.0 + s 100.0)"
    assert ratios([direct, edge, nginx], "e", CPU_METRIC)["edge/nginx"] == 2.0


def test_f_revalidate() -> None:
    scenario = _check_hit_scenario("f")
    assert scenario.request_headers({"Etag": '"5f-1"'}) == {"If-None-Match": '"5f-1"'}
    with pytest.raises(ValueError, match="no ETag"):
        scenario.request_headers({"Content-Length": "4595"})


def test_g_range() -> None:
    scenario = _check_hit_scenario("g")
    assert scenario.request_headers({}) == {"Range": "bytes=0-1023"}


def _outcome(data: dict[str, Any], scenario: str, server: str) -> dict[str, Any]:
    return next(o for o in data["outcomes"] if o["scenario"] == scenario and o["server"] == server)


def test_f_and_g_through_edge_nginx_and_varnish() -> None:
    """The two scenarios for real, 2 workers each: answered 304 / 206 from cache, CPU read."""
    require_edge()
    for tool in ("nginx", "varnishd", "wrk"):
        require_tool(tool)
    data = run_json(
        ["load", "--duration", "1", "--rounds", "1", "--connections", "4", "--scenarios", "f,g"]
    )
    for letter, status in (("f", "304"), ("g", "206")):
        for server in ("edge", "nginx", "varnish"):
            oc = _outcome(data, letter, server)
            assert oc["error"] is None, oc
            assert oc["extra"]["warm_verdicts"][-1].startswith(status), oc["extra"]
            assert oc["result"]["requests"] > 0 and oc["result"]["errors"] == 0
            assert oc["extra"]["cpu_per_request"]["cpu_us"] > 0
            assert oc["extra"]["rounds"][0]["cpu_us"] > 0
        assert data["cpu_ratios"][letter]["edge/nginx"] is not None
    f_edge = _outcome(data, "f", "edge")
    # a 304 carries no body: far fewer bytes per answer than the 4.6 KB page
    assert f_edge["result"]["bytes"] / f_edge["result"]["requests"] < 1000
