"""The short `python -m bench chaos`: real origin, own redis-server and two edge nodes as
processes; the origin and Redis killed under load, 200 connections, a fuzzing pass, lost
orders, and the bounded-memory run (16 MiB tier, 300 objects of 256 KiB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chaos


@pytest.mark.timeout(240)
async def test_short_chaos_run(tmp_path: Path) -> None:
    report = await chaos.run(chaos.SHORT, tmp_path)
    print(chaos.summary(report))
    origin_down = report.phase("origin down")
    redis_down = report.phase("redis down")
    assert origin_down.cached_requests > 0 and redis_down.cached_requests > 0
    assert not origin_down.cached_5xx and not origin_down.cached_conn_errors
    assert not redis_down.fivexx() and not redis_down.conn_errors
    assert report.orders_ok > 0 and report.orders_lost == 0 and report.orders_duplicated == 0
    assert report.fuzz["cases"] >= chaos.SHORT.fuzz_cases // 2
    assert report.fuzz["500s"] == 0 and not report.fuzz["failure"]
    assert report.fuzz["cached_image_intact_after"]
    assert report.crashes == 0 and not report.crash_notes
    memory = report.memory
    assert memory["pss_peak_mib"] < memory["rss_bound_mib"]
    assert memory["memory_tier_bytes"] <= 16 * 2**20
    assert memory["hot_object_last"] == "HIT" and memory["wrong_length"] == 0
    assert chaos.verdict(report) == []
