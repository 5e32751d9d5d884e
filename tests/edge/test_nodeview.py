"""The node-wide numbers: worker snapshots on the board, their sums, the history, the
latency histograms; and, with real processes, /_edge/stats of a node of 2 workers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from edge.base.observe import LATENCY_BUCKETS, TOP_KEEP, Histogram, Observer, quantile
from edge.ops.nodeview import (
    BOARD_DIR,
    STALE_SECONDS,
    History,
    WorkerBoard,
    merge,
    sample_of,
)
from tests.edge.conftest import EdgeFactory, Scripted, url
from tests.edge.ops_helpers import fetch, get_json, start_edge, wait_for
from tests.origin.conftest import start_origin


def snap(pid: int, at: float, **counters: object) -> dict[str, object]:
    base: dict[str, object] = {
        "requests": 0,
        "hits": 0,
        "misses": 0,
        "results": {"HIT": 0, "MISS": 0},
        "bytes_served": 0,
        "origin_errors": {},
        "uptime_seconds": 1.0,
    }
    base.update(counters)
    return {"pid": pid, "at": at, "counters": base, "connections": {"open": 1}, "bus": None}


def test_board_publishes_reads_and_forgets_stale_workers(tmp_path: Path) -> None:
    now = [1000.0]
    board = WorkerBoard(str(tmp_path / BOARD_DIR), clock=lambda: now[0])
    board.publish(snap(1, 1000.0, requests=3))
    board.publish(snap(2, 1000.0, requests=4))
    board.publish(snap(2, 1000.5, requests=5))  # replaced, never duplicated
    assert [s["counters"]["requests"] for s in board.read()] == [3, 5]  # type: ignore[index]
    assert [s["pid"] for s in board.read(exclude_pid=1)] == [2]
    now[0] = 1000.0 + STALE_SECONDS + 0.7  # worker 1 stopped publishing: gone
    board.publish(snap(2, now[0], requests=6))
    assert [s["pid"] for s in board.read()] == [2]
    assert sorted(os.listdir(tmp_path / BOARD_DIR)) == ["2.json"]
    board.withdraw(2)
    assert board.read() == []
    WorkerBoard.remove(str(tmp_path))
    assert not (tmp_path / BOARD_DIR).exists()


def test_board_ignores_torn_or_foreign_files_and_is_off_without_a_directory(
    tmp_path: Path,
) -> None:
    board = WorkerBoard(str(tmp_path))
    (tmp_path / "7.json").write_text('{"pid": 7, "at"')  # not JSON
    (tmp_path / "8.json").write_text("[1, 2]")
    (tmp_path / "notes.txt").write_text("x")
    board.publish(snap(9, time.time()))
    assert [s["pid"] for s in board.read()] == [9]
    off = WorkerBoard(None)
    off.publish(snap(1, time.time()))
    assert off.read() == []


def test_board_recreates_its_directory_when_it_was_removed(tmp_path: Path) -> None:
    board = WorkerBoard.for_node_tier(str(tmp_path))
    board.publish(snap(1, time.time()))
    WorkerBoard.remove(str(tmp_path))
    board.publish(snap(1, time.time()))
    assert len(board.read()) == 1


def test_merge_sums_counters_and_recomputes_the_ratio() -> None:
    a = snap(1, 0, requests=10, hits=6, results={"HIT": 6, "MISS": 4}, bytes_served=100)
    b = snap(2, 0, requests=10, hits=2, results={"HIT": 2, "MISS": 8}, bytes_served=50)
    a["counters"]["origin_errors"] = {"timeout": 1}  # type: ignore[index]
    b["counters"]["origin_errors"] = {"timeout": 2, "refused": 1}  # type: ignore[index]
    b["counters"]["uptime_seconds"] = 9.0  # type: ignore[index]
    a["latency"] = {"hit": {"counts": [1, 2, 0], "sum": 0.5}}
    b["latency"] = {"hit": {"counts": [0, 1, 1], "sum": 0.25}}
    a["top_hits"] = [["/a", 5], ["/b", 1]]
    b["top_hits"] = [["/b", 7]]
    a["bus"] = {"applied_generation": 12, "acks_sent": 3}
    b["bus"] = {"applied_generation": 11, "acks_sent": 2}
    m = merge([a, b])
    c = m["counters"]
    assert c["requests"] == 20 and c["bytes_served"] == 150
    assert c["results"] == {"HIT": 8, "MISS": 12}
    assert c["hit_ratio"] == 0.4
    assert c["origin_errors"] == {"timeout": 3, "refused": 1}
    assert c["uptime_seconds"] == 9.0
    assert m["latency"]["hit"] == {"counts": [1, 3, 1], "sum": 0.75}
    assert m["top_hits"] == [["/b", 8], ["/a", 5]]
    assert m["connections"] == {"open": 2}
    assert m["bus"] == {"applied_generation": 11, "acks_sent": 5}  # the lowest worker's
    assert m["workers"] == 2
    assert merge([])["workers"] == 0


def test_history_gives_per_second_rates_and_never_negative_ones() -> None:
    h = History(seconds=3)
    base = {"requests": 0, "hits": 0, "misses": 0, "bytes": 0}
    extra = {"origin_fetches": 0, "origin_errors": 0, "collapsed": 0}
    for t, req, hits in ((0, 0, 0), (1, 10, 8), (2, 30, 18), (3, 5, 5), (4, 9, 8)):
        h.add({"t": t, **base, **extra, "requests": req, "hits": hits, "misses": req - hits})
    rates = h.rates()
    assert [r["t"] for r in rates] == [2, 3, 4]  # the ring keeps 3 seconds (4 samples)
    assert rates[0]["requests"] == 20 and rates[0]["hit_ratio"] == 0.5
    assert rates[1]["requests"] == 0  # a worker replaced: its counts vanished, not -25/s
    assert rates[2]["requests"] == 4 and rates[2]["hits"] == 3
    assert [r["t"] for r in h.rates(1)] == [4]


def test_sample_of_reads_the_merged_counters() -> None:
    m = merge([snap(1, 0, requests=3, hits=2, misses=1, bytes_served=9, collapsed=1)])
    s = sample_of(m, 5.0)
    assert s["requests"] == 3 and s["bytes"] == 9 and s["collapsed"] == 1 and s["t"] == 5.0


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram()
    for v in (0.00005, 0.0002, 0.0002, 0.003, 50.0):
        h.observe(v)
    assert h.count == 5
    assert h.counts[0] == 1 and h.counts[1] == 2  # <= 0.1 ms, <= 0.25 ms
    assert h.counts[-1] == 1  # +Inf
    assert h.sum == pytest.approx(50.0034)
    assert quantile(h.counts, 0.5) == pytest.approx(0.0001 + 0.00015 * 0.75)
    assert quantile(h.counts, 1.0) == LATENCY_BUCKETS[-1]
    assert quantile([0] * (len(LATENCY_BUCKETS) + 1), 0.5) is None


def test_observer_counts_hits_and_bytes_by_url_and_stays_bounded() -> None:
    o = Observer()
    o.answered("/a", "HIT", 10, 0.0001)
    o.answered("/a", "MISS", 10, 0.2)
    o.answered("/b", "BYPASS", 0, 0.1)
    o.answered("/x", "-", 0, 0.0)  # the edge's own answers are not timed
    s = o.snapshot()
    assert s["top_hits"] == [("/a", 1)]
    assert s["top_bytes"] == [("/a", 20)]
    assert [sum(s["latency"][p]["counts"]) for p in ("hit", "miss", "pass")] == [1, 1, 1]
    for i in range(2 * TOP_KEEP + 1):
        o.answered(f"/k{i}", "HIT", 1, 0.0001)
    assert len(o.url_hits) <= 2 * TOP_KEEP and len(o.url_bytes) <= 2 * TOP_KEEP


async def test_stats_without_the_node_tier_are_the_workers_own(
    scripted: tuple[Scripted, object], make_edge: EdgeFactory
) -> None:
    import aiohttp

    script, server = scripted
    script.set("/a", body=b"abc", Cache_Control="max-age=60")
    edge = await make_edge(url(server, ""), node_cache_enabled=False)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(url(edge, "/a")) as r:
                await r.read()
        async with s.get(url(edge, "/_edge/stats")) as r:
            body = await r.json()
    assert body["requests"] == 3 and body["hits"] == 2
    assert [w["pid"] for w in body["workers"]] == [os.getpid()]
    assert body["top_hits"] == [["/a", 2]]
    assert body["latency"]["hit"]["count"] == 2 and body["latency"]["miss"]["count"] == 1


def test_a_node_of_two_workers_reports_both(tmp_path: Path) -> None:
    origin = start_origin(
        ["--static-rate", "0", "--db", f"sqlite:///{tmp_path}/w.sqlite3"], tmp_path / "o.log"
    )
    edge = start_edge(tmp_path, origin.base_url, "--workers", "2")
    try:
        for _ in range(20):  # each on a new connection: the kernel spreads them
            status, _, _ = fetch(edge.url("/"))
            assert status == 200

        def both_counted() -> dict[str, object] | None:
            body = get_json(edge.url("/_edge/stats"))
            return body if body["requests"] == 20 and len(body["workers"]) == 2 else None

        body = wait_for(both_counted, timeout=5)
        rows = body["workers"]
        assert sum(w["requests"] for w in rows) == 20
        assert all(w["requests"] > 0 for w in rows), rows  # SO_REUSEPORT used both
        assert body["hits"] + body["misses"] == 20 and body["hits"] >= 18  # one node tier
        assert body["top_hits"] == [["/", body["hits"]]]
        metrics = fetch(edge.url("/_edge/metrics"))[2].decode()
        assert f'edge_requests_total{{node="edge-1",result="HIT"}} {body["hits"]}' in metrics
        assert 'edge_workers{node="edge-1"} 2' in metrics
        node_path = next(
            line.split("node cache ")[1].split(" (")[0]
            for line in edge.log().splitlines()
            if "node cache " in line
        )
        board = Path(node_path) / BOARD_DIR
        assert len(list(board.glob("*.json"))) == 2
        files = [json.loads(p.read_text()) for p in board.glob("*.json")]
        assert {f["pid"] for f in files} == {w["pid"] for w in rows}
    finally:
        assert edge.stop() == 0
        origin.stop()
    assert not Path(node_path).exists()  # the board went with the tier


async def test_stats_show_query_strings_only_to_the_token(
    scripted: tuple[Scripted, object], make_edge: EdgeFactory
) -> None:
    """Issue 27 item 10: /_edge/stats showed every client's URLs with their query strings
    (tokens in them included) to anyone."""
    import aiohttp

    from tests.edge.conftest import TOKEN

    script, server = scripted
    script.set("/a", body=b"abc", Cache_Control="max-age=60")
    edge = await make_edge(url(server, ""))
    async with aiohttp.ClientSession() as s:
        for target in ("/a?session=s3cret", "/a?session=s3cret", "/a?session=other", "/a"):
            async with s.get(url(edge, target)) as r:
                await r.read()
        async with s.get(url(edge, "/_edge/stats")) as r:
            anonymous = await r.json()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(url(edge, "/_edge/stats"), headers=auth) as r:
            operator = await r.json()
    assert "s3cret" not in json.dumps(anonymous)
    assert anonymous["top_hits"] == [["/a?…", 1]]
    assert ["/a?session=s3cret", 1] in operator["top_hits"]
