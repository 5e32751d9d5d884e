"""The phases of the fault run, one function each, in the order `PHASES` runs them.

Each takes the `Run` (the topology, the profile, the report, the orders placed so far) and
adds its own `Tally` to the report. The origin and Redis are killed with `Topology.kill`
(SIGKILL of the whole process group, a crash) and brought back with `Topology.restart`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.chaos.clients import Load, hold_connections
from bench.chaos.common import CACHED, IMAGE, say
from bench.chaos.fuzz import fuzz
from bench.chaos.orders import check_orders
from bench.chaos.report import LONG, Profile, Report, Tally
from bench.topology import Topology


@dataclass
class Run:
    """What the phases of one fault run share."""

    topo: Topology
    profile: Profile
    report: Report
    tag: str
    db: Path
    orders: list[str] = field(default_factory=list)
    """Order ids the edge answered 200 for."""
    order_failures: int = 0

    @property
    def nodes(self) -> list[str]:
        return self.topo.node_urls

    @property
    def clients(self) -> int:
        return 16 if self.profile is LONG else 8


async def _json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        return json.loads(await r.read())


async def _count_origin_requests(run: Run) -> None:
    """Add what the origin counted so far (its counters restart with it)."""
    async with aiohttp.ClientSession() as s:
        with contextlib.suppress(Exception):
            stats = await _json(s, run.topo.origin_url + "/_origin/stats")
            run.report.origin_requests += int(stats["total"])


async def _redis_states(run: Run) -> list[str]:
    async with aiohttp.ClientSession() as s:
        return [(await _json(s, n + "/_edge/health"))["redis"] for n in run.nodes]


@contextlib.asynccontextmanager
async def _under_load(run: Run, name: str, seconds: float, clients: int) -> AsyncIterator[Tally]:
    """A phase during which `clients` load clients (with orders) run for `seconds`."""
    tally = Tally(name)
    run.report.phases.append(tally)
    load = Load(run.nodes, tally, run.orders, run.tag)
    runner = asyncio.create_task(load.run(clients, seconds))
    t0 = time.monotonic()
    try:
        yield tally
        await runner
    finally:
        runner.cancel()
        tally.seconds = time.monotonic() - t0
        run.order_failures += load.order_failures
    say(tally.line())


async def warm_up(run: Run) -> None:
    """1. The cached page and the 5 MB image, twice on every node."""
    warm = Tally("warm-up")
    run.report.phases.append(warm)
    async with aiohttp.ClientSession() as s:
        for node in run.nodes:
            for path in CACHED:
                for _ in range(2):
                    async with s.get(node + path) as r:
                        await r.read()
                        warm.add(path, r.status, r.headers.get("X-Cache", ""))
    say(f"warm: {warm.line()}")


async def _outage(
    run: Run, name: str, service: str, during: Callable[[], Awaitable[None]], tail: float
) -> None:
    """Load for 1 s, then `service` killed while `during` runs, restarted, load for `tail` s."""
    outage = run.profile.outage
    async with _under_load(run, name, 1 + outage + tail, run.clients):
        await asyncio.sleep(1)
        if service == "origin":
            await _count_origin_requests(run)  # its counters start again with it
        say(f"killing {service} (SIGKILL) for {outage:g} s under load ({run.clients} clients)")
        await run.topo.kill(service)
        await during()
        say(f"restarting {service}")
        await run.topo.restart(service)


async def origin_down(run: Run) -> None:
    """2. The origin killed under load for the outage time, then restarted."""
    await _outage(run, "origin down", "origin", lambda: asyncio.sleep(run.profile.outage), 1)


async def redis_down(run: Run) -> None:
    """3. Redis killed under load for the outage time, then restarted."""

    async def during() -> None:
        await asyncio.sleep(run.profile.outage / 2)
        say(f"  /_edge/health redis while down: {await _redis_states(run)}")
        await asyncio.sleep(run.profile.outage / 2)

    await _outage(run, "redis down", "redis", during, 2)
    for _ in range(100):
        states = await _redis_states(run)
        if all(x == "up" for x in states):
            break
        await asyncio.sleep(0.1)
    say(f"  /_edge/health redis after restart: {states}")


async def many_connections(run: Run) -> None:
    """4. Many keep-alive connections held at once, beside a little load."""
    p = run.profile
    say(f"holding {p.connections} keep-alive connections for {p.hold:g} s")
    async with _under_load(run, f"{p.connections} connections", p.hold, 4) as tally:
        await hold_connections(run.nodes, tally, p.connections, p.hold)


async def fuzzing(run: Run) -> None:
    """5. Generated request lines and headers against one node; its cached image intact."""
    node = next(s for s in run.topo.services if s.role == "edge")
    host, port = run.nodes[0].removeprefix("http://").split(":")
    say(f"fuzzing {node.name} with {run.profile.fuzz_cases} generated requests")
    t0 = time.monotonic()
    got = await asyncio.to_thread(
        fuzz, host, int(port), run.profile.fuzz_cases, lambda: node.running
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(run.nodes[0] + IMAGE) as r:
            body = await r.read()
            image_ok = r.status == 200 and len(body) == 5_000_000
        async with s.get(run.topo.origin_url + IMAGE) as r:
            image_ok = image_ok and body == await r.read()
    got["cached_image_intact_after"] = image_ok
    got["seconds"] = round(time.monotonic() - t0, 1)
    run.report.fuzz = got
    if not node.running:
        run.report.crashes += 1
    say(f"fuzz: {got}")


async def lost_writes(run: Run) -> None:
    """6. Every order the edge answered 200 for exists exactly once at the origin."""
    report = run.report
    async with aiohttp.ClientSession() as s:
        stats = await asyncio.gather(*(_json(s, n + "/_edge/stats") for n in run.nodes))
    report.edge_origin_fetches = sum(int(x["origin_fetches"]) for x in stats)
    await _count_origin_requests(run)
    found, lost, dup = check_orders(run.db, run.orders, f"chaos-{run.tag}-")
    report.orders_ok = len(run.orders)
    report.orders_failed = run.order_failures
    report.orders_found, report.orders_lost, report.orders_duplicated = found, lost, dup
    say(
        f"orders: {len(run.orders)} answered 200, {found} found at the origin, {lost} lost, "
        f"{dup} duplicated; {run.order_failures} refused (5xx/errors, the client knows)"
    )


PHASES: tuple[Callable[[Run], Awaitable[None]], ...] = (
    warm_up,
    origin_down,
    redis_down,
    many_connections,
    fuzzing,
    lost_writes,
)
