"""`python -m bench load`: throughput and latency of the edge beside nginx and Varnish.

Every scenario runs against our edge and, when installed, nginx `proxy_cache` and Varnish,
all configured by the bench in front of the SAME origin in the same run; the result is
the ratio edge/nginx and edge/Varnish (absolute numbers on a shared 2-core box are noise).

  a  hits/s and p50/p99 on a cached 1 KB object (wrk -t2 -c64, 2 workers per server)
  b  bytes/s on the cached 5 MB image (8 connections)
  c  thundering herd: N concurrent cold requests for the heavy call; origin requests counted
  d  mixed: 95 % Zipf-popular reads, 5 % writes (/api/products?product=); hit ratio, offload
  e  miss cost: p50 of a miss through the cache vs. the origin directly (fast origin)

The fast origin of a, b, e is nginx serving files (`Cache-Control: max-age=3600`) or, without
nginx, the bench's stand-in with no throttle; c and d use the Woodytoys origin (the project's
own when it has landed, else the stand-in) with short delays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.loadgen import LoadResult, aio_load, cache_verdict, run_wrk
from bench.peers import (
    Server,
    nginx_binary,
    nginx_cache,
    nginx_files,
    varnish_cache,
    varnishd_binary,
    wrk_binary,
)
from bench.procs import ProcessGroup, StartError
from bench.progress import Progress
from bench.servers import OriginSpec, edge_available, start_edge, start_origin
from bench.standin import deterministic_bytes
from bench.stats import ZipfSampler

SCENARIOS = {
    "a": "1 KB hits",
    "b": "5 MB hits",
    "c": "thundering herd",
    "d": "mixed Zipf reads + writes",
    "e": "miss cost",
}
SMALL = "/bench/obj/1024"
LARGE = f"/bench/obj/{5 * 1024 * 1024}"
CACHES = ("edge", "nginx", "varnish")


@dataclass
class Options:
    duration: float = 8.0
    rounds: int = 3
    connections: int = 64
    large_connections: int = 8
    threads: int = 2
    scenarios: str = "abcde"
    edge_workers: int = 2
    caches: tuple[str, ...] = CACHES
    herd: int = 32
    herd_seconds: float = 1.0
    keys: int = 200
    zipf_s: float = 1.0
    write_ratio: float = 0.05
    mixed_connections: int = 16
    miss_requests: int = 300
    origin_impl: str = "auto"
    loader: str = "auto"
    redis_url: str | None = None


@dataclass
class Outcome:
    scenario: str
    server: str
    result: LoadResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "server": self.server,
            "result": self.result.as_json() if self.result else None,
            "extra": self.extra,
            "error": self.error,
        }


def available_caches(wanted: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The caches that can run here, and why the others cannot."""
    ok: list[str] = []
    missing: dict[str, str] = {}
    for name in wanted:
        if name == "edge" and not edge_available():
            missing[name] = "`python -m edge serve` has not landed yet"
        elif name == "nginx" and nginx_binary() is None:
            missing[name] = "nginx is not installed"
        elif name == "varnish" and varnishd_binary() is None:
            missing[name] = "varnishd is not installed"
        else:
            ok.append(name)
    return ok, missing


def start_cache(group: ProcessGroup, kind: str, origin: Server, opts: Options, tag: str) -> Server:
    port = int(origin.url.rsplit(":", 1)[1])
    if kind == "edge":
        return start_edge(
            group,
            origin.url,
            node=f"edge-{tag}",
            workers=opts.edge_workers,
            redis_url=opts.redis_url,
            key_prefix=f"woody-bench-load-{os.getpid()}-{tag}",
        )
    if kind == "nginx":
        return nginx_cache(group, port, name=f"nginx-{tag}")
    if kind == "varnish":
        return varnish_cache(group, port, name=f"varnish-{tag}")
    raise ValueError(kind)


def get(url: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status), dict(resp.headers), resp.read()


