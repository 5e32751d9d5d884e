"""`memory`: the edge's resident memory during a cold 5 MB fill, sliced and whole."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO, ProcessGroup
from bench.servers import OriginSpec, Server, start_edge, start_origin


def _status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[name] = int(rest.split()[0])
    return out


def _edge_pids(edge: Server) -> list[int]:
    from bench.procfs import descendants

    pids: list[int] = []
    for child in edge.managed:
        if child.proc is not None:
            pids += [child.proc.pid, *descendants(child.proc.pid)]
    return pids


async def _fetch_sampled(
    url: str, pids: list[int], peaks: dict[int, dict[str, int]]
) -> tuple[float, int]:
    """One GET read to the end while the processes' memory is sampled every 20 ms."""
    import asyncio

    import aiohttp

    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            for pid in pids:
                with contextlib.suppress(OSError):
                    for k, v in _status_kib(pid).items():
                        peaks[pid][k] = max(peaks[pid].get(k, 0), v)
            await asyncio.sleep(0.02)

    sampler = asyncio.ensure_future(sample())
    try:
        async with aiohttp.ClientSession() as session:
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                n = 0
                async for chunk in resp.content.iter_chunked(65536):
                    n += len(chunk)
            return time.perf_counter() - t0, n
    finally:
        done.set()
        await sampler


def memory_run(rate: int) -> dict[str, Any]:
    """RSS of the edge's processes sampled every 20 ms during one cold GET of the 5 MB image,
    sliced (config/edge.yaml: 128 KB slices, 8 at once) and not (`slice: false`)."""
    import asyncio

    out: dict[str, Any] = {}
    for label, slice_rule in (("sliced (128k x 8)", None), ("whole (slice: false)", False)):
        with ProcessGroup() as group:
            origin = start_origin(
                group, OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=rate)
            )
            raw = yaml.safe_load((REPO / "config" / "edge.yaml").read_text())
            for rule in raw["rules"]:
                if rule.get("match") == "/*.jpg" and slice_rule is not None:
                    rule["slice"] = slice_rule
            path = group.subdir(f"edge-{len(out)}") / "edge.yaml"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            edge = start_edge(group, origin.url, node="edge-m", config=path)
            pids = _edge_pids(edge)
            before = {pid: _status_kib(pid) for pid in pids}
            peaks: dict[int, dict[str, int]] = {pid: dict(v) for pid, v in before.items()}

            seconds, size = asyncio.run(_fetch_sampled(edge.url + "/5mo.jpg", pids, peaks))
            after = {pid: _status_kib(pid) for pid in pids}
            out[label] = {
                "seconds": seconds,
                "bytes": size,
                "processes": {
                    str(pid): {"before": before[pid], "peak": peaks[pid], "after": after[pid]}
                    for pid in pids
                },
            }
    return out


def memory_table(data: dict[str, Any]) -> str:
    lines = [
        "| cold GET /5mo.jpg | seconds | process | RSS before | RSS peak | growth | of which "
        "private (RssAnon) | of which shared memory (RssShmem: the node tier) |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, run in data.items():
        for pid, p in run["processes"].items():
            b, k = p["before"], p["peak"]
            lines.append(
                f"| {label} | {run['seconds']:.2f} | {pid} | {b['VmRSS'] / 1024:.1f} MiB | "
                f"{k['VmRSS'] / 1024:.1f} MiB | {(k['VmRSS'] - b['VmRSS']) / 1024:+.1f} MiB | "
                f"{(k['RssAnon'] - b['RssAnon']) / 1024:+.1f} MiB | "
                f"{(k['RssShmem'] - b['RssShmem']) / 1024:+.1f} MiB |"
            )
    return "\n".join(lines)
