"""What every scenario of `bench load` uses: its servers, the load tools, CPU readings.

A `Context` lives for one scenario: its `ProcessGroup` holds the origin and the caches the
scenario started, and stops them when the scenario is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from bench.load.options import Options
from bench.load.scenario import Outcome, Target
from bench.loadgen import LoadResult, aio_load, run_wrk
from bench.peers import (
    Server,
    nginx_binary,
    nginx_cache,
    nginx_files,
    varnish_cache,
    varnishd_binary,
)
from bench.procfs import CpuTimes, trees_cpu
from bench.procs import REPO, ProcessGroup, StartError
from bench.progress import Progress
from bench.servers import OriginSpec, edge_available, start_edge, start_floor, start_origin
from bench.standin import deterministic_bytes

if TYPE_CHECKING:
    from bench.topology.certs import DevCert

T = TypeVar("T")

SMALL = "/bench/obj/1024"
LARGE = f"/bench/obj/{5 * 1024 * 1024}"
PAGE = "/index.html"
FLOOR_SCENARIOS = ("a", "h", "j")  # where the floor's constant 1 KB answer is the object
FLOORS = ("floor", "floor-hit")  # bench.floor, and bench.floor --hit
"""The shop's own front page (4.6 KB), as the fast origin serves it."""
PAGE_BYTES = (REPO / "origin" / "static" / "index.html").read_bytes()


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


def get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection: status, headers and body, whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:  # 304, 4xx, 5xx: an answer all the same
        return exc.code, dict(exc.headers), exc.read()


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
    return json.loads(get(origin.url + "/_origin/stats")[2])


def cpu_of(server: Server) -> CpuTimes:
    """CPU time so far of every process of the server (each leader and all below it)."""
    return trees_cpu([c.pid for c in server.managed if c.pid is not None])


def with_cpu(server: Server, fn: Callable[[], T]) -> tuple[T, CpuTimes]:
    """fn() and the CPU time the server's process tree spent while it ran."""
    before = cpu_of(server)
    out = fn()
    return out, cpu_of(server) - before


