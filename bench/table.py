"""`python -m bench table`: the lab's table 7.1, reproduced on loopback.

For each configuration it measures the lab's three columns, each as a miss (the first call)
and a hit (the second call, or the median of `--hits` calls):

- the recursive page load (`/` and every asset it references, fetched as `wget -r -np`),
- the heavy API call `/api/misc/heavy?name=bench`,
- the DB API call `/api/products/last`.

Rows: the baseline origin, 5 API replicas, the in-API Redis cache, our edge (memory only),
our edge with Redis on 3 nodes (miss on node 1, hit on node 3 which never fetched), nginx
and Varnish as peers, any `--target NAME=URL`, and the lab's Gcore figures, quoted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.fetcher import fetch_page
from bench.peers import Server, nginx_binary, nginx_cache, varnish_cache, varnishd_binary
from bench.procs import ProcessGroup, StartError, port_open
from bench.progress import Progress
from bench.servers import OriginSpec, edge_available, resolve_impl, start_edge, start_origin

HEAVY_PATH = "/api/misc/heavy?name=bench"
DB_PATH = "/api/products/last"
PAGE_PATH = "/"
METRICS = ("page", "heavy", "db")
COLUMNS = [(m, p) for m in METRICS for p in ("miss", "hit")]

# Table 7.1 of the seed, as the lab measured it on its Swarm (seconds).
LAB_TABLE: list[dict[str, Any]] = [
    {"version": "baseline", "page": 16.065, "heavy": 5.029, "db": 15.198},
    {"version": "5 API replicas", "page": 16.093, "heavy": 5.040, "db": 15.169},
    {
        "version": "Redis API cache",
        "page": 16.102,
        "heavy": 5.058,
        "heavy_hit": 0.021,
        "db": 15.214,
        "db_hit": 0.032,
    },
    {"version": "Gcore CDN", "page": 0.030, "heavy": "same", "db": "same"},
]

ALL_ROWS = ("baseline", "replicas", "api-cache", "edge", "edge-redis", "nginx", "varnish", "gcore")
ROW_LABELS = {
    "baseline": "baseline origin",
    "replicas": "5 API replicas",
    "api-cache": "in-API Redis cache",
    "edge": "our edge (memory)",
    "edge-redis": "our edge + Redis, 3 nodes",
    "nginx": "nginx proxy_cache (peer)",
    "varnish": "Varnish (peer)",
    "gcore": "Gcore CDN (quoted from the lab)",
}


@dataclass(frozen=True)
class Delays:
    heavy_seconds: float
    db_seconds: float
    static_rate: int

    def as_json(self) -> dict[str, float]:
        return {
            "heavy_seconds": self.heavy_seconds,
            "db_seconds": self.db_seconds,
            "static_rate": self.static_rate,
        }


LAB_DELAYS = Delays(5.0, 15.0, 300 * 1024)
QUICK_DELAYS = Delays(0.2, 0.3, 3_000_000)
IMAGE_BYTES = 5 * 1024 * 1024


@dataclass
class Sample:
    row: str
    metric: str
    phase: str
    url: str
    seconds: float
    status: int
    bytes: int
    x_cache: str | None = None
    cache_status: str | None = None
    files: int = 1
    error: str | None = None


@dataclass
class Row:
    key: str
    label: str
    quoted: bool = False
    note: str = ""
    cells: dict[str, float | None] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "quoted": self.quoted,
            "note": self.note,
            "cells": self.cells,
            "flags": self.flags,
            "samples": [s.__dict__ for s in self.samples],
        }


async def timed_get(url: str, total_timeout: float) -> tuple[float, int, int, dict[str, str]]:
    """One GET on a new connection (as `curl` does), body read to the end."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total_timeout)) as session:
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            body = await resp.read()
            elapsed = time.perf_counter() - t0
            return elapsed, resp.status, len(body), dict(resp.headers)


