"""Load generators: wrk (when installed) and our own asyncio/aiohttp one.

wrk runs with a small Lua `done()` hook that prints its summary and latency percentiles as
one JSON line, so nothing depends on wrk's human-readable output. Our own generator keeps
every sample (exact percentiles) and also fills a `LogHistogram`, and it sees each
response's headers (cache status) and can choose each request's URL (Zipf, writes).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import run_tool
from bench.stats import PERCENTILES, LogHistogram, percentiles

WRK_LUA = """
local ps = {%s}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},' ..
    '"min_us":%%d,"max_us":%%d,"mean_us":%%f,"stdev_us":%%f,"percentiles_us":[',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev))
  for i, p in ipairs(ps) do
    local sep = ","
    if i == #ps then sep = "" end
    io.write(string.format('[%%g,%%d]%%s', p, latency:percentile(p), sep))
  end
  io.write("]}\\n")
end
"""


@dataclass
class LoadResult:
    """One load run against one URL set: throughput and latency (milliseconds)."""

    tool: str
    requests: int
    seconds: float
    bytes: int
    errors: int
    percentiles_ms: list[tuple[float, float]]
    statuses: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float | None:
        for p, v in self.percentiles_ms:
            if abs(p - q) < 1e-9:
                return v
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "seconds": self.seconds,
            "rps": self.rps,
            "bytes": self.bytes,
            "bytes_per_s": self.bytes_per_s,
            "errors": self.errors,
            "percentiles_ms": self.percentiles_ms,
            "statuses": self.statuses,
            "cache": self.cache,
            "kinds": self.kinds,
            "samples_ms": [round(v, 4) for v in self.samples_ms],
            "raw": self.raw,
        }


def parse_wrk(stdout: str) -> dict[str, Any]:
    """The JSON line our Lua hook printed (raises ValueError when there is none)."""
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            return data
    raise ValueError(f"no WRKJSON line in wrk output:\n{stdout[-2000:]}")


def run_wrk(
    wrk: str,
    url: str,
    *,
    threads: int,
    connections: int,
    duration: float,
    workdir: Path,
    timeout_s: float = 10.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    script = workdir / "bench-done.lua"
    script.write_text(WRK_LUA % ",".join(f"{p:g}" for p in PERCENTILES))
    argv = [
        wrk,
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        *(arg for k, v in (headers or {}).items() for arg in ("-H", f"{k}: {v}")),
        "-s",
        str(script),
        url,
    ]
    code, stdout, stderr = run_tool(argv, duration + timeout_s + 30)
    if code != 0:
        raise RuntimeError(f"wrk failed ({code}): {stderr.strip()[:500]}")
    data = parse_wrk(stdout)
    errors = data["errors"]
    return LoadResult(
        tool="wrk",
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        bytes=int(data["bytes"]),
        errors=sum(int(v) for v in errors.values()),
        # wrk's percentile(100) is not its max: use the max it reports
        percentiles_ms=[
            (float(p), (data["max_us"] if p >= 100 else v) / 1000.0)
            for p, v in data["percentiles_us"]
        ],
        raw={"argv": argv, "summary": data, "stdout": stdout},
    )


def run_h2load(
    h2load: str,
    url: str,
    *,
    clients: int,
    streams: int,
    threads: int,
    duration: float,
    warmup: float = 1.0,
) -> LoadResult:
    """h2load (nghttp2) over h2: `clients` connections with `streams` requests in flight
    each, for `duration` s after a warm-up. It reports no percentiles, only the mean."""
    argv = [
        h2load,
        f"-c{clients}",
        f"-m{streams}",
        f"-t{max(1, min(threads, clients))}",
        f"-D{max(1, round(duration))}",
        f"--warm-up-time={warmup:g}",
        url,
    ]
    code, stdout, stderr = run_tool(argv, duration + warmup + 40)
    if code != 0:
        raise RuntimeError(f"h2load failed ({code}): {(stderr or stdout).strip()[-500:]}")
    return parse_h2load(stdout, argv)


def run_h2load_new_connections(
    h2load: str, url: str, *, clients: int, threads: int, duration: float
) -> LoadResult:
    """h2load over HTTP/1.1 with `Connection: close`: every request a new connection and a full
    TLS handshake (h2load keeps no session). h2load reconnects only when counting requests
    (`-n`; with `-D` it stalls at the first close), so a short first run sets the count that
    lasts about `duration`. Not wrk: while a handshake waits for the server, wrk polls its
    socket for writability and spins (perf of wrk: epoll_wait, read, EAGAIN, again), taking
    CPU from the servers on the same cores, the more so the slower the server."""

    def run(count: int) -> LoadResult:
        argv = [
            h2load,
            "--h1",
            "-H",
            "Connection: close",
            f"-n{count}",
            f"-c{clients}",
            f"-t{max(1, min(threads, clients))}",
            url,
        ]
        code, stdout, stderr = run_tool(argv, 3 * duration + 40)
        if code != 0:
            raise RuntimeError(f"h2load failed ({code}): {(stderr or stdout).strip()[-500:]}")
        return parse_h2load(stdout, argv)

    probe = run(clients * 25)
    return run(max(clients * 25, int(probe.rps * duration)))


def parse_h2load(stdout: str, argv: list[str] | None = None) -> LoadResult:
    import re

    finished = re.search(r"finished in ([\d.]+)(m?s)", stdout)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        stdout,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout)
    traffic = re.search(
        r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?\((\d+)\) data", stdout
    )
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", stdout)
    if not (finished and req and codes and traffic):
        raise RuntimeError(f"cannot read h2load's output: {stdout.strip()[-500:]}")
    seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    succeeded = int(req.group(4))
    errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7))
    statuses = {f"{k}xx": int(codes.group(i + 1)) for i, k in enumerate("2345")}
    pct: list[tuple[float, float]] = []
    if mean:
        unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean.group(2)]
        pct = [(-1.0, float(mean.group(1)) * unit)]  # -1: the mean (no percentiles)
    return LoadResult(
        tool="h2load",
        requests=succeeded,
        seconds=seconds,
        # over HTTP/1.1 h2load counts no total, only the heads and the bodies
        bytes=max(int(traffic.group(1)), int(traffic.group(2)) + int(traffic.group(3))),
        errors=errors + statuses["4xx"] + statuses["5xx"],
        percentiles_ms=pct,
        statuses=statuses,
        raw={"argv": argv or [], "stdout": stdout[-4000:]},
    )


def cache_verdict(headers: Any) -> str:
    """HIT, MISS, ... from X-Cache (edge, our nginx and Varnish set-ups) or Cache-Status."""
    x_cache = headers.get("X-Cache")
    if x_cache:
        return str(x_cache).split(",")[0].strip().upper() or "-"
    status = str(headers.get("Cache-Status", ""))
    if "; hit" in status:
        return "HIT"
    if "fwd=" in status:
        return "MISS"
    return "-"


RequestMaker = Callable[[int], tuple[str, str]]
"""Given the request number, the (kind, url) to send; kind is e.g. 'read' or 'write'."""


async def aio_load(
    make: RequestMaker,
    *,
    connections: int,
    duration: float,
    max_requests: int = 10_000_000,
    keep_samples: bool = True,
    request_timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`connections` workers on keep-alive connections, until `duration` or `max_requests`;
    every request carries `headers`."""
    hist = LogHistogram()
    samples: list[float] = []
    statuses: collections.Counter[str] = collections.Counter()
    cache: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    counter = itertools.count()
    total_bytes = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    start = time.perf_counter()
    deadline = start + duration

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:

        async def worker() -> None:
            nonlocal total_bytes, errors
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= max_requests:
                    return
                kind, url = make(i)
                t0 = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as resp:
                        n = 0
                        async for chunk in resp.content.iter_any():
                            n += len(chunk)
                        verdict = cache_verdict(resp.headers)
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                elapsed_ms = (time.perf_counter() - t0) * 1000.0
                total_bytes += n
                statuses[str(status)] += 1
                kinds[kind] += 1
                cache[f"{kind}:{verdict}"] += 1
                hist.record(elapsed_ms * 1000.0)
                if keep_samples:
                    samples.append(elapsed_ms)

        await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - start
    if keep_samples and samples:
        pct = percentiles(samples)
    elif hist.total:
        pct = [(p, v / 1000.0) for p, v in hist.percentiles()]
    else:
        pct = []
    return LoadResult(
        tool="aiohttp",
        requests=sum(statuses.values()),
        seconds=seconds,
        bytes=total_bytes,
        errors=errors,
        percentiles_ms=pct,
        statuses=dict(statuses),
        cache=dict(cache),
        kinds=dict(kinds),
        samples_ms=samples,
    )
