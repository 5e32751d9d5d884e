"""`woody-edge top`: a terminal view of one or several edge nodes, refreshed every second,
in the spirit of varnishstat and varnishtop.

For each `--edge URL` it reads `/_edge/stats` (the whole node's numbers) and
`/_edge/history` (per-second rates; the rates shown are the mean of the last `RATE_SECONDS`
seconds, so even one frame has them) and draws, with rich: requests/s, hit ratio, bytes
out/s, origin fetches and errors/s, collapsed/s, cache size, latency percentiles; the top
URLs by hits and by bytes; the origins' health. A node that does not answer is shown as
such, the others still are. `--once` prints one frame (plain text when the output is not
a terminal) and exits: 0 when every node answered, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

RATE_SECONDS = 5
TOP_ROWS = 8


@dataclass
class Reading:
    edge: str
    stats: dict[str, Any] | None = None
    history: dict[str, Any] | None = None
    error: str | None = None

    def rate(self, series: str) -> float:
        rows = (self.history or {}).get("samples", [])[-RATE_SECONDS:]
        seconds = sum(float(r.get("seconds", 1.0)) for r in rows)
        total = sum(float(r.get(series, 0)) * float(r.get("seconds", 1.0)) for r in rows)
        return total / seconds if seconds else 0.0


async def read_edge(session: aiohttp.ClientSession, edge: str) -> Reading:
    base = edge.rstrip("/")
    out = Reading(edge)
    try:
        for name in ("stats", "history"):
            async with session.get(f"{base}/_edge/{name}") as resp:
                if resp.status != 200:
                    out.error = f"/_edge/{name}: HTTP {resp.status}"
                    return out
                setattr(out, name, json.loads(await resp.read()))
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
        out.error = f"{exc.__class__.__name__}: {exc}".rstrip(": ")
    return out


async def read_all(edges: list[str], timeout: float) -> list[Reading]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return list(await asyncio.gather(*(read_edge(session, e) for e in edges)))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 0.001:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def human_age(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s / 3600:.1f} h"


def edge_panel(r: Reading) -> RenderableType:
    if r.error is not None or r.stats is None:
        return Panel(Text(f"unreachable: {r.error}", style="bold red"), title=r.edge)
    st = r.stats
    memory = st.get("memory", {})
    errors = sum(st.get("origin_errors", {}).values())
    summary = Table.grid(padding=(0, 3))
    for _ in range(4):
        summary.add_column(justify="left")
    summary.add_row(
        f"[b]{r.rate('requests'):.1f}[/] req/s",
        f"hit ratio [b]{100 * st.get('hit_ratio', 0.0):.1f} %[/]",
        f"[b]{human_bytes(r.rate('bytes'))}[/]/s out",
        f"origin [b]{r.rate('origin_fetches'):.1f}[/]/s, errors {r.rate('origin_errors'):.1f}/s",
    )
    latency = st.get("latency", {})
    summary.add_row(
        f"{st.get('requests', 0)} requests",
        f"{st.get('hits', 0)} hits / {st.get('misses', 0)} misses",
        f"{human_bytes(st.get('bytes_served', 0))} in all",
        f"{st.get('origin_fetches', 0)} fetches, {errors} errors,"
        f" {st.get('collapsed', 0)} collapsed",
    )
    summary.add_row(
        f"cache {human_bytes(memory.get('bytes', 0))}",
        f"{memory.get('entries', 0)} entries",
        f"hit p99 {human_seconds((latency.get('hit') or {}).get('p99'))}",
        f"miss p99 {human_seconds((latency.get('miss') or {}).get('p99'))}",
    )
    tops = Table(box=box.SIMPLE, expand=True, pad_edge=False)
    tops.add_column("top URLs by hits", overflow="ellipsis", no_wrap=True, ratio=3)
    tops.add_column("hits", justify="right")
    tops.add_column("top URLs by bytes", overflow="ellipsis", no_wrap=True, ratio=3)
    tops.add_column("bytes", justify="right")
    by_hits = st.get("top_hits", [])[:TOP_ROWS]
    by_bytes = st.get("top_bytes", [])[:TOP_ROWS]
    for i in range(max(len(by_hits), len(by_bytes))):
        h = by_hits[i] if i < len(by_hits) else ("", "")
        b = by_bytes[i] if i < len(by_bytes) else ("", None)
        tops.add_row(h[0], str(h[1]), b[0], human_bytes(b[1]) if b[1] is not None else "")
    origins = Text("origins: ")
    for o in st.get("origins", []):
        origins.append(f"{o['url']} ", style="")
        origins.append("up  " if o.get("up") else "DOWN  ", style="green" if o.get("up") else "red")
    title = (
        f"{st.get('node')} · {r.edge} · {len(st.get('workers', []))} worker(s) · "
        f"up {human_age(st.get('uptime_seconds', 0))} · redis "
        f"{st.get('redis', {}).get('status', 'off')}"
    )
    return Panel(Group(summary, tops, origins), title=title, title_align="left")


def frame(readings: list[Reading]) -> RenderableType:
    parts: list[RenderableType] = [edge_panel(r) for r in readings]
    answered = [r for r in readings if r.stats is not None]
    if len(readings) > 1 and answered:
        total = sum(r.rate("requests") for r in answered)
        hits = sum(int(r.stats.get("hits", 0)) for r in answered if r.stats)
        misses = sum(int(r.stats.get("misses", 0)) for r in answered if r.stats)
        ratio = hits / (hits + misses) if hits + misses else 0.0
        parts.append(
            Text(
                f"all {len(answered)}/{len(readings)} nodes: {total:.1f} req/s, "
                f"hit ratio {100 * ratio:.1f} %, "
                f"{human_bytes(sum(r.rate('bytes') for r in answered))}/s out"
            )
        )
    return Group(*parts)


async def run(edges: list[str], once: bool, interval: float, console: Console) -> int:
    timeout = max(0.5, interval * 0.9)
    if once:
        readings = await read_all(edges, max(timeout, 3.0))
        console.print(frame(readings))
        return 0 if all(r.error is None for r in readings) else 1
    from rich.live import Live

    loop = asyncio.get_running_loop()
    with Live(frame(await read_all(edges, timeout)), console=console, screen=False) as live:
        while True:
            start = loop.time()
            live.update(frame(await read_all(edges, timeout)))
            await asyncio.sleep(max(0.0, interval - (loop.time() - start)))


def main(edges: list[str], once: bool, interval: float, width: int | None = None) -> int:
    console = Console(width=width) if width else Console()
    try:
        return asyncio.run(run(edges, once, interval, console))
    except KeyboardInterrupt:
        return 0