def origin_count(stats: Any, path_prefix: str) -> int:
    """Requests the origin counted for paths starting with path_prefix (tolerant of shape)."""
    if isinstance(stats, dict):
        for key in ("requests", "paths", "per_path", "counts"):
            table = stats.get(key)
            if isinstance(table, dict) and all(isinstance(v, int) for v in table.values()):
                return sum(v for k, v in table.items() if str(k).startswith(path_prefix))
        return sum(origin_count(v, path_prefix) for v in stats.values() if isinstance(v, dict))
    return 0


def origin_stats(origin: Server) -> Any:
    _, _, body = get(origin.url + "/_origin/stats")
    return json.loads(body)


class LoadRun:
    def __init__(self, opts: Options, progress: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress
        self.outcomes: list[Outcome] = []
        self.notes: list[str] = []
        self.caches, self.missing = available_caches(opts.caches)
        self.wrk = wrk_binary() if opts.loader in ("auto", "wrk") else None
        if opts.loader == "wrk" and self.wrk is None:
            raise RuntimeError("--loader wrk but wrk is not installed")
        self.origins: dict[str, str] = {}

    def _step(self, name: str, expected: float) -> Any:
        if self.progress is None:
            import contextlib

            return contextlib.nullcontext()
        return self.progress.step(name, expected)

    def expected_seconds(self) -> float:
        o, n = self.opts, len(self.caches)
        per = {
            "a": (n + 1) * (max(o.duration, o.rounds) + 0.5 * o.rounds),
            "b": (n + 1) * (max(o.duration, o.rounds) + 0.5 * o.rounds),
            "c": n * (o.herd_seconds + 1.0),
            "d": n * (o.duration + 1.0),
            "e": (n + 1) * min(o.duration, 3.0),
        }
        starts = 2.0 * (n + 1)
        return sum(per[s] + starts for s in o.scenarios if s in per)

    # --- the fast origin -------------------------------------------------------------------

    def fast_origin(self, group: ProcessGroup) -> Server:
        if nginx_binary() is not None:
            files = {SMALL: deterministic_bytes(1024), LARGE: deterministic_bytes(5 * 1024 * 1024)}
            server = nginx_files(group, files, name="fast-origin")
            self.origins["fast"] = "nginx serving files (max-age=3600)"
            return server
        spec = OriginSpec(heavy_seconds=0.0, db_seconds=0.0, static_rate=0, impl="standin")
        self.origins["fast"] = "bench stand-in, --static-rate 0"
        return start_origin(group, spec, name="fast-origin")

    def api_origin(self, group: ProcessGroup, heavy: float) -> Server:
        spec = OriginSpec(
            heavy_seconds=heavy,
            db_seconds=0.05,
            static_rate=0,
            impl=self.opts.origin_impl,
            key_prefix=f"woody-bench-load-{uuid.uuid4().hex[:8]}",
        )
        server = start_origin(group, spec, name=f"api-origin-{uuid.uuid4().hex[:4]}")
        self.origins["api"] = server.name
        return server

    def start_all(
        self, group: ProcessGroup, origin: Server, tag: str
    ) -> list[tuple[str, Server | None, str | None]]:
        out: list[tuple[str, Server | None, str | None]] = []
        for kind in self.caches:
            try:
                out.append((kind, start_cache(group, kind, origin, self.opts, tag), None))
            except (RuntimeError, StartError, FileNotFoundError) as exc:
                out.append((kind, None, str(exc).splitlines()[0]))
        return out

    # --- hits: a and b ----------------------------------------------------------------------

    def hits(self, scenario: str, path: str, connections: int) -> None:
        o = self.opts
        with ProcessGroup() as group:
            with self._step(f"{scenario}: starting servers", 2.0 * (len(self.caches) + 1)):
                origin = self.fast_origin(group)
                servers = self.start_all(group, origin, scenario)
            targets: list[tuple[str, Server | None, str | None]] = [
                ("origin direct", origin, None),
                *servers,
            ]
            live: list[tuple[Outcome, str]] = []
            for name, server, error in targets:
                outcome = Outcome(scenario, name, error=error)
                self.outcomes.append(outcome)
                if server is None:
                    continue
                url = server.url + path
                try:
                    verdicts = []
                    # warm (on new connections, so each worker process gets some),
                    # then check the answers come from the cache
                    for _ in range(6):
                        _, headers, _ = get(url)
                        verdicts.append(cache_verdict(headers))
                    outcome.extra["warm_verdicts"] = verdicts
                    live.append((outcome, url))
                except OSError as exc:
                    outcome.error = str(exc)[:300]
            # Rounds in rotation, so a burst of load from elsewhere on the machine hits every
            # server about equally; each server's result is its median round.
            rounds = max(1, o.rounds)
            per_round = float(max(1, round(o.duration / rounds)))  # wrk takes whole seconds
            results: dict[str, list[LoadResult]] = {oc.server: [] for oc, _ in live}
            for r in range(rounds):
                for outcome, url in live:
                    if outcome.error:
                        continue
                    what = f"{scenario}: {outcome.server} ({connections} conns, round {r + 1})"
                    with self._step(what, per_round):
                        try:
                            got = self._hammer(url, connections, group.workdir, per_round)
                        except (RuntimeError, OSError, ValueError) as exc:
                            outcome.error = str(exc)[:300]
                            continue
                    results[outcome.server].append(got)
                    outcome.extra.setdefault("rounds", []).append(
                        {
                            "rps": got.rps,
                            "bytes_per_s": got.bytes_per_s,
                            "p50_ms": got.p(50.0),
                            "p99_ms": got.p(99.0),
                            "errors": got.errors,
                        }
                    )
            for outcome, _ in live:
                done = sorted(results[outcome.server], key=lambda x: x.rps)
                if done and not outcome.error:
                    outcome.result = done[len(done) // 2]

    def _hammer(self, url: str, connections: int, workdir: Path, duration: float) -> LoadResult:
        o = self.opts
        if self.wrk:
            return run_wrk(
                self.wrk,
                url,
                threads=o.threads,
                connections=connections,
                duration=duration,
                workdir=workdir,
            )
        return asyncio.run(
            aio_load(
                lambda i: ("read", url),
                connections=connections,
                duration=duration,
                keep_samples=True,
            )
        )

    # --- c: thundering herd -----------------------------------------------------------------

    def herd(self) -> None:
        o = self.opts
        with ProcessGroup() as group:
            with self._step("c: starting servers", 2.0 * (len(self.caches) + 1)):
                origin = self.api_origin(group, o.herd_seconds)
                servers = self.start_all(group, origin, "c")
            for name, server, error in servers:
                outcome = Outcome("c", name, error=error)
                self.outcomes.append(outcome)
                if server is None:
                    continue
                with self._step(f"c: {name} ({o.herd} cold requests)", o.herd_seconds + 0.5):
                    try:
                        outcome.extra = asyncio.run(self._herd_once(origin, server))
                    except (OSError, ValueError, aiohttp.ClientError) as exc:
                        outcome.error = str(exc)[:300]

    async def _herd_once(self, origin: Server, server: Server) -> dict[str, Any]:
        o = self.opts
        name = f"herd-{uuid.uuid4().hex[:10]}"
        url = f"{server.url}/api/misc/heavy?name={name}"
        before = origin_count(origin_stats(origin), "/api/misc/heavy")
        connector = aiohttp.TCPConnector(limit=o.herd + 1)
        timeout = aiohttp.ClientTimeout(total=max(60.0, 10 * o.herd_seconds))
        start = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one() -> tuple[int, float, str, bytes]:
                async with session.get(url) as resp:
                    body = await resp.read()
                    return (
                        resp.status,
                        time.perf_counter() - start,
                        cache_verdict(resp.headers),
                        body,
                    )

            answers = await asyncio.gather(*(one() for _ in range(o.herd)))
        await asyncio.sleep(0.2)
        after = origin_count(origin_stats(origin), "/api/misc/heavy")
        statuses: dict[str, int] = {}
        verdicts: dict[str, int] = {}
        for status, _, verdict, _ in answers:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        return {
            "concurrent": o.herd,
            "origin_requests": after - before,
            "slowest_s": max(a[1] for a in answers),
            "fastest_s": min(a[1] for a in answers),
            "statuses": statuses,
            "verdicts": verdicts,
            "same_body": len({a[3] for a in answers}) == 1,
        }

    # --- d: mixed traffic -------------------------------------------------------------------

    def mixed(self) -> None:
        o = self.opts
        with ProcessGroup() as group:
            with self._step("d: starting servers", 2.0 * (len(self.caches) + 1)):
                origin = self.api_origin(group, 0.02)
                servers = self.start_all(group, origin, "d")
            for name, server, error in servers:
                outcome = Outcome("d", name, error=error)
                self.outcomes.append(outcome)
                if server is None:
                    continue
                with self._step(f"d: {name} (Zipf s={o.zipf_s}, {o.keys} keys)", o.duration):
                    try:
                        outcome.result, outcome.extra = self._mixed_once(origin, server)
                    except (OSError, ValueError, aiohttp.ClientError) as exc:
                        outcome.error = str(exc)[:300]

    def _mixed_once(self, origin: Server, server: Server) -> tuple[LoadResult, dict[str, Any]]:
        o = self.opts
        run = uuid.uuid4().hex[:8]
        zipf = ZipfSampler(o.keys, o.zipf_s, seed=11)
        every = max(1, round(1 / o.write_ratio)) if o.write_ratio > 0 else 0

        def make(i: int) -> tuple[str, str]:
            if every and i % every == every - 1:
                return "write", f"{server.url}/api/products?product=bench-{run}-{i}"
            return "read", f"{server.url}/api/misc/heavy?name={run}-{zipf.sample()}"

        stats0 = origin_stats(origin)
        result = asyncio.run(aio_load(make, connections=o.mixed_connections, duration=o.duration))
        time.sleep(0.2)
        stats1 = origin_stats(origin)
        reads = result.kinds.get("read", 0)
        writes = result.kinds.get("write", 0)
        hits = sum(n for k, n in result.cache.items() if k.startswith("read:HIT"))
        origin_reads = origin_count(stats1, "/api/misc/heavy") - origin_count(
            stats0, "/api/misc/heavy"
        )
        origin_writes = origin_count(stats1, "/api/products") - origin_count(
            stats0, "/api/products"
        )
        origin_writes -= origin_count(stats1, "/api/products/") - origin_count(
            stats0, "/api/products/"
        )
        extra = {
            "reads": reads,
            "writes": writes,
            "hit_ratio": hits / reads if reads else None,
            "origin_reads": origin_reads,
            "offload": 1 - origin_reads / reads if reads else None,
            "origin_writes": origin_writes,
            "keys": o.keys,
            "zipf_s": o.zipf_s,
        }
        return result, extra

    # --- e: miss cost -----------------------------------------------------------------------

    def miss_cost(self) -> None:
        o = self.opts
        with ProcessGroup() as group:
            with self._step("e: starting servers", 2.0 * (len(self.caches) + 1)):
                origin = self.fast_origin(group)
                servers = self.start_all(group, origin, "e")
            targets: list[tuple[str, Server | None, str | None]] = [
                ("origin direct", origin, None),
                *servers,
            ]
            for name, server, error in targets:
                outcome = Outcome("e", name, error=error)
                self.outcomes.append(outcome)
                if server is None:
                    continue
                run = uuid.uuid4().hex[:8]
                url = f"{server.url}{SMALL}?miss={run}-"
                with self._step(f"e: {name} ({o.miss_requests} misses)", min(o.duration, 3.0)):
                    try:
                        outcome.result = asyncio.run(
                            aio_load(
                                lambda i, url=url: ("read", f"{url}{i}"),  # type: ignore[misc]
                                connections=1,
                                duration=o.duration,
                                max_requests=o.miss_requests,
                            )
                        )
                    except (OSError, ValueError, aiohttp.ClientError) as exc:
                        outcome.error = str(exc)[:300]

    def run(self) -> list[Outcome]:
        for s in self.opts.scenarios:
            if s == "a":
                self.hits("a", SMALL, self.opts.connections)
            elif s == "b":
                self.hits("b", LARGE, self.opts.large_connections)
            elif s == "c":
                self.herd()
            elif s == "d":
                self.mixed()
            elif s == "e":
                self.miss_cost()
        return self.outcomes


# --- reporting ------------------------------------------------------------------------------


def _find(outcomes: list[Outcome], scenario: str, server: str) -> Outcome | None:
    for outcome in outcomes:
        if outcome.scenario == scenario and outcome.server == server:
            return outcome
    return None


def _value(outcome: Outcome | None, fn: Callable[[Outcome], float | None]) -> float | None:
    if outcome is None or outcome.error:
        return None
    try:
        return fn(outcome)
    except (TypeError, KeyError, AttributeError):
        return None


METRIC: dict[str, tuple[str, Callable[[Outcome], float | None], bool]] = {
    # scenario: (what, value, higher is better)
    "a": ("hits/s", lambda oc: oc.result.rps if oc.result else None, True),
    "b": ("bytes/s", lambda oc: oc.result.bytes_per_s if oc.result else None, True),
    "c": ("origin requests", lambda oc: float(oc.extra["origin_requests"]), False),
    "d": ("origin offload", lambda oc: oc.extra.get("offload"), True),
    "e": ("miss p50 (ms)", lambda oc: oc.result.p(50.0) if oc.result else None, False),
}


def ratios(outcomes: list[Outcome], scenario: str) -> dict[str, float | None]:
    _, fn, _ = METRIC[scenario]
    edge = _value(_find(outcomes, scenario, "edge"), fn)
    out: dict[str, float | None] = {}
    for peer in ("nginx", "varnish"):
        other = _value(_find(outcomes, scenario, peer), fn)
        out[f"edge/{peer}"] = edge / other if edge is not None and other else None
    return out


def round_ratios(outcomes: list[Outcome], scenario: str) -> dict[str, list[float]]:
    """a and b: the ratio edge/peer in each round (round i of both ran back to back)."""
    field_name = "rps" if scenario == "a" else "bytes_per_s"
    edge = _find(outcomes, scenario, "edge")
    out: dict[str, list[float]] = {}
    for peer in ("nginx", "varnish"):
        other = _find(outcomes, scenario, peer)
        if edge is None or other is None:
            continue
        pairs = zip(edge.extra.get("rounds", []), other.extra.get("rounds", []), strict=False)
        out[f"edge/{peer}"] = [e[field_name] / p[field_name] for e, p in pairs if p[field_name]]
    return out


def _latency_row(result: LoadResult | None) -> list[str]:
    if result is None:
        return ["n/a"] * 3
    return [report.ms(result.p(50.0)), report.ms(result.p(99.0)), report.ms(result.p(99.9))]


def render_markdown(run: LoadRun, started: str, all_ratios: dict[str, dict[str, Any]]) -> str:
    o = run.opts
    lines = [
        f"## Load test ({started}, code at {report.git_rev()})",
        "",
        f"Loader: {'wrk' if run.wrk else 'aiohttp (ours)'} for a/b, aiohttp (ours) for c/d/e; "
        f"{o.duration:g} s per measurement; edge workers {o.edge_workers}, nginx 2 workers, "
        "Varnish default threads; all on this machine's loopback.",
        f"Fast origin: {run.origins.get('fast', '-')}; API origin: {run.origins.get('api', '-')}.",
        "Ratios are edge ÷ peer from this one run.",
        "",
    ]
    if run.missing:
        lines += [f"Not run: {', '.join(f'{k} ({v})' for k, v in run.missing.items())}.", ""]
    for s in o.scenarios:
        rows: list[list[str]] = []
        these = [oc for oc in run.outcomes if oc.scenario == s]
        if not these:
            continue
        lines.append(f"### {s}. {SCENARIOS[s]}")
        lines.append("")
        if s in "ab":
            conns = o.connections if s == "a" else o.large_connections
            lines.append(
                f"{conns} connections, {o.threads} threads, object warmed first; "
                f"{o.rounds} rounds of {max(1, round(o.duration / max(1, o.rounds)))} s per server "
                "in rotation; the median round is shown, the ratio is the median of the "
                "per-round ratios."
            )
            headers = ["server", "requests/s", "bytes/s", "p50", "p99", "p99.9", "errors", "warm"]
            for oc in these:
                r = oc.result
                rows.append(
                    [
                        oc.server,
                        report.si(r.rps if r else None),
                        report.si(r.bytes_per_s if r else None, "B"),
                        *_latency_row(r),
                        str(r.errors) if r else (oc.error or "n/a"),
                        ",".join(oc.extra.get("warm_verdicts", [])),
                    ]
                )
        elif s == "c":
            lines.append(
                f"{o.herd} concurrent cold requests for one heavy call "
                f"({o.herd_seconds:g} s at the origin); 1 origin request = fully collapsed."
            )
            headers = ["server", "origin requests", "slowest answer", "statuses", "cache says"]
            for oc in these:
                x = oc.extra
                rows.append(
                    [
                        oc.server,
                        str(x.get("origin_requests", "n/a")) if not oc.error else "n/a",
                        report.seconds(x.get("slowest_s")),
                        json.dumps(x.get("statuses", {})),
                        json.dumps(x.get("verdicts", {})) if not oc.error else str(oc.error),
                    ]
                )
        elif s == "d":
            lines.append(
                f"{o.mixed_connections} connections; reads of {o.keys} heavy-call URLs with Zipf "
                f"s={o.zipf_s:g}, {o.write_ratio:.0%} writes; offload = 1 − origin reads / reads."
            )
            headers = [
                "server",
                "requests/s",
                "hit ratio",
                "origin offload",
                "writes passed",
                "p50",
                "p99",
            ]
            for oc in these:
                r, x = oc.result, oc.extra
                hr, off = x.get("hit_ratio"), x.get("offload")
                rows.append(
                    [
                        oc.server,
                        report.si(r.rps if r else None),
                        f"{hr:.1%}" if hr is not None else "n/a",
                        f"{off:.1%}" if off is not None else "n/a",
                        f"{x.get('origin_writes', 'n/a')}/{x.get('writes', 'n/a')}",
                        report.ms(r.p(50.0) if r else None),
                        report.ms(r.p(99.0) if r else None),
                    ]
                )
                if oc.error:
                    rows[-1][1] = oc.error
        else:
            lines.append(
                f"{o.miss_requests} sequential requests, each for a new URL (a miss), one "
                "connection; added = p50 through the cache − p50 of the origin directly."
            )
            headers = ["server", "p50", "p90", "p99", "added p50", "p50 ratio"]
            direct = _find(run.outcomes, "e", "origin direct")
            d50 = direct.result.p(50.0) if direct and direct.result else None
            for oc in these:
                r = oc.result
                p50 = r.p(50.0) if r else None
                rows.append(
                    [
                        oc.server,
                        report.ms(p50),
                        report.ms(r.p(90.0) if r else None),
                        report.ms(r.p(99.0) if r else None),
                        report.ms(p50 - d50) if p50 is not None and d50 is not None else "n/a",
                        report.ratio(p50, d50),
                    ]
                )
        lines += ["", report.markdown_table(headers, rows)]
        for oc in these:
            if oc.error and s not in "cd":
                lines.append(f"- {oc.server}: {oc.error}")
        what = METRIC[s][0]
        these_ratios = all_ratios.get(s, {})
        spread = round_ratios(run.outcomes, s) if s in "ab" else {}

        def fmt(k: str, v: float | None, spread: dict[str, list[float]] = spread) -> str:
            if v is None:
                return f"{k} = n/a"
            rs = spread.get(k, [])
            per = f" (rounds: {', '.join(f'{x:.2f}' for x in rs)})" if len(rs) > 1 else ""
            return f"{k} = {v:.2f}×{per}"

        lines.append(
            f"Ratio ({what}): "
            + ", ".join(fmt(k, v) for k, v in these_ratios.items())
            + ("" if METRIC[s][2] else " (lower is better)")
        )
        lines.append("")
    return "\n".join(lines)


def chart(run: LoadRun, path: Path) -> Path:
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for s in run.opts.scenarios:
        if s == "c":
            continue
        curves = {
            oc.server: oc.result.percentiles_ms
            for oc in run.outcomes
            if oc.scenario == s and oc.result and oc.result.percentiles_ms
        }
        if curves:
            panels[f"{s}. {SCENARIOS[s]}"] = curves
    return report.percentile_chart(path, panels, "Latency by percentile (same run, same origin)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="a and b: split --duration into rounds in rotation"
    )
    parser.add_argument("--connections", type=int, default=64, help="connections for a (1 KB)")
    parser.add_argument("--large-connections", type=int, default=8, help="connections for b")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--scenarios", default="a,b,c,d,e", help="comma-separated: a,b,c,d,e")
    parser.add_argument("--edge-workers", type=int, default=2)
    parser.add_argument(
        "--redis",
        default=None,
        help="give the edge its shared Redis tier (its workers then collapse misses together)",
    )
    parser.add_argument("--caches", default=",".join(CACHES), help="edge,nginx,varnish")
    parser.add_argument("--herd", type=int, default=32, help="concurrent cold requests in c")
    parser.add_argument("--herd-seconds", type=float, default=1.0, help="heavy call time in c")
    parser.add_argument("--keys", type=int, default=200, help="distinct URLs in d")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent in d")
    parser.add_argument("--mixed-connections", type=int, default=16)
    parser.add_argument("--miss-requests", type=int, default=300, help="misses per server in e")
    parser.add_argument("--loader", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument(
        "--origin", dest="origin_impl", choices=("auto", "real", "standin"), default="auto"
    )
    parser.add_argument("--out", type=Path, default=report.DEFAULT_OUT)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--no-files", action="store_true", help="write nothing under --out")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def options_from(args: argparse.Namespace) -> Options:
    scenarios = "".join(s.strip() for s in args.scenarios.split(",") if s.strip())
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenarios: {','.join(bad)} (known: {','.join(SCENARIOS)})")
    caches = tuple(c.strip() for c in args.caches.split(",") if c.strip())
    bad = [c for c in caches if c not in CACHES]
    if bad:
        raise SystemExit(f"unknown caches: {','.join(bad)} (known: {','.join(CACHES)})")
    return Options(
        duration=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        large_connections=args.large_connections,
        threads=args.threads,
        scenarios=scenarios,
        edge_workers=args.edge_workers,
        caches=caches,
        herd=args.herd,
        herd_seconds=args.herd_seconds,
        keys=args.keys,
        zipf_s=args.zipf,
        mixed_connections=args.mixed_connections,
        miss_requests=args.miss_requests,
        origin_impl=args.origin_impl,
        loader=args.loader,
        redis_url=args.redis,
    )


def _forget_redis_keys(url: str, prefix: str) -> None:
    """Delete what the edges of this run wrote to the shared Redis."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        finally:
            client.close()
    except redis.RedisError:
        pass  # the keys expire on their own; nothing to fail the report for


def main(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> int:
    opts = options_from(args)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run = LoadRun(opts)
    with Progress(run.expected_seconds(), label="bench load", enabled=not args.quiet) as progress:
        run.progress = progress
        try:
            run.run()
        finally:
            if opts.redis_url:
                _forget_redis_keys(opts.redis_url, f"woody-bench-load-{os.getpid()}-")
    all_ratios: dict[str, dict[str, Any]] = {s: ratios(run.outcomes, s) for s in opts.scenarios}
    for s in "ab":
        # rounds of edge and peer ran back to back: their ratios are the paired comparison
        for key, values in round_ratios(run.outcomes, s).items():
            if values and s in all_ratios:
                all_ratios[s][key] = statistics.median(values)
    markdown = render_markdown(run, started, all_ratios)
    data: dict[str, Any] = {
        "kind": "load",
        "started": started,
        "options": opts.__dict__,
        "loader": "wrk" if run.wrk else "aiohttp",
        "caches": run.caches,
        "missing": run.missing,
        "origins": run.origins,
        "machine": report.machine(),
        "ratios": all_ratios,
        "round_ratios": {s: round_ratios(run.outcomes, s) for s in opts.scenarios if s in "ab"},
        "outcomes": [oc.as_json() for oc in run.outcomes],
    }
    report.publish(
        "load",
        markdown,
        data,
        lambda path: chart(run, path),
        args.out,
        write_files=not args.no_files,
        as_json=args.json,
        print_fn=print_fn,
    )
    return 0
