"""Purge and invalidation across three edge nodes sharing the real Redis (never mocks).

Each purge is checked on every node: `Cache-Control: only-if-cached` probes answer 504 when
neither the node's memory nor the shared tier holds the object any more (a probe never
refills anything), then plain GETs see MISS (hard) or REVALIDATED (soft).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.edge.conftest import TOKEN, EdgeFactory, EdgeHandle, node_of, url

pytestmark = pytest.mark.redis

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ONLY_IF_CACHED = {"Cache-Control": "only-if-cached"}

CONFIG = """
node: edge-1
origins: [http://127.0.0.1:1]
defaults:
  stale_if_error: 1d
  keep: 1h
headers:
  keep_tag_headers: {keep}
rules:
  - match: /api/misc/heavy
    ttl: 60s
    query: {{allow: [name]}}
  - match: /ruled/*
    ttl: 60s
    tags: [ruled]
invalidate: []
"""


@dataclass
class Versioned:
    """An origin whose objects have versions the test bumps; it answers 304 to a matching
    If-None-Match, tags objects with Surrogate-Key / Cache-Tag, and can fail on demand.
    A write (POST...) to a path bumps its version."""

    versions: dict[str, int] = field(default_factory=dict)
    surrogate: dict[str, str] = field(default_factory=dict)
    cache_tag: dict[str, str] = field(default_factory=dict)
    fetches: Counter[str] = field(default_factory=Counter)
    failing: bool = False
    delay: dict[str, float] = field(default_factory=dict)

    def body(self, path_qs: str) -> bytes:
        return f"{path_qs} v{self.versions.get(path_qs.split('?')[0], 1)}".encode()

    def bump(self, *paths: str) -> None:
        for p in paths:
            self.versions[p.split("?")[0]] = self.versions.get(p.split("?")[0], 1) + 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            self.bump(path)
            return web.Response(text="written")
        if self.failing:
            return web.Response(status=503, text="down")
        self.fetches[path] += 1
        body = self.body(request.path_qs)  # the version when the request arrived
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        etag = f'"v{self.versions.get(path, 1)}"'
        headers = {"Cache-Control": "max-age=60", "ETag": etag}
        if path in self.surrogate:
            headers["Surrogate-Key"] = self.surrogate[path]
        if path in self.cache_tag:
            headers["Cache-Tag"] = self.cache_tag[path]
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers)


@dataclass
class Cluster:
    origin: Versioned
    server: TestServer
    nodes: list[EdgeHandle]
    session: aiohttp.ClientSession

    async def get(
        self, i: int, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, CIMultiDict[str], bytes]:
        async with self.session.get(url(self.nodes[i], path), headers=headers) as r:
            return r.status, CIMultiDict(r.headers), await r.read()

    async def warm(self, *paths: str) -> None:
        """Every path cached on every node (memory) and in the shared tier."""
        for path in paths:
            for i in range(len(self.nodes)):
                await self.get(i, path)
                status, h, _ = await self.get(i, path)
                assert status == 200 and h["X-Cache"] == "HIT", (i, path, h)
        for n in self.nodes:
            await node_of(n).tiers.drain()

    async def cached(self, i: int, path: str) -> bool:
        status, _, _ = await self.get(i, path, ONLY_IF_CACHED)
        assert status in (200, 504), status
        return status == 200

    async def purge(self, i: int, body: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            url(self.nodes[i], "/_edge/purge"), json=body, headers=kw.get("headers", AUTH)
        ) as r:
            return r.status, await r.json()


async def start_cluster(
    aiohttp_server: Any,
    make_edge: EdgeFactory,
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    n: int = 3,
    keep_tags: bool = False,
    **overrides: Any,
) -> Cluster:
    origin = Versioned()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", origin.handle)
    server = await aiohttp_server(app)
    config = tmp_path / "edge.yaml"
    config.write_text(CONFIG.format(keep="true" if keep_tags else "false"))
    nodes = []
    for i in range(n):
        kw = {"node": f"edge-{i + 1}", "redis_url": redis_url, "redis_prefix": key_prefix}
        kw.update(overrides.get(f"node{i + 1}", {}))
        nodes.append(await make_edge(url(server, "/"), config=config, **kw))
    for node in nodes:
        bus = node_of(node).tiers.bus
        assert bus is not None and await bus.wait_connected(5)
    return Cluster(origin, server, nodes, aiohttp.ClientSession())


@pytest.fixture
async def cluster(aiohttp_server, make_edge: EdgeFactory, tmp_path, redis_url, key_prefix):
    c = await start_cluster(aiohttp_server, make_edge, tmp_path, redis_url, key_prefix)
    c.origin.surrogate["/obj/b"] = "sk-b common"
    c.origin.cache_tag["/obj/c"] = "ct-c, common"
    yield c
    await c.session.close()


OBJECTS = ("/obj/a", "/obj/b", "/obj/c", "/ruled/x", "/api/misc/heavy?name=q", "/other/z")

# (purge body, or ("PURGE", target)) -> objects it must drop
HARD_CASES: list[tuple[Any, set[str]]] = [
    ({"urls": ["/obj/a"]}, {"/obj/a"}),
    ({"urls": ["http://shop.example/obj/a"]}, {"/obj/a"}),
    # the key a GET stores: query filtered by the rule's allow-list and sorted
    ({"urls": ["/api/misc/heavy?utm=x&name=q"]}, {"/api/misc/heavy?name=q"}),
    (("PURGE", "/api/misc/heavy?name=q&utm=1"), {"/api/misc/heavy?name=q"}),
    (("PURGE", "/obj/b"), {"/obj/b"}),
    ({"prefixes": ["/obj/"]}, {"/obj/a", "/obj/b", "/obj/c"}),
    ({"prefixes": ["/api/misc/*"]}, {"/api/misc/heavy?name=q"}),
    ({"prefixes": ["/*/?"]}, {"/obj/a", "/obj/b", "/obj/c", "/ruled/x", "/other/z"}),
    ({"tags": ["sk-b"]}, {"/obj/b"}),
    ({"tags": ["ct-c"]}, {"/obj/c"}),
    ({"tags": ["common"]}, {"/obj/b", "/obj/c"}),
    ({"tags": ["ruled"]}, {"/ruled/x"}),
    ({"urls": ["/other/z"], "tags": ["sk-b"]}, {"/other/z", "/obj/b"}),
    ({"all": True}, set(OBJECTS)),
]


