"""A Redis primary killed under load, on a Redis Cluster (the primary of the purge bus's
slot) and on a Sentinel set (the master): the clients get no 5xx, every purge answered 200
is applied on every node, the shared tier answers again within 10 s, the health says
"degraded" meanwhile and the metrics count the failover; no CROSSSLOT or MOVED error reaches
a client or a warning. Each test runs its own set (it kills a process of it), with a short
failover (1.5 s cluster-node-timeout, 1 s down-after-milliseconds)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.failover import failover_run, warm
from bench.redis_sets import RedisCluster, SentinelSet
from edge.store.purge_bus import generation_key
from tests.edge.conftest import TOKEN
from tests.redis_modes import require_redis_server
from tests.resilience.conftest import EdgeFactory, OriginFactory

pytestmark = pytest.mark.redis


@pytest.fixture(params=["cluster", "sentinel"])
def redis_set(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[RedisCluster | SentinelSet]:
    require_redis_server()
    made: RedisCluster | SentinelSet
    if request.param == "cluster":
        made = RedisCluster(tmp_path, node_timeout=1500).start()
    else:
        made = SentinelSet(tmp_path, down_after=1000).start()
    yield made
    made.stop()


async def test_primary_killed_under_load(
    redis_set: RedisCluster | SentinelSet,
    make_origin: OriginFactory,
    make_edge: EdgeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    origin, so = await make_origin()
    load = [f"/o{i}" for i in range(30)]
    purged = [f"/p{i}" for i in range(8)]
    # a third of the load expires every second: fills, and their cross-node fill locks on
    # every shard, go on during the failover
    for i, path in enumerate(load + purged):
        max_age = 1 if path in load and i % 3 == 0 else 600
        origin.set(path, body=f"body of {path}".encode(), Cache_Control=f"max-age={max_age}")
    prefix = "fo"
    edges = [
        await make_edge(
            [str(so.make_url("/"))],
            node=f"edge-{i + 1}",
            redis_url=redis_set.url,
            redis_prefix=prefix,
            purge_token=TOKEN,
        )
        for i in range(3)
    ]
    nodes = [str(e.make_url("")).rstrip("/") for e in edges]
    async with aiohttp.ClientSession() as s:
        await warm(s, nodes, load + purged)
    probe = generation_key(prefix)
    if isinstance(redis_set, RedisCluster):
        victim = redis_set.primary_of(probe)  # the purge bus's shard: the hardest case
        mode = "cluster"
    else:
        victim = redis_set.master()
        mode = "sentinel"
    result = await failover_run(
        mode, nodes, TOKEN, redis_set.url, victim.kill, probe, load, purged, before=0.5
    )
    print(result)
    assert result.requests > 100
    assert result.errors_5xx == 0 and result.failed == 0, result.statuses
    assert result.purges_200 >= len(purged) - 1, result  # at most one purge timed out (503)
    assert result.purges_lost == 0 and result.stale == 0, result
    assert result.shared_back_s is not None and result.shared_back_s < 10, result
    assert result.healthy_back_s is not None and result.healthy_back_s < 15, result
    assert "degraded" in result.health_seen and "down" not in result.health_seen, result
    assert result.failovers_counted >= 1, result

    # cross-node collapsing is back: 30 concurrent cold requests over the 3 nodes while the
    # origin takes 0.5 s to answer, one fetch
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(body=b"cold", headers={"Cache-Control": "max-age=600"})

    origin.routes["/static/cold.css"] = slow
    async with aiohttp.ClientSession() as s:

        async def get(i: int) -> int:
            async with s.get(nodes[i % 3] + "/static/cold.css") as r:
                await r.read()
                return r.status

        assert await asyncio.gather(*(get(i) for i in range(30))) == [200] * 30
    assert origin.hits["/static/cold.css"] == 1
    leaked = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and ("CROSSSLOT" in r.getMessage() or "MOVED" in r.getMessage())
    ]
    assert leaked == []
