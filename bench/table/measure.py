"""One run of `bench table`: each row started in turn, its three columns timed."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.fetcher import fetch_page
from bench.procs import ProcessGroup, StartError
from bench.progress import Progress
from bench.table.model import (
    DB_PATH,
    HEAVY_PATH,
    IMAGE_BYTES,
    METRICS,
    PAGE_PATH,
    RANGE_HEADER,
    RANGE_PATH,
    ROW_LABELS,
    Delays,
    Endpoints,
    Row,
    Sample,
    gcore_row,
)
from bench.table.setups import redis_up, setup


async def timed_get(
    url: str, total_timeout: float, headers: dict[str, str] | None = None
) -> tuple[float, int, int, dict[str, str]]:
    """One GET on a new connection (as `curl` does), body read to the end."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total_timeout)) as session:
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            body = await resp.read()
            elapsed = time.perf_counter() - t0
            return elapsed, resp.status, len(body), dict(resp.headers)


@dataclass
class TableRun:
    delays: Delays
    rows: list[str]
    targets: dict[str, str]
    redis_url: str
    hits: int = 3
    origin_impl: str = "auto"
    edge_workers: int = 1
    progress: Progress | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    timeout: float = 300.0
    results: list[Row] = field(default_factory=list)
    round: int = 0  # each start of a row's servers gets fresh Redis prefixes
    prefixes: list[str] = field(default_factory=list)

    @property
    def page_seconds(self) -> float:
        rate = self.delays.static_rate
        return IMAGE_BYTES / rate if rate > 0 else 0.05

    def expected(self, key: str) -> float:
        d = self.delays
        miss = self.page_seconds + d.heavy_seconds + d.db_seconds + 0.3
        if key == "gcore":
            return 0.0
        if key in ("baseline", "replicas"):
            return 1.0 + miss * 2
        if key == "api-cache":
            return 1.0 + miss + self.page_seconds
        return 1.5 + miss + 0.1 * self.hits

    def prefix(self, key: str) -> str:
        p = f"woody-bench-{self.run_id}-{key}-{self.round}"
        self.prefixes.append(p)
        return p

    def _step(self, name: str, expected: float) -> Any:
        if self.progress is None:
            return contextlib.nullcontext()
        return self.progress.step(name, expected)

    async def measure_range(self, row: Row) -> None:
        """Issue 16: one KB in the middle of the 5 MB image, on a cold cache of its own (the
        row's servers started again: a cache may fetch the whole image for a Range)."""
        self.round += 1
        with ProcessGroup() as group:
            try:
                ends = setup(self, row.key, group)
            except (RuntimeError, FileNotFoundError, StartError):
                return
            repeats = self.hits if ends.caching else 1
            phases = [("miss", ends.miss)] + [("hit", ends.hit)] * repeats
            for phase, base in phases:
                with self._step(f"{row.label}: range {phase}", 0.1):
                    row.samples.append(await self._one(row.key, "range", phase, base + RANGE_PATH))
        self._cells(row, ("range",))

    async def measure(self, row: Row, ends: Endpoints, heavy_path: str) -> None:
        plans: list[tuple[str, str, float]] = [
            ("page", PAGE_PATH, self.page_seconds),
            ("heavy", heavy_path, self.delays.heavy_seconds),
            ("db", DB_PATH, self.delays.db_seconds),
        ]
        for metric, path, slow in plans:
            phases = [("miss", ends.miss, slow)]
            # Without a cache the second call is the lab's single "again" (nothing to median).
            cached = ends.caching and (metric != "page" or ends.page_cached)
            repeats = self.hits if cached else 1
            phases += [("hit", ends.hit, 0.05 if cached else slow)] * repeats
            for n, (phase, base, expected) in enumerate(phases):
                what = f"{metric} {phase}" + (f" {n}/{repeats}" if phase == "hit" else "")
                with self._step(f"{row.label}: {what}", expected + 0.05):
                    row.samples.append(await self._one(row.key, metric, phase, base + path))
                if phase == "miss":
                    await asyncio.sleep(0.1)  # let a shared tier finish storing
        self._cells(row, METRICS)

    def _cells(self, row: Row, metrics: tuple[str, ...]) -> None:
        for metric in metrics:
            for phase in ("miss", "hit"):
                got = [
                    s
                    for s in row.samples
                    if s.metric == metric and s.phase == phase and s.error is None
                ]
                if not got:
                    row.cells[f"{metric}_{phase}"] = None
                    continue
                row.cells[f"{metric}_{phase}"] = statistics.median(s.seconds for s in got)
                if phase == "miss" and (got[0].x_cache or "").upper().startswith("HIT"):
                    row.flags[f"{metric}_{phase}"] = "served as a HIT"
                if any(s.status >= 400 for s in got):
                    row.flags[f"{metric}_{phase}"] = f"HTTP {got[0].status}"

    async def _one(self, row: str, metric: str, phase: str, url: str) -> Sample:
        try:
            if metric == "page":
                load = await fetch_page(url, total_timeout=self.timeout)
                first = load.resources[0] if load.resources else None
                status = max((r.status for r in load.resources), default=0)
                return Sample(
                    row,
                    metric,
                    phase,
                    url,
                    load.seconds,
                    status,
                    load.total_bytes,
                    x_cache=",".join(str(r.x_cache) for r in load.resources),
                    cache_status=first.cache_status if first else None,
                    files=len(load.resources),
                    error="; ".join(load.errors) or None,
                )
            extra = {"Range": RANGE_HEADER} if metric == "range" else None
            elapsed, status, size, headers = await timed_get(url, self.timeout, extra)
            return Sample(
                row,
                metric,
                phase,
                url,
                elapsed,
                status,
                size,
                x_cache=headers.get("X-Cache"),
                cache_status=headers.get("Cache-Status"),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Sample(row, metric, phase, url, float("nan"), 0, 0, error=repr(exc))

    async def run(self) -> list[Row]:
        for key in self.rows:
            if key == "gcore":
                self.results.append(gcore_row())
                continue
            row = Row(key, ROW_LABELS[key])
            with ProcessGroup() as group:
                try:
                    with self._step(f"{row.label}: starting", 1.0):
                        ends = setup(self, key, group)
                except (RuntimeError, FileNotFoundError, StartError) as exc:
                    row.note = f"skipped: {str(exc).splitlines()[0]}"
                    if self.progress:
                        self.progress.note(f"{row.label}: {row.note}")
                    self.results.append(row)
                    continue
                if key == "edge-redis":
                    row.note = "miss on edge-1, hit on edge-3 (never fetched)"
                await self.measure(row, ends, HEAVY_PATH)
            await self.measure_range(row)
            self.results.append(row)
        for name, url in self.targets.items():
            row = Row(f"target:{name}", f"{name} ({url})")
            row.note = "deployed target: miss = first call, hit = later calls"
            # a fresh name so the first heavy call is a real miss on a long-running cache
            await self.measure(
                row,
                Endpoints(url.rstrip("/"), url.rstrip("/"), caching=True),
                f"/api/misc/heavy?name=bench-{self.run_id}",
            )
            self.results.append(row)
        await self._cleanup_redis()
        return self.results

    async def _cleanup_redis(self) -> None:
        if not self.prefixes or not redis_up(self.redis_url):
            return
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            for prefix in self.prefixes:
                keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
                if keys:
                    await client.delete(*keys)
        finally:
            await client.aclose()
