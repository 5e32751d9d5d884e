"""The bounded-memory run: distinct objects through a small memory tier, the edge's VmRSS."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.chaos.common import edge_yaml, say
from bench.procfs import vm_rss_kib
from bench.procs import ProcessGroup
from bench.servers import OriginSpec, start_edge, start_origin


async def run_memory(
    tier_mb: int, objects: int, size: int, tmp: Path, progress: bool = True
) -> dict[str, Any]:
    """Distinct objects of `size` bytes through a `tier_mb` memory tier: the edge's VmRSS."""
    config = edge_yaml(tmp, memory={"max_bytes": f"{tier_mb}m", "max_object_bytes": "8m"})
    spec = OriginSpec(heavy_seconds=0, db_seconds=0, static_rate=0, impl="standin")
    with ProcessGroup(workdir=tmp / "logs", keep=True) as group:
        origin = await asyncio.to_thread(start_origin, group, spec, "standin")
        server = await asyncio.to_thread(
            start_edge, group, origin.url, node="edge-memory", config=config
        )
        pid = server.managed[0].pid
        assert pid is not None
        return await _fill(server.url, pid, tier_mb, objects, size, progress)


async def _fill(
    base: str, pid: int, tier_mb: int, objects: int, size: int, progress: bool
) -> dict[str, Any]:
    rss0 = vm_rss_kib(pid)
    peak = rss0
    hot = f"/bench/obj/{size}?hot=1"
    statuses: Counter[int] = Counter()
    hot_results: Counter[str] = Counter()
    wrong = 0
    t0 = time.monotonic()
    queue = list(range(objects))
    conn = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal peak, wrong
            while queue:
                i = queue.pop()
                paths = [f"/bench/obj/{size}?i={i}"] + ([hot] if i % 10 == 0 else [])
                for path in paths:
                    async with s.get(base + path) as r:
                        body = await r.read()
                        statuses[r.status] += 1
                        wrong += len(body) != size
                        if path == hot:
                            hot_results[r.headers.get("X-Cache", "")] += 1
                if i % 100 == 0:
                    peak = max(peak, vm_rss_kib(pid))
                    done = objects - len(queue)
                    if progress and done and done % max(objects // 10, 1) < 8:
                        say(f"  memory: {done}/{objects} objects, edge VmRSS {peak // 1024} MiB")

        await asyncio.gather(*(worker() for _ in range(8)))
        async with s.get(base + hot) as r:
            await r.read()
            hot_last = r.headers.get("X-Cache", "")
        async with s.get(base + "/_edge/stats") as r:
            mem = json.loads(await r.read())["memory"]
    peak = max(peak, vm_rss_kib(pid))
    return {
        "tier_mib": tier_mb,
        "objects": objects,
        "object_bytes": size,
        "seconds": round(time.monotonic() - t0, 1),
        "statuses": dict(statuses),
        "wrong_length": wrong,
        "rss_start_mib": round(rss0 / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_bound_mib": tier_mb + 100,
        "memory_tier_bytes": mem["bytes"],
        "memory_tier_keys": mem["keys"],
        "evictions": mem["evictions"],
        "hot_object": dict(hot_results),
        "hot_object_last": hot_last,
    }
