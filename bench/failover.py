"""A Redis primary killed while clients load the edge nodes: what the clients and the purges
saw. Used by `bench.redis_modes` (edge processes, a 5 s failover) and by the failover tests
(nodes in the test's process, a 1-2 s failover).

`failover_run` loads every node with GETs of cached objects, kills the primary, sends purges
through the nodes while Redis fails over and checks each one answered 200 is applied on
every node (an `only-if-cached` probe answers 504), and times how long until the shared tier
answered again (a read of a key of the killed primary's slot) and every node's
`/_edge/health` said "up" again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from edge.store.redis_conn import close_client, make_client

PROBE = {"Cache-Control": "only-if-cached"}


@dataclass
class FailoverResult:
    mode: str
    requests: int = 0
    errors_5xx: int = 0
    failed: int = 0  # no answer at all
    stale: int = 0  # an object answered from a node after its purge was answered 200
    purges: int = 0
    purges_200: int = 0
    purges_503: int = 0
    purges_lost: int = 0  # answered 200, still cached on a node 5 s later
    shared_back_s: float | None = None
    healthy_back_s: float | None = None
    health_seen: list[str] = field(default_factory=list)
    failovers_counted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    no_answer: list[str] = field(default_factory=list)  # the first few, with their time

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _status(s: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    async with s.get(url, **kw) as r:
        await r.read()
        return r.status


async def warm(s: aiohttp.ClientSession, nodes: list[str], paths: list[str]) -> None:
    """Every path cached on every node (a probe answers 200)."""
    for node in nodes:
        for path in paths:
            for _ in range(50):
                await _status(s, node + path)
                if await _status(s, node + path, headers=PROBE) == 200:
                    break
            else:
                raise RuntimeError(f"{node}{path} is never cached")


async def failover_run(
    mode: str,
    nodes: list[str],
    token: str,
    redis_url: str,
    kill: Callable[[], None],
    probe_key: str,
    load_paths: list[str],
    purge_paths: list[str],
    *,
    before: float = 1.0,
    after: float = 2.0,
    limit: float = 30.0,
    concurrency: int = 12,
) -> FailoverResult:
    """See the module docstring. `probe_key` is a key in the killed primary's slot;
    `purge_paths` must be cached on every node already (`warm`)."""
    out = FailoverResult(mode)
    statuses: Counter[str] = Counter()
    stop = asyncio.Event()
    purged_at: dict[str, float] = {}  # path -> when its purge was answered 200
    health: list[str] = []
    auth = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=64)
    ) as s:

        async def load(i: int) -> None:
            n = i
            while not stop.is_set():
                node = nodes[n % len(nodes)]
                path = load_paths[n % len(load_paths)]
                n += 1
                t0 = time.monotonic()
                try:
                    st = await _status(s, node + path)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    out.failed += 1
                    if len(out.no_answer) < 5:
                        took = time.monotonic() - t0
                        out.no_answer.append(f"{node}{path} after {took:.2f} s: {exc!r}")
                    continue
                out.requests += 1
                statuses[str(st)] += 1
                if st >= 500:
                    out.errors_5xx += 1

        async def purge_one(i: int, path: str) -> None:
            out.purges += 1
            async with s.post(
                nodes[i % len(nodes)] + "/_edge/purge", json={"urls": [path]}, headers=auth
            ) as r:
                await r.read()
                if r.status != 200:
                    out.purges_503 += r.status == 503
                    return
            out.purges_200 += 1
            purged_at[path] = time.monotonic()
            # applied everywhere: each node's probe answers 504 (nothing cached, here or
            # in the shared tier); a probe answering 200 after the bound is a lost purge
            deadline = time.monotonic() + 5.0
            pending = set(nodes)
            while pending and time.monotonic() < deadline:
                for node in list(pending):
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        if await _status(s, node + path, headers=PROBE) == 504:
                            pending.discard(node)
                if pending:
                    await asyncio.sleep(0.05)
            if pending:
                out.purges_lost += 1

        async def watch_health() -> None:
            while not stop.is_set():
                for node in nodes:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                        async with s.get(node + "/_edge/health") as r:
                            state = str(json.loads(await r.read()).get("redis"))
                            if state not in health:
                                health.append(state)
                await asyncio.sleep(0.2)

        loaders = [asyncio.create_task(load(i)) for i in range(concurrency)]
        watcher = asyncio.create_task(watch_health())
        await asyncio.sleep(before)
        client = make_client(redis_url, 0.25, "bench-failover-probe")
        try:
            kill()
            killed = time.monotonic()
            purges = [
                asyncio.create_task(purge_one(i, p), name=f"purge-{i}")
                for i, p in enumerate(purge_paths[:1])
            ]
            # the shared tier answering again: a read of a key in the killed slot
            i = 1
            while time.monotonic() - killed < limit:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.5):
                        await client.get(probe_key)
                        out.shared_back_s = round(time.monotonic() - killed, 2)
                        break
                if i < len(purge_paths) and time.monotonic() - killed > 0.5 * i:
                    purges.append(asyncio.create_task(purge_one(i, purge_paths[i])))
                    i += 1
                await asyncio.sleep(0.05)
            for j in range(i, len(purge_paths)):  # and a few once it is back
                purges.append(asyncio.create_task(purge_one(j, purge_paths[j])))
            # every node healthy ("up") again
            while time.monotonic() - killed < limit:
                states = []
                for node in nodes:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                        async with s.get(node + "/_edge/health") as r:
                            states.append(json.loads(await r.read()).get("redis"))
                if states == ["up"] * len(nodes):
                    out.healthy_back_s = round(time.monotonic() - killed, 2)
                    break
                await asyncio.sleep(0.1)
            await asyncio.gather(*purges)
            await asyncio.sleep(after)
        finally:
            stop.set()
            await asyncio.gather(*loaders, watcher, return_exceptions=True)
            await close_client(client, "bench failover probe")
        # nothing purged (and answered 200) is served from a cache afterwards
        for path in purged_at:
            for node in nodes:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    if await _status(s, node + path, headers=PROBE) == 200:
                        out.stale += 1
        for node in nodes:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with s.get(node + "/_edge/metrics") as r:
                    text = await r.text()
                m = re.search(r"^edge_redis_failovers_total\{[^}]*\} (\d+)", text, re.M)
                out.failovers_counted += int(m.group(1)) if m else 0
    out.health_seen = health
    out.statuses = dict(statuses)
    return out


def table(results: list[FailoverResult]) -> str:
    """A markdown table of failover runs."""
    head = (
        "| mode | requests | 5xx | no answer | stale | purges (200 / 503) | lost | "
        "shared tier back | all nodes up | health seen | failovers counted |\n"
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|\n"
    )
    rows = [
        f"| {r.mode} | {r.requests} | {r.errors_5xx} | {r.failed} | {r.stale} | "
        f"{r.purges} ({r.purges_200} / {r.purges_503}) | {r.purges_lost} | "
        f"{r.shared_back_s} s | {r.healthy_back_s} s | {', '.join(r.health_seen)} | "
        f"{r.failovers_counted} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"
