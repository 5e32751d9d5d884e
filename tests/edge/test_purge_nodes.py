"""Purges and invalidations across nodes when things go wrong, and the config's invalidation
rules across three nodes sharing the real Redis.

A node's link to Redis is cut with a small TCP proxy of this test between that node and the
machine's Redis (stopped and restarted here; the machine's Redis is never touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest

from tests.edge.conftest import EdgeFactory, node_of, origin_hits, url
from tests.edge.test_purge import start_cluster
from tests.redis_modes import AclLink, modes_fixture

pytestmark = pytest.mark.redis


BOUND = 1.0


class CuttableLink:
    """A TCP proxy to Redis that the test can cut (every connection aborted, new ones
    refused) and restore on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_w}
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer), return_exceptions=True)
        self.writers -= {writer, up_w}

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self.server is not None:
            await self.cut()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(Exception):
            dst.transport.abort()


redis_url = modes_fixture()  # one Redis, a Sentinel set and a Redis Cluster


@pytest.fixture
async def link(redis_url: str) -> Any:
    """One Redis: a TCP proxy; Sentinel or Cluster: a user of the node's own (AclLink)."""
    from urllib.parse import urlparse

    from edge.config.redis_url import parse_url

    mode = parse_url(redis_url).mode
    if mode == "single":
        parsed = urlparse(redis_url)
        proxy: Any = CuttableLink(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    else:
        proxy = AclLink(mode)
    await proxy.start()
    yield proxy
    await proxy.close()


async def wait_until(check: Any, timeout: float, every: float = 0.01) -> float:
    """Poll the async `check` until it is true; the seconds it took (fails on timeout)."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        await asyncio.sleep(every)
    return time.monotonic() - t0


async def test_cut_node_stops_serving_a_purged_object_within_the_bound(
    aiohttp_server,
    make_edge,
    tmp_path,
    redis_url,
    key_prefix,
    link,
) -> None:
    """Runs once (front door on, as served): the bound is about the bus, not the hit path."""
    bound = {"purge_staleness_bound": BOUND}
    c = await start_cluster(
        aiohttp_server,
        make_edge,
        tmp_path,
        redis_url,
        key_prefix,
        node1=bound,
        node2=bound,
        node3={**bound, "redis_url": link.url},
    )
    cut_bus = node_of(c.nodes[2]).tiers.bus
    assert cut_bus is not None
    try:
        # 1. Cut while cached everywhere; the purge goes out; the link comes back.
        await c.warm("/obj/a")
        old = c.origin.body("/obj/a")
        await link.cut()
        c.origin.bump("/obj/a")
        status, answer = await c.purge(0, {"urls": ["/obj/a"]})
        purged_at = time.monotonic()
        assert status == 200 and answer["acks"] == {"expected": 2, "received": 2}
        assert [n["node"] for n in answer["nodes"]] == ["edge-1", "edge-2"]

        async def cut_node_has_news() -> bool:
            _, _, body = await c.get(2, "/obj/a")
            return body != old

        await asyncio.sleep(0.3)
        await link.restore()
        await wait_until(cut_node_has_news, 2 * BOUND)
        took = time.monotonic() - purged_at
        assert took <= BOUND, f"the cut node served the purged object {took:.2f} s after"
        _, _, body = await c.get(2, "/obj/a")
        assert body == c.origin.body("/obj/a")
        assert await cut_bus.wait_connected(3)

        # 2. Cut for longer than the bound; what the node fetched while cut is purged.
        await link.cut()
        await wait_until(lambda: _false_soon(cut_bus.connected), 2)
        _, _, old_c = await c.get(2, "/obj/c")
        _, h2, _ = await c.get(2, "/obj/c")
        assert h2["X-Cache"] == "HIT"  # cached in memory only (Redis unreachable)
        c.origin.bump("/obj/c")
        status, answer = await c.purge(1, {"tags": ["whatever"], "urls": ["/obj/c"]})
        purged_at = time.monotonic()
        assert status == 200 and answer["acks"]["expected"] == 2

        async def cut_node_has_news_c() -> bool:
            _, _, body = await c.get(2, "/obj/c")
            return body != old_c

        await wait_until(cut_node_has_news_c, 3 * BOUND)
        took = time.monotonic() - purged_at
        assert took <= BOUND, f"the cut node served the purged object {took:.2f} s after"
        # still cut: never the purged body again
        for _ in range(10):
            assert await cut_node_has_news_c()
            await asyncio.sleep(BOUND / 10)
        assert cut_bus.blinds >= 1
        async with c.session.get(url(c.nodes[2], "/_edge/stats")) as r:
            assert (await r.json())["bus_purges"].get("blind", 0) >= 1
        await link.restore()
        assert await cut_bus.wait_connected(3)
    finally:
        await c.session.close()


async def _false_soon(value: bool) -> bool:
    return not value


# One Redis only: on Sentinel or a cluster the purge first waits out a failover (15 s).
@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
async def test_purge_through_a_node_cut_from_redis_says_so(
    aiohttp_server, make_edge: EdgeFactory, tmp_path, redis_url, key_prefix, link
) -> None:
    """The node that takes the purge cannot reach Redis: it purges itself, answers 503 and
    counts the failure; the others keep their copies (their bound is about their own link)."""
    c = await start_cluster(
        aiohttp_server,
        make_edge,
        tmp_path,
        redis_url,
        key_prefix,
        n=2,
        node2={"redis_url": link.url},
    )
    try:
        await c.warm("/obj/a")
        await link.cut()
        status, answer = await c.purge(1, {"urls": ["/obj/a"]})
        assert status == 503 and "shared tier unavailable" in answer["error"]
        assert answer["memory"] == 1 and answer["nodes"][0]["node"] == "edge-2"
        assert node_of(c.nodes[1]).stats.purge_failures == 1
        assert not await c.cached(1, "/obj/a")
        assert await c.cached(0, "/obj/a")
    finally:
        await c.session.close()


async def test_adding_a_product_through_any_node_shows_on_every_other(
    origin, make_edge: EdgeFactory, redis_url, key_prefix
) -> None:
    """config/edge.yaml: /api/products?product= invalidates /api/products/last and the tag
    `products`, on every node; repeated reads in between stay cached."""
    nodes = [
        await make_edge(
            url(origin, "/"), node=f"edge-{i}", redis_url=redis_url, redis_prefix=key_prefix
        )
        for i in range(3)
    ]
    for n in nodes:
        assert await node_of(n).tiers.bus.wait_connected(5)  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as s:

        async def last(i: int) -> tuple[str, str]:
            async with s.get(url(nodes[i], "/api/products/last")) as r:
                assert r.status == 200
                return r.headers["X-Cache"], await r.text()

        for i in range(3):
            await last(i)
        for n in nodes:
            await node_of(n).tiers.drain()
        reads = origin_hits(origin, "/api/products/last")
        for round_, (writer, reader) in enumerate(((0, 1), (1, 2), (2, 0))):
            for i in range(3):
                x_cache, _ = await last(i)
                assert x_cache == "HIT", (round_, i)
            assert origin_hits(origin, "/api/products/last") == reads
            name = f"Toupie{round_}"
            async with s.get(url(nodes[writer], f"/api/products?product={name}")) as r:
                assert r.status == 200 and r.headers["X-Cache"] == "BYPASS"
            x_cache, body = await last(reader)
            assert name in body and x_cache == "MISS", (round_, body)
            for i in range(3):  # everyone else sees it too, from the shared tier or a fetch
                assert name in (await last(i))[1]
            for n in nodes:
                await node_of(n).tiers.drain()
            reads = origin_hits(origin, "/api/products/last")
