"""/_edge/metrics against Prometheus' conventions: prometheus-client's parser reads it,
`promtool check metrics` finds nothing to say, counters end in _total and nothing else
does, histograms are cumulative and end with +Inf equal to their count."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import IN_CI
from tests.edge.conftest import EdgeFactory, Scripted, url

UNITS = ("_seconds", "_bytes", "_total", "_entries", "_info", "_up", "_workers", "_open")


async def scrape(make_edge: EdgeFactory, scripted: tuple[Scripted, Any]) -> str:
    script, server = scripted
    script.set("/img.jpg", body=b"x" * 1000, Cache_Control="max-age=60")
    script.set("/api", body=b"{}")
    edge = await make_edge(url(server, ""))
    async with aiohttp.ClientSession() as s:
        for path in ("/img.jpg", "/img.jpg", "/img.jpg", "/api"):
            async with s.get(url(edge, path)) as r:
                await r.read()
        async with s.post(url(edge, "/api"), data=b"w") as r:
            await r.read()
        async with s.get(url(edge, "/_edge/metrics")) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await r.text()


async def test_metrics_follow_the_naming_conventions(
    make_edge: EdgeFactory, scripted: tuple[Scripted, Any]
) -> None:
    text = await scrape(make_edge, scripted)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families, text
    for name, family in families.items():
        assert name.startswith("edge_"), name
        assert family.documentation, name
        if family.type == "counter":
            # the parser strips _total from a counter family's name; every sample has it
            assert all(s.name.endswith("_total") for s in family.samples), name
        else:
            assert not name.endswith("_total"), name
        assert "_milliseconds" not in name and "_kilobytes" not in name, name
    counters = [n for n, f in families.items() if f.type == "counter"]
    assert {"edge_requests", "edge_bytes_served", "edge_origin_fetches"} <= set(counters)
    hits = {
        s.labels["result"]: s.value
        for s in families["edge_requests"].samples
        if s.name == "edge_requests_total"
    }
    assert hits["HIT"] == 2 and hits["MISS"] == 2 and hits["BYPASS"] == 1
    assert families["edge_origin_wait_seconds"].type == "counter"


async def test_latency_histograms_of_hits_misses_and_passes(
    make_edge: EdgeFactory, scripted: tuple[Scripted, Any]
) -> None:
    text = await scrape(make_edge, scripted)
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "edge_request_duration_seconds"
    )
    assert family.type == "histogram"
    by_path: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    for s in family.samples:
        path = s.labels["cache"]
        if s.name.endswith("_bucket"):
            by_path.setdefault(path, []).append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            counts[path] = s.value
        elif s.name.endswith("_sum"):
            sums[path] = s.value
    assert set(by_path) == {"hit", "miss", "pass"}
    for path, buckets in by_path.items():
        values = [v for _, v in buckets]
        assert values == sorted(values), path  # cumulative
        assert buckets[-1][0] == float("inf") and buckets[-1][1] == counts[path]
    assert counts == {"hit": 2, "miss": 2, "pass": 1}
    # a hit is answered without the origin (a fresh one in the turn it was parsed in, not
    # timed: it counts in the first bucket, 100 µs, with nothing added to the sum)
    assert 0 <= sums["hit"] < sums["miss"]


async def test_promtool_finds_nothing_to_say(
    make_edge: EdgeFactory, scripted: tuple[Scripted, Any]
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is missing (Debian package prometheus; .ci/run installs it)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    text = await scrape(make_edge, scripted)
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    assert proc.returncode == 0 and not out.strip() and not err.strip(), (out + err).decode()
