"""The bounded-memory run: distinct objects through a small node budget, the memory of the
whole edge node (supervisor and its workers: RSS and PSS summed over the process tree)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.chaos.common import edge_yaml, say
from bench.procfs import tree_memory_kib
from bench.procs import ProcessGroup
from bench.servers import OriginSpec, start_edge, start_origin


async def run_memory(
    tier_mb: int, objects: int, size: int, tmp: Path, progress: bool = True, workers: int = 2
) -> dict[str, Any]:
    """Distinct objects of `size` bytes through a `tier_mb` node budget: the node's memory."""
    config = edge_yaml(tmp, memory={"max_bytes": f"{tier_mb}m", "max_object_bytes": "8m"})
    spec = OriginSpec(heavy_seconds=0, db_seconds=0, static_rate=0, impl="standin")
    with ProcessGroup(workdir=tmp / "logs", keep=True) as group:
        origin = await asyncio.to_thread(start_origin, group, spec, "standin")
        server = await asyncio.to_thread(
            start_edge, group, origin.url, node="edge-memory", config=config, workers=workers
        )
        pid = server.managed[0].pid
        assert pid is not None
        await _every_worker_up(server.url, workers)
        return await _fill(server.url, pid, tier_mb, objects, size, progress)


async def _every_worker_up(base: str, workers: int, timeout: float = 60) -> None:
    """Wait until each worker has started (`/_edge/stats` lists it): the node answers its
    health check from its first worker, and the fill's connections, kept for the whole run,
    would all go to the workers listening when they open (the start's PSS then misses what
    the others have yet to load)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(base + "/_edge/stats") as r:
                if len(json.loads(await r.read()).get("workers", [])) >= workers:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base}: fewer than {workers} workers after {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def _fill(
    base: str, pid: int, tier_mb: int, objects: int, size: int, progress: bool
) -> dict[str, Any]:
    rss0, pss0 = tree_memory_kib(pid)
    peak = rss0
    peak_pss = pss0
    hot = f"/bench/obj/{size}?hot=1"
    statuses: Counter[int] = Counter()
    hot_results: Counter[str] = Counter()
    wrong = 0
    t0 = time.monotonic()
    queue = list(range(objects))
    conn = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal peak, peak_pss, wrong
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
                    rss, pss = tree_memory_kib(pid)
                    peak, peak_pss = max(peak, rss), max(peak_pss, pss)
                    done = objects - len(queue)
                    if progress and done and done % max(objects // 10, 1) < 8:
                        say(
                            f"  memory: {done}/{objects} objects, node RSS {peak // 1024} MiB,"
                            f" PSS {peak_pss // 1024} MiB"
                        )

        await asyncio.gather(*(worker() for _ in range(8)))
        async with s.get(base + hot) as r:
            await r.read()
            hot_last = r.headers.get("X-Cache", "")
        async with s.get(base + "/_edge/stats") as r:
            mem = json.loads(await r.read())["memory"]
    rss, pss = tree_memory_kib(pid)
    peak, peak_pss = max(peak, rss), max(peak_pss, pss)
    return {
        "tier_mib": tier_mb,
        "objects": objects,
        "object_bytes": size,
        "seconds": round(time.monotonic() - t0, 1),
        "statuses": dict(statuses),
        "wrong_length": wrong,
        "rss_start_mib": round(rss0 / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "pss_start_mib": round(pss0 / 1024, 1),
        "pss_peak_mib": round(peak_pss / 1024, 1),
        "rss_bound_mib": tier_mb + 100,
        "memory_tier_bytes": mem["bytes"],
        "memory_tier_keys": mem["keys"],
        "evictions": mem["evictions"],
        "hot_object": dict(hot_results),
        "hot_object_last": hot_last,
    }