async def test_hard_purges_reach_every_node(cluster: Cluster) -> None:
    c = cluster
    for n, (spec, gone) in enumerate(HARD_CASES):
        await c.warm(*OBJECTS)
        c.origin.bump(*gone)
        via = n % 3
        if isinstance(spec, tuple):
            async with c.session.request("PURGE", url(c.nodes[via], spec[1]), headers=AUTH) as r:
                status, answer = r.status, await r.json()
        else:
            status, answer = await c.purge(via, spec)
        assert status == 200, (spec, answer)
        assert answer["node"] == f"edge-{via + 1}" and answer["soft"] is False
        assert answer["shared"] == len(gone), (spec, answer)
        assert answer["acks"] == {"expected": 3, "received": 3}, (spec, answer)
        assert [row["node"] for row in answer["nodes"]] == ["edge-1", "edge-2", "edge-3"]
        assert all(row["entries"] == len(gone) for row in answer["nodes"]), (spec, answer)
        for i in range(3):
            for path in OBJECTS:
                assert await c.cached(i, path) == (path not in gone), (spec, i, path)
        # every node sees the new version (the first refetches, the others may share it)
        for path in gone:
            got = await asyncio.gather(*(c.get(i, path) for i in range(3)))
            assert all(b == c.origin.body(path) for _, _, b in got), (spec, path)
            # one of them fetched it (which one is a race: another node may store it first)
            assert "MISS" in [h["X-Cache"] for _, h, _ in got], (spec, path)