@dataclass
class Context:
    opts: Options
    group: ProcessGroup
    caches: list[str]
    wrk: str | None
    progress: Progress | None = None
    origins: dict[str, str] = field(default_factory=dict)
    """What served as the fast and the API origin (for the report)."""
    _origin: Server | None = None

    @property
    def origin(self) -> Server:
        """The origin this scenario started (fast_origin or api_origin)."""
        assert self._origin is not None, "start an origin first"
        return self._origin

    @contextlib.contextmanager
    def step(self, name: str, expected: float) -> Iterator[None]:
        if self.progress is None:
            yield
            return
        with self.progress.step(name, expected):
            yield

    # --- servers ---------------------------------------------------------------------------

    def fast_origin(self) -> Server:
        """nginx serving files (max-age=3600), else the stand-in with no throttle."""
        if nginx_binary() is not None:
            files = {
                SMALL: deterministic_bytes(1024),
                LARGE: deterministic_bytes(5 * 1024 * 1024),
                PAGE: PAGE_BYTES,
            }
            server = nginx_files(self.group, files, name="fast-origin")
            self.origins["fast"] = "nginx serving files (max-age=3600)"
            self._origin = server
            return server
        spec = OriginSpec(heavy_seconds=0.0, db_seconds=0.0, static_rate=0, impl="standin")
        self.origins["fast"] = "bench stand-in, --static-rate 0"
        self._origin = start_origin(self.group, spec, name="fast-origin")
        return self._origin

    def api_origin(self, heavy: float) -> Server:
        """The Woodytoys origin with a `heavy` s heavy call and short DB delays."""
        spec = OriginSpec(
            heavy_seconds=heavy,
            db_seconds=0.05,
            static_rate=0,
            impl=self.opts.origin_impl,
            key_prefix=f"woody-bench-load-{uuid.uuid4().hex[:8]}",
        )
        server = start_origin(self.group, spec, name=f"api-origin-{uuid.uuid4().hex[:4]}")
        self.origins["api"] = server.name
        self._origin = server
        return server

    def start_cache(self, kind: str, origin: Server, tag: str) -> Server:
        port = int(origin.url.rsplit(":", 1)[1])
        if kind == "edge":
            return self.start_edge(origin.url, tag)
        if kind == "nginx":
            return nginx_cache(self.group, port, name=f"nginx-{tag}")
        if kind == "varnish":
            return varnish_cache(self.group, port, name=f"varnish-{tag}")
        if kind == "floor" and tag == "e":  # a miss: the floor as a proxy to the origin
            name = f"floor-proxy-{tag}"
            return start_floor(self.group, self.opts.edge_workers, name=name, proxy=origin.url)
        if kind in FLOORS:
            return self.start_floor(tag, kind)
        raise ValueError(kind)

    def start_edge(
        self, origin_url: str, tag: str, sections: dict[str, dict[str, object]] | None = None
    ) -> Server:
        """The edge on config/edge.yaml, with `sections` and then `--edge-set`'s keys over it."""
        merged: dict[str, dict[str, object]] = {k: dict(v) for k, v in (sections or {}).items()}
        for name, values in self.opts.edge_sections.items():
            merged.setdefault(name, {}).update(values)
        return start_edge(
            self.group,
            origin_url,
            node=f"edge-{tag}",
            workers=self.opts.edge_workers,
            redis_url=self.opts.redis_url,
            key_prefix=f"woody-bench-load-{os.getpid()}-{tag}",
            sections=merged,
        )

    def start_floor(self, tag: str, kind: str, cert: DevCert | None = None) -> Server:
        """`bench.floor` (`kind` floor or floor-hit) with the edge's workers; it answers
        one 1 KB object."""
        if tag not in FLOOR_SCENARIOS:
            raise RuntimeError(f"the {kind} answers one 1 KB object: a, h and j only (e: floor)")
        hit = kind == "floor-hit"
        return start_floor(self.group, self.opts.edge_workers, cert, f"{kind}-{tag}", hit)

    def start_caches(self, origin: Server, tag: str) -> list[Target]:
        """Every cache of the run in front of origin; one that fails carries its error."""
        out: list[Target] = []
        for kind in self.caches:
            try:
                out.append(Target(kind, self.start_cache(kind, origin, tag)))
            except (RuntimeError, StartError, FileNotFoundError) as exc:
                out.append(Target(kind, None, str(exc).splitlines()[0]))
        return out

    def each(
        self,
        letter: str,
        targets: list[Target],
        doing: str,
        expected: float,
        fn: Callable[[Outcome, Server], None],
    ) -> list[Outcome]:
        """One outcome per target: fn(outcome, server) for each that started, as a progress
        step "<letter>: <target> (<doing>)"; an I/O or HTTP error becomes its outcome's error."""
        outcomes = []
        for target in targets:
            outcome = Outcome(letter, target.name, error=target.error)
            outcomes.append(outcome)
            if target.server is None:
                continue
            with self.step(f"{letter}: {target.name} ({doing})", expected):
                try:
                    fn(outcome, target.server)
                except (OSError, ValueError, aiohttp.ClientError) as exc:
                    outcome.error = str(exc)[:300]
        return outcomes

    def starting(self, letter: str) -> Any:
        return self.step(f"{letter}: starting servers", 2.0 * (len(self.caches) + 1))

    # --- load ------------------------------------------------------------------------------

    def hammer(
        self,
        url: str,
        connections: int,
        duration: float,
        headers: dict[str, str] | None = None,
    ) -> LoadResult:
        """wrk when there is one, else our generator: one URL, keep-alive connections."""
        o = self.opts
        if self.wrk:
            return run_wrk(
                self.wrk,
                url,
                threads=o.threads,
                connections=connections,
                duration=duration,
                workdir=self.group.workdir,
                headers=headers,
            )
        return asyncio.run(
            aio_load(
                lambda i: ("read", url),
                connections=connections,
                duration=duration,
                keep_samples=True,
                headers=headers,
            )
        )