@dataclass
class Endpoints:
    """Where to send the miss (first) and the hit (later) calls of one configuration."""

    miss: str
    hit: str
    caching: bool
    page_cached: bool = True


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
        p = f"woody-bench-{self.run_id}-{key}"
        self.prefixes.append(p)
        return p

    def _step(self, name: str, expected: float) -> Any:
        if self.progress is None:
            import contextlib

            return contextlib.nullcontext()
        return self.progress.step(name, expected)

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
        for metric in METRICS:
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
            elapsed, status, size, headers = await timed_get(url, self.timeout)
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

    def _origin(self, group: ProcessGroup, key: str, **kw: Any) -> Server:
        spec = OriginSpec(
            heavy_seconds=self.delays.heavy_seconds,
            db_seconds=self.delays.db_seconds,
            static_rate=self.delays.static_rate,
            key_prefix=self.prefix(key),
            impl=self.origin_impl,
            **kw,
        )
        return start_origin(group, spec, name=f"origin-{key}")

    def _setup(self, key: str, group: ProcessGroup) -> Endpoints:
        """Start what the row needs; raise RuntimeError/StartError/FileNotFoundError if not."""
        needs_redis = key in ("api-cache", "edge-redis")
        if needs_redis and not _redis_up(self.redis_url):
            raise RuntimeError(f"Redis is not reachable at {self.redis_url}")
        if key == "baseline":
            o = self._origin(group, key)
            return Endpoints(o.url, o.url, caching=False)
        if key == "replicas":
            o = self._origin(group, key, replicas=5)
            return Endpoints(o.url, o.url, caching=False)
        if key == "api-cache":
            o = self._origin(group, key, api_cache=self.redis_url)
            return Endpoints(o.url, o.url, caching=True, page_cached=False)
        if key in ("edge", "edge-redis") and not edge_available():
            raise RuntimeError("`python -m edge serve` has not landed yet")
        if key == "edge":
            o = self._origin(group, key)
            e = start_edge(group, o.url, node="edge-1", workers=self.edge_workers)
            return Endpoints(e.url, e.url, caching=True)
        if key == "edge-redis":
            o = self._origin(group, key)
            prefix = self.prefix("edge-redis-shared")
            nodes = [
                start_edge(
                    group,
                    o.url,
                    node=f"edge-{i}",
                    workers=self.edge_workers,
                    redis_url=self.redis_url,
                    key_prefix=prefix,
                )
                for i in (1, 2, 3)
            ]
            return Endpoints(nodes[0].url, nodes[2].url, caching=True)
        if key == "nginx":
            if nginx_binary() is None:
                raise FileNotFoundError("nginx is not installed")
            o = self._origin(group, key)
            n = nginx_cache(group, _port(o.url))
            return Endpoints(n.url, n.url, caching=True)
        if key == "varnish":
            if varnishd_binary() is None:
                raise FileNotFoundError("varnishd is not installed")
            o = self._origin(group, key)
            v = varnish_cache(group, _port(o.url))
            return Endpoints(v.url, v.url, caching=True)
        raise ValueError(f"unknown row {key!r}")

    async def run(self) -> list[Row]:
        for key in self.rows:
            if key == "gcore":
                self.results.append(gcore_row())
                continue
            row = Row(key, ROW_LABELS[key])
            with ProcessGroup() as group:
                try:
                    with self._step(f"{row.label}: starting", 1.0):
                        ends = self._setup(key, group)
                except (RuntimeError, FileNotFoundError, StartError) as exc:
                    row.note = f"skipped: {str(exc).splitlines()[0]}"
                    if self.progress:
                        self.progress.note(f"{row.label}: {row.note}")
                    self.results.append(row)
                    continue
                if key == "edge-redis":
                    row.note = "miss on edge-1, hit on edge-3 (never fetched)"
                await self.measure(row, ends, HEAVY_PATH)
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
        if not self.prefixes or not _redis_up(self.redis_url):
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


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _redis_up(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return port_open(parsed.port or 6379, parsed.hostname or "127.0.0.1")


def gcore_row() -> Row:
    row = Row("gcore", ROW_LABELS["gcore"], quoted=True)
    row.cells = {
        "page_miss": None,
        "page_hit": 0.030,
        "heavy_miss": None,
        "heavy_hit": None,
        "db_miss": None,
        "db_hit": None,
    }
    row.note = (
        "quoted, lab's Swarm, one figure (miss or hit not stated); API not cached by the CDN "
        "(lab: 'same' as without it); the lab's page pointed 5mo.jpg at the CDN host, which "
        "`wget -r` (no -H) does not follow"
    )
    return row


def render_markdown(run: TableRun, origin_impl: str, started: str) -> str:
    headers = ["configuration"] + [f"{m} {p}" for m, p in COLUMNS] + ["notes"]
    body: list[list[str]] = []
    for row in run.results:
        cells = []
        for m, p in COLUMNS:
            value = row.cells.get(f"{m}_{p}")
            text = report.seconds(value)
            if row.quoted and value is not None:
                text += " (quoted)"
            if f"{m}_{p}" in row.flags:
                text += " †"
            cells.append(text)
        notes = [row.note] if row.note else []
        notes += [f"{k}: {v}" for k, v in row.flags.items()]
        page = [s for s in row.samples if s.metric == "page" and s.error is None]
        if page:
            notes.append(f"page = {page[0].files} files, {page[0].bytes / 1e6:.2f} MB")
        body.append([row.label, *cells, "; ".join(notes)])
    d = run.delays
    lines = [
        f"## Lab table 7.1 reproduced ({started}, code at {report.git_rev()})",
        "",
        f"Origin: {origin_impl}; heavy {d.heavy_seconds:g} s, DB {d.db_seconds:g} s, "
        f"static {d.static_rate / 1024:g} KB/s per response; hit = median of {run.hits} "
        "calls after the miss (one call where nothing caches the answer). "
        "Every number below comes from this one run on this machine.",
        "",
        report.markdown_table(headers, body, left=(0, -1)),
        "† the response contradicts the column (e.g. a 'miss' served as a HIT); see the JSON.",
        "",
        "### The lab's own table 7.1 (quoted)",
        "",
        report.markdown_table(
            ["version", "recursive page load", "heavy API", "DB API"],
            [
                [
                    str(r["version"]),
                    _lab_cell(r["page"]),
                    _lab_cell(r["heavy"], r.get("heavy_hit")),
                    _lab_cell(r["db"], r.get("db_hit")),
                ]
                for r in LAB_TABLE
            ],
        ),
    ]
    return "\n".join(lines)


def _lab_cell(value: Any, hit: Any = None) -> str:
    text = f"{value:.3f} s" if isinstance(value, float) else str(value)
    if hit is not None:
        text = f"{text} miss / {hit:.3f} s hit"
    return text


def chart(run: TableRun, path: Path) -> Path:
    groups = [r.label for r in run.results]
    series = {f"{m} {p}": [r.cells.get(f"{m}_{p}") for r in run.results] for m, p in COLUMNS}
    return report.bar_chart(
        path,
        "Lab table 7.1 reproduced: miss and hit per configuration (hatched: quoted)",
        groups,
        series,
        hatched=[r.quoted for r in run.results],
    )


def parse_targets(values: list[str]) -> dict[str, str]:
    targets: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"--target wants NAME=http(s)://..., got {value!r}")
        targets[name] = url
    return targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scaled-down delays (heavy 0.2 s, DB 0.3 s, 3 MB/s) instead of the lab's",
    )
    parser.add_argument("--heavy-seconds", type=float, default=None)
    parser.add_argument("--db-seconds", type=float, default=None)
    parser.add_argument("--static-rate", type=int, default=None, help="bytes/s, 0 = no limit")
    parser.add_argument(
        "--rows",
        default="all",
        help=f"comma-separated rows to run, or 'all' or 'none': {','.join(ALL_ROWS)}",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="also measure a deployment that already runs (repeatable)",
    )
    parser.add_argument("--hits", type=int, default=3, help="hit calls per column (median)")
    parser.add_argument(
        "--origin",
        dest="origin_impl",
        choices=("auto", "real", "standin"),
        default="auto",
        help="the project's origin (real), the bench stand-in, or real when present (auto)",
    )
    parser.add_argument("--edge-workers", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--out", type=Path, default=report.DEFAULT_OUT)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--no-files", action="store_true", help="write nothing under --out")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> int:
    base = QUICK_DELAYS if args.quick else LAB_DELAYS
    delays = Delays(
        args.heavy_seconds if args.heavy_seconds is not None else base.heavy_seconds,
        args.db_seconds if args.db_seconds is not None else base.db_seconds,
        args.static_rate if args.static_rate is not None else base.static_rate,
    )
    if args.rows == "all":
        rows = list(ALL_ROWS)
    elif args.rows == "none":
        rows = []
    else:
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        print_fn(f"unknown rows: {', '.join(unknown)} (known: {', '.join(ALL_ROWS)})")
        return 2
    targets = parse_targets(args.target)
    origin_impl = resolve_impl(args.origin_impl) if any(r != "gcore" for r in rows) else "-"
    run = TableRun(
        delays=delays,
        rows=rows,
        targets=targets,
        redis_url=args.redis,
        hits=max(1, args.hits),
        origin_impl=args.origin_impl,
        edge_workers=args.edge_workers,
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    total = sum(run.expected(k) for k in rows) + len(targets) * run.expected("target")
    with Progress(total, label="bench table", enabled=not args.quiet) as progress:
        run.progress = progress
        asyncio.run(run.run())
    origin_label = {"real": "python -m origin serve", "standin": "bench stand-in origin"}.get(
        origin_impl, origin_impl
    )
    markdown = render_markdown(run, origin_label, started)
    data = {
        "kind": "table",
        "started": started,
        "run_id": run.run_id,
        "origin": origin_impl,
        "delays": delays.as_json(),
        "hits": run.hits,
        "machine": report.machine(),
        "rows": [r.as_json() for r in run.results],
        "lab_table": LAB_TABLE,
    }
    report.publish(
        "table",
        markdown,
        data,
        lambda path: chart(run, path),
        args.out,
        write_files=not args.no_files,
        as_json=args.json,
        print_fn=print_fn,
    )
    return 0