async def test_soft_purges_revalidate_on_every_node(cluster: Cluster) -> None:
    c = cluster
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"urls": ["/obj/a"], "soft": True}, {"/obj/a"}),
        ({"prefixes": ["/obj/*"], "soft": True}, {"/obj/a", "/obj/b", "/obj/c"}),
        ({"tags": ["common"], "soft": True}, {"/obj/b", "/obj/c"}),
        ({"all": True, "soft": True}, set(OBJECTS)),
    ]
    for n, (spec, gone) in enumerate(cases):
        await c.warm(*OBJECTS)
        status, answer = await c.purge(n % 3, spec)
        assert status == 200 and answer["soft"] is True and answer["shared"] == len(gone)
        assert answer["acks"] == {"expected": 3, "received": 3}, answer
        for i in range(3):  # each node revalidates its own copy (304: unchanged)
            for path in OBJECTS:
                _, h, body = await c.get(i, path)
                want = "REVALIDATED" if path in gone else "HIT"
                assert h["X-Cache"] == want, (spec, i, path, h)
                assert body == c.origin.body(path)
    # soft-purged, then the origin fails: stale-if-error still serves the old object
    await c.warm("/obj/a")
    old = c.origin.body("/obj/a")
    status, _ = await c.purge(1, {"urls": ["/obj/a"], "soft": True})
    c.origin.failing = True
    for i in range(3):
        _, h, body = await c.get(i, "/obj/a")
        assert h["X-Cache"] == "STALE" and "stale-if-error" in h["Cache-Status"] and body == old
    c.origin.failing = False
    # PURGE with X-Purge-Soft: marked, not dropped
    async with c.session.request(
        "PURGE", url(c.nodes[2], "/obj/a"), headers={**AUTH, "X-Purge-Soft": "1"}
    ) as r:
        assert r.status == 200 and (await r.json())["kind"] == "soft-urls"
    assert await c.cached(0, "/obj/a") is False  # only-if-cached will not revalidate
    _, h, _ = await c.get(0, "/obj/a")
    assert h["X-Cache"] == "REVALIDATED"


async def test_auth_refusals_purge_nothing(cluster: Cluster) -> None:
    c = cluster
    await c.warm("/obj/a")
    refusals = [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-that-is-long-enough"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
    ]
    for headers, code in refusals:
        status, answer = await c.purge(0, {"all": True}, headers=headers)
        assert status == code and "error" in answer
        async with c.session.request("PURGE", url(c.nodes[1], "/obj/a"), headers=headers) as r:
            assert r.status == code
    for i in range(3):
        _, h, _ = await c.get(i, "/obj/a")
        assert h["X-Cache"] == "HIT"
        assert not node_of(c.nodes[i]).stats.purges


async def test_unsafe_methods_invalidate_on_every_node_and_metrics(cluster: Cluster) -> None:
    """RFC 9111 section 4.4 through one node drops the URL on all; bus purges are counted."""
    c = cluster
    await c.warm("/obj/a", "/obj/b")
    for method, via in (("POST", 1), ("DELETE", 2), ("PUT", 0)):
        async with c.session.request(method, url(c.nodes[via], "/obj/a"), data=b"x") as r:
            assert r.status == 200 and r.headers["X-Cache"] == "BYPASS"
        for i in range(3):
            assert not await c.cached(i, "/obj/a")
            assert await c.cached(i, "/obj/b")
        got = await asyncio.gather(*(c.get(i, "/obj/a") for i in range(3)))
        assert {b for _, _, b in got} == {c.origin.body("/obj/a")}
        for n in c.nodes:  # a store still in flight when a purge lands survives it (see
            await node_of(n).tiers.drain()  # docs/purge.md, "left out")
    await c.purge(0, {"tags": ["sk-b"]})
    async with c.session.get(url(c.nodes[1], "/_edge/metrics")) as r:
        metrics = await r.text()
    async with c.session.get(url(c.nodes[1], "/_edge/stats")) as r:
        stats = await r.json()
    assert 'edge_bus_purges_total{node="edge-2",kind="tags"} 1' in metrics
    assert 'edge_bus_purges_total{node="edge-2",kind="urls"} 2' in metrics  # POST via 3, PUT
    assert 'edge_purges_total{node="edge-2",kind="invalidation"} 1' in metrics  # its POST
    assert stats["bus_purges"] == {"urls": 2, "tags": 1}
    assert stats["bus_purged_entries"] >= 3 and stats["purged_entries"] >= 4


async def test_tag_headers_are_stripped_unless_kept(
    aiohttp_server, make_edge: EdgeFactory, tmp_path, redis_url, key_prefix
) -> None:
    for keep in (False, True):
        c = await start_cluster(
            aiohttp_server, make_edge, tmp_path, redis_url, f"{key_prefix}-{keep}", 1, keep
        )
        c.origin.surrogate["/t"] = "one two"
        c.origin.cache_tag["/t"] = "three,four"
        try:
            for want in ("MISS", "HIT"):
                _, h, _ = await c.get(0, "/t")
                assert h["X-Cache"] == want
                assert ("Surrogate-Key" in h, "Cache-Tag" in h) == (keep, keep)
            for tag in ("one", "two", "three", "four"):
                await c.warm("/t")
                status, answer = await c.purge(0, {"tags": [tag]})
                assert status == 200 and answer["memory"] == 1 and answer["shared"] == 1
        finally:
            await c.session.close()


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "nothing to purge"),
    (b'{"urls": "/a"}', "urls: expected a list"),
    (b'{"urls": [1]}', "urls[0]"),
    (b'{"urls": [""]}', "urls[0]"),
    (b'{"urls": ["/a\\r\\nX-Injected: 1"]}', "control characters"),
    (b'{"urls": ["/a\\n"]}', "control characters"),
    (b'{"urls": ["relative/path"]}', "starting with /"),
    (b'{"prefixes": ["api/"]}', "prefixes[0]"),
    (b'{"tags": ["has space"]}', "tags[0]"),
    (b'{"tags": [null]}', "tags[0]"),
    (b'{"all": "yes"}', "all: expected true or false"),
    (b'{"soft": 1, "all": true}', "soft: expected true or false"),
    (b'{"urlz": ["/a"]}', "unknown field"),
    (json.dumps({"urls": [f"/x{i}" for i in range(10_000)]}).encode(), "at most 1000"),
    (json.dumps({"urls": ["/" + "a" * 5000]}).encode(), "longer than"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # was a traceback (issue 27)
]


async def test_malformed_purges_are_400_with_a_message(cluster: Cluster) -> None:
    c = cluster
    await c.warm("/obj/a")
    for raw, message in BAD_BODIES:
        async with c.session.post(
            url(c.nodes[0], "/_edge/purge"),
            data=raw,
            headers={**AUTH, "Content-Type": "application/json"},
        ) as r:
            answer = await r.json()
            assert r.status == 400 and message in answer["error"], (raw[:60], answer)
    async with c.session.post(
        url(c.nodes[0], "/_edge/purge"),
        data=b" " * (2 << 20),
        headers={**AUTH, "Connection": "close"},
    ) as r:
        assert r.status == 413
    async with c.session.get(url(c.nodes[0], "/_edge/purge"), headers=AUTH) as r:
        assert r.status == 405
    for i in range(3):
        assert await c.cached(i, "/obj/a")
        assert not node_of(c.nodes[i]).stats.purges


async def test_a_fill_that_raced_a_purge_is_not_stored(cluster: Cluster) -> None:
    """A response requested before a purge and arriving after it is served to its client
    but stored nowhere (memory tombstones, Redis tombstones), for URL, tag and all purges."""
    c = cluster
    c.origin.delay["/obj/b"] = 0.3
    for n, spec in enumerate(({"urls": ["/obj/b"]}, {"tags": ["sk-b"]}, {"all": True})):
        before = c.origin.fetches["/obj/b"]
        in_flight = asyncio.ensure_future(c.get(n % 3, "/obj/b"))
        for _ in range(100):  # until the origin has the request (a fixed sleep raced)
            if c.origin.fetches["/obj/b"] > before:
                break
            await asyncio.sleep(0.01)
        old = c.origin.body("/obj/b")
        c.origin.bump("/obj/b")
        status, _ = await c.purge((n + 1) % 3, spec)
        assert status == 200
        _, h, body = await in_flight
        assert body == old and h["X-Cache"] == "MISS"
        for node in c.nodes:
            await node_of(node).tiers.drain()
        for i in range(3):
            assert not await c.cached(i, "/obj/b"), (spec, i)
        memory = node_of(c.nodes[n % 3]).tiers.memory
        assert memory.refused_late == 1  # one per node: each took one of the fills
