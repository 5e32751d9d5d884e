"""The edge in front of a real origin: what a user of the CDN would notice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.edge.conftest import (
    STANDARD_YAML,
    EdgeFactory,
    node_of,
    origin_hits,
    url,
)

IMAGE = Path(__file__).resolve().parents[2] / "origin" / "static" / "5mo.jpg"


async def get(
    session: aiohttp.ClientSession, u: str, **kw: object
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.get(u, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def test_miss_then_hit_with_age(origin, make_edge: EdgeFactory) -> None:
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        status, h1, body1 = await get(s, url(edge, "/api/misc/heavy?name=a"))
        miss_time = time.monotonic() - t0
        assert status == 200 and h1["X-Cache"] == "MISS"
        assert "fwd=uri-miss" in h1["Cache-Status"] and "stored" in h1["Cache-Status"]
        assert h1["Cache-Status"].startswith("edge-1;")
        assert "origin;dur=" in h1["Server-Timing"]
        t0 = time.monotonic()
        status, h2, body2 = await get(s, url(edge, "/api/misc/heavy?name=a"))
        hit_time = time.monotonic() - t0
    assert status == 200 and h2["X-Cache"] == "HIT" and body2 == body1
    assert int(h2["Age"]) >= 0 and "hit; ttl=" in h2["Cache-Status"]
    assert h2["X-Served-By"] == "edge-1" and "edge-1" in h2["Via"]
    assert hit_time < miss_time
    assert origin_hits(origin, "/api/misc/heavy") == 1


async def test_query_order_and_ignored_params_share_one_entry(
    origin, make_edge: EdgeFactory
) -> None:
    """edge.yaml keys the heavy call on `name` only, sorted."""
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/api/misc/heavy?name=q&utm=1"))
        _, h, _ = await get(s, url(edge, "/api/misc/heavy?utm=2&name=q"))
    assert h["X-Cache"] == "HIT"
    assert origin_hits(origin, "/api/misc/heavy") == 1


async def test_writes_behind_get_are_never_stored_or_collapsed(
    origin, make_edge: EdgeFactory
) -> None:
    """200 concurrent orders through the edge make 200 orders at the origin."""
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        bodies = await asyncio.gather(
            *(get(s, url(edge, "/api/orders/do?order=yoyo")) for _ in range(20))
        )
    # 20 here keeps the suite fast (each order sleeps heavy_seconds at the origin); the
    # 200-order run is in test_two_hundred_orders below with heavy-seconds 0.
    assert all(b[0] == 200 and b[1]["X-Cache"] == "BYPASS" for b in bodies)
    assert len({b[2] for b in bodies}) == 20
    assert origin_hits(origin, "/api/orders/do") == 20


async def test_two_hundred_orders(aiohttp_server, tmp_path, make_edge: EdgeFactory) -> None:
    from origin.app import create_app as create_origin
    from origin.settings import OriginSettings

    fast = await aiohttp_server(
        create_origin(
            OriginSettings(
                db=str(tmp_path / "o.db"),
                heavy_seconds=0,
                db_seconds=0,
                static_rate=0,
                access_log=False,
            )
        )
    )
    edge = await make_edge(url(fast, "/"))
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(get(s, url(edge, f"/api/orders/do?order=p{i}")) for i in range(200))
        )
        assert all(r[0] == 200 for r in results)
        ids = {r[2] for r in results}
        assert len(ids) == 200
        # Every order exists at the origin.
        order_ids = [r[2].decode().split()[1] for r in results]
        checks = await asyncio.gather(
            *(get(s, url(fast, f"/api/orders/?order_id={oid}")) for oid in order_ids[:20])
        )
    assert all(c[0] == 200 and b"Success" in c[2] for c in checks)
    assert origin_hits(fast, "/api/orders/do") == 200


async def test_adding_a_product_invalidates_last_product(origin, make_edge: EdgeFactory) -> None:
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        _, _, before = await get(s, url(edge, "/api/products/last"))
        _, h2, _ = await get(s, url(edge, "/api/products/last"))
        assert h2["X-Cache"] == "HIT"
        status, h3, _ = await get(s, url(edge, "/api/products?product=Toupie"))
        assert status == 200 and h3["X-Cache"] == "BYPASS"
        _, h4, after = await get(s, url(edge, "/api/products/last"))
    assert h4["X-Cache"] == "MISS"
    assert b"Toupie" in after and b"Toupie" not in before


async def test_concurrent_misses_collapse_into_one_origin_request(
    origin, make_edge: EdgeFactory
) -> None:
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(get(s, url(edge, "/api/misc/heavy?name=herd")) for _ in range(100))
        )
    assert {r[0] for r in results} == {200}
    assert len({r[2] for r in results}) == 1
    assert origin_hits(origin, "/api/misc/heavy") == 1
    collapsed = [r for r in results if "collapsed" in r[1]["Cache-Status"]]
    assert len(collapsed) == 99
    assert node_of(edge).stats.collapsed == 99


async def test_image_streams_then_hits_and_ranges(origin, make_edge: EdgeFactory) -> None:
    """config/edge.yaml slices *.jpg in 128 KB slices (edge/engine/slices.py); the client sees one
    object, kept whole after its first fill: several ranges get a multipart/byteranges 206 as
    from any whole object (RFC 9110 section 14.6)."""
    edge = await make_edge(url(origin, "/"))
    data = IMAGE.read_bytes()
    async with aiohttp.ClientSession() as s:
        status, h, body = await get(s, url(edge, "/5mo.jpg"))
        assert status == 200 and h["X-Cache"] == "MISS" and body == data
        status, h, body = await get(s, url(edge, "/5mo.jpg"))
        assert status == 200 and h["X-Cache"] == "HIT" and body == data
        assert h["Accept-Ranges"] == "bytes"
        status, h, body = await get(s, url(edge, "/5mo.jpg"), headers={"Range": "bytes=100-199"})
        assert status == 206 and body == data[100:200]
        assert h["Content-Range"] == f"bytes 100-199/{len(data)}"
        status, h, body = await get(s, url(edge, "/5mo.jpg"), headers={"Range": "bytes=-10"})
        assert status == 206 and body == data[-10:]
        status, h, body = await get(s, url(edge, "/5mo.jpg"), headers={"Range": "bytes=0-1,10-11"})
        assert status == 206 and h["Content-Type"].startswith("multipart/byteranges")
        assert data[0:2] in body and data[10:12] in body
        status, h, _ = await get(s, url(edge, "/5mo.jpg"), headers={"Range": f"bytes={len(data)}-"})
        assert status == 416 and h["Content-Range"] == f"bytes */{len(data)}"
        async with s.head(url(edge, "/5mo.jpg")) as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
            assert int(resp.headers["Content-Length"]) == len(data)
            assert await resp.read() == b""
        etag = h["ETag"]
        status, h, body = await get(s, url(edge, "/5mo.jpg"), headers={"If-None-Match": etag})
        assert status == 304 and body == b"" and h["ETag"] == etag
    assert origin_hits(origin, "/5mo.jpg") == -(-len(data) // (128 * 1024))  # once per slice


async def test_first_byte_of_a_slow_miss_arrives_before_the_last(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted
    from aiohttp import web

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        resp.content_length = 4 * 65536
        await resp.prepare(request)
        for _ in range(4):
            await resp.write(b"x" * 65536)
            await asyncio.sleep(0.25)
        await resp.write_eof()
        return resp

    script.handlers["/slow"] = slow
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.get(url(edge, "/slow")) as resp:
            await resp.content.readexactly(1000)
            first = time.monotonic() - t0
            rest = await resp.read()
            total = time.monotonic() - t0
        assert len(rest) == 4 * 65536 - 1000
        assert first < 0.2 and total > 0.6
        _, h, body = await get(s, url(edge, "/slow"))
    assert h["X-Cache"] == "HIT" and len(body) == 4 * 65536


async def test_set_cookie_and_private_answers_are_never_shared(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set("/cookie", body=b"alice's", Cache_Control="max-age=60", Set_Cookie="sid=alice")
    script.set("/private", body=b"alice's page", Cache_Control="private, max-age=60")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        for path in ("/cookie", "/private"):
            await get(s, url(edge, path))
            _, h, _ = await get(s, url(edge, path))
            assert h["X-Cache"] == "MISS", path
    assert script.hits["/cookie"] == 2 and script.hits["/private"] == 2


async def test_authorization_requests_are_not_stored_without_public(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set("/me", body=b"alice", Cache_Control="max-age=60")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/me"), headers={"Authorization": "Bearer alice"})
        _, h, _ = await get(s, url(edge, "/me"))
    assert h["X-Cache"] == "MISS" and script.hits["/me"] == 2


async def test_headers_outside_the_key_cannot_poison_it(scripted, make_edge: EdgeFactory) -> None:
    """A client's X-Forwarded-Host never reaches the origin: the edge sets its own."""
    script, server = scripted
    from aiohttp import web

    async def echo(request: web.Request) -> web.StreamResponse:
        host = request.headers.get("X-Forwarded-Host", "")
        override = request.headers.get("X-HTTP-Method-Override", "")
        return web.Response(
            text=f"<script src='//{host}/app.js'>{override}",
            headers={"Cache-Control": "max-age=60"},
        )

    script.handlers["/page"] = echo
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        _, _, attacker = await get(
            s,
            url(edge, "/page"),
            headers={"X-Forwarded-Host": "evil.example", "X-HTTP-Method-Override": "DELETE"},
        )
        _, h, victim = await get(s, url(edge, "/page"))
    assert h["X-Cache"] == "HIT"
    assert b"evil.example" not in victim and b"DELETE" not in victim
    assert b"evil.example" not in attacker


async def test_vary_keeps_variants_apart(scripted, make_edge: EdgeFactory) -> None:
    script, server = scripted
    from aiohttp import web

    async def lang(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=request.headers.get("Accept-Language", "none"),
            headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
        )

    script.handlers["/lang"] = lang
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        _, _, fr = await get(s, url(edge, "/lang"), headers={"Accept-Language": "fr"})
        _, h2, en = await get(s, url(edge, "/lang"), headers={"Accept-Language": "en"})
        _, h3, fr2 = await get(s, url(edge, "/lang"), headers={"Accept-Language": "fr"})
        _, h4, en2 = await get(s, url(edge, "/lang"), headers={"Accept-Language": "en"})
    assert (fr, en, fr2, en2) == (b"fr", b"en", b"fr", b"en")
    assert h2["Cache-Status"].endswith("ttl=60") or "vary-miss" in h2["Cache-Status"]
    assert h3["X-Cache"] == "HIT" and h4["X-Cache"] == "HIT"
    assert script.hits["/lang"] == 2


async def test_revalidation_with_304_refreshes_the_entry(scripted, make_edge: EdgeFactory) -> None:
    script, server = scripted
    script.set("/doc", body=b"v1", Cache_Control="no-cache", ETag='"v1"')
    from aiohttp import web

    async def doc(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "X-Refreshed": "yes"})
        return web.Response(body=b"v1", headers={"Cache-Control": "no-cache", "ETag": '"v1"'})

    script.handlers["/doc"] = doc
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        _, h1, b1 = await get(s, url(edge, "/doc"))
        _, h2, b2 = await get(s, url(edge, "/doc"))
    assert h1["X-Cache"] == "MISS" and b1 == b"v1"
    assert h2["X-Cache"] == "REVALIDATED" and b2 == b"v1"
    assert "fwd-status=304" in h2["Cache-Status"] and h2["X-Refreshed"] == "yes"
    assert script.hits["/doc"] == 2


async def test_stale_if_error_when_origin_fails(scripted, make_edge: EdgeFactory) -> None:
    script, server = scripted
    script.set("/news", body=b"news", Cache_Control="max-age=1, stale-if-error=60")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/news"))
        await asyncio.sleep(1.1)
        script.set("/news", status=503, body=b"down")
        status, h, body = await get(s, url(edge, "/news"))
        assert status == 200 and body == b"news" and h["X-Cache"] == "STALE"
        assert "stale-if-error" in h["Cache-Status"]
        await server.close()
        status, h, body = await get(s, url(edge, "/news"))
    assert status == 200 and body == b"news" and h["X-Cache"] == "STALE"


async def test_dead_origin_gives_a_quick_502(make_edge: EdgeFactory) -> None:
    edge = await make_edge("http://127.0.0.1:1")
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        status, _, body = await get(s, url(edge, "/api/misc/heavy?name=x"))
    assert status == 502 and b"origin" in body and time.monotonic() - t0 < 3
    assert "Traceback" not in body.decode()


async def test_stale_while_revalidate_answers_at_once(scripted, make_edge: EdgeFactory) -> None:
    script, server = scripted
    counter = {"n": 0}
    from aiohttp import web

    async def feed(request: web.Request) -> web.StreamResponse:
        counter["n"] += 1
        return web.Response(
            text=f"v{counter['n']}",
            headers={"Cache-Control": "max-age=2, stale-while-revalidate=30"},
        )

    script.handlers["/feed"] = feed
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/feed"))
        await asyncio.sleep(2.1)
        script.delay = 0.5
        t0 = time.monotonic()
        _, h, body = await get(s, url(edge, "/feed"))
        assert time.monotonic() - t0 < 0.4
        assert body == b"v1" and h["X-Cache"] == "STALE"
        assert "stale-while-revalidate" in h["Cache-Status"]
        await asyncio.sleep(0.8)
        _, h, body = await get(s, url(edge, "/feed"))
    assert body == b"v2" and h["X-Cache"] == "HIT"
    assert counter["n"] == 2


async def test_unsafe_method_invalidates_its_url(scripted, make_edge: EdgeFactory) -> None:
    script, server = scripted
    script.set("/item", body=b"v1", Cache_Control="max-age=60")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/item"))
        _, h, _ = await get(s, url(edge, "/item"))
        assert h["X-Cache"] == "HIT"
        async with s.post(url(edge, "/item"), data=b"x" * 1000) as resp:
            assert resp.headers["X-Cache"] == "BYPASS"
        assert script.seen[-1].method == "POST"
        _, h, _ = await get(s, url(edge, "/item"))
    assert h["X-Cache"] == "MISS"


async def test_request_body_is_streamed_to_the_origin(scripted, make_edge: EdgeFactory) -> None:
    script, server = scripted
    from aiohttp import web

    async def upload(request: web.Request) -> web.StreamResponse:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        return web.Response(text=str(n))

    script.handlers["/upload"] = upload
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(32):
            yield b"y" * 65536

    async with aiohttp.ClientSession() as s, s.post(url(edge, "/upload"), data=body()) as resp:
        assert resp.status == 200 and await resp.text() == str(32 * 65536)


async def test_only_if_cached_miss_is_504(origin, make_edge: EdgeFactory) -> None:
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        status, _, _ = await get(
            s, url(edge, "/api/misc/time"), headers={"Cache-Control": "only-if-cached"}
        )
    assert status == 504


async def test_admin_endpoints(origin, make_edge: EdgeFactory) -> None:
    edge = await make_edge(url(origin, "/"))
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/api/misc/heavy?name=s"))
        await get(s, url(edge, "/api/misc/heavy?name=s"))
        async with s.get(url(edge, "/_edge/health")) as r:
            health = await r.json()
        async with s.get(url(edge, "/_edge/stats")) as r:
            stats = await r.json()
        async with s.get(url(edge, "/_edge/metrics")) as r:
            metrics = await r.text()
    assert health["status"] == "ok" and health["redis"] == "off" and health["node"] == "edge-1"
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hit_ratio"] == 0.5
    assert stats["memory"]["entries"] == 1
    assert 'edge_requests_total{node="edge-1",result="HIT"} 1' in metrics


async def test_purge_api_auth_and_effect(origin, make_edge: EdgeFactory) -> None:
    edge = await make_edge(url(origin, "/"))
    target = url(edge, "/api/misc/heavy?name=p")
    async with aiohttp.ClientSession() as s:
        await get(s, target)
        async with s.post(
            url(edge, "/_edge/purge"), json={"urls": ["/api/misc/heavy?name=p"]}
        ) as r:
            assert r.status == 401
        async with s.post(
            url(edge, "/_edge/purge"),
            json={"urls": ["/api/misc/heavy?name=p"]},
            headers={"Authorization": "Bearer wrong-token-0000000000"},
        ) as r:
            assert r.status == 403
        _, h, _ = await get(s, target)
        assert h["X-Cache"] == "HIT"
        from tests.edge.conftest import TOKEN

        async with s.post(
            url(edge, "/_edge/purge"),
            json={"urls": ["/api/misc/heavy?name=p"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
            result = await r.json()
        assert result["memory"] == 1
        _, h, _ = await get(s, target)
        assert h["X-Cache"] == "MISS"
        async with s.request("PURGE", target, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and (await r.json())["memory"] == 1
        for bad in (b"not json", b'{"urls": "x"}', b'{"urls": ["/a\\r\\nX: y"]}', b"{}"):
            async with s.post(
                url(edge, "/_edge/purge"),
                data=bad,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                assert r.status == 400, bad
                assert "error" in await r.json()
        many = {"urls": [f"/x{i}" for i in range(10_000)]}
        async with s.post(
            url(edge, "/_edge/purge"), json=many, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r:
            assert r.status == 400


async def test_purge_is_off_without_a_token(origin, make_edge: EdgeFactory) -> None:
    edge = await make_edge(url(origin, "/"), purge_token=None)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url(edge, "/_edge/purge"), json={"all": True}, headers={"Authorization": "Bearer x"}
        ) as r,
    ):
        assert r.status == 403 and "purge is off" in (await r.json())["error"]


@pytest.mark.redis
async def test_two_nodes_share_the_redis_tier(
    origin, make_edge: EdgeFactory, redis_url, key_prefix
) -> None:
    a = await make_edge(
        url(origin, "/"), node="edge-a", redis_url=redis_url, redis_prefix=key_prefix
    )
    b = await make_edge(
        url(origin, "/"), node="edge-b", redis_url=redis_url, redis_prefix=key_prefix
    )
    async with aiohttp.ClientSession() as s:
        _, h1, body1 = await get(s, url(a, "/api/misc/heavy?name=shared"))
        assert h1["X-Cache"] == "MISS"
        await node_of(a).tiers.drain()
        _, h2, body2 = await get(s, url(b, "/api/misc/heavy?name=shared"))
        async with s.get(url(b, "/_edge/health")) as r:
            assert (await r.json())["redis"] == "up"
    assert h2["X-Cache"] == "HIT" and h2["X-Served-By"] == "edge-b" and body2 == body1
    assert origin_hits(origin, "/api/misc/heavy") == 1


@pytest.mark.redis
async def test_collapsing_across_three_nodes(
    origin, make_edge: EdgeFactory, redis_url, key_prefix
) -> None:
    """500 concurrent cold requests spread over 3 nodes make one origin request. Redis calls
    get 2 s here, not 250 ms: on a loaded machine (a cluster client under 500 requests) a lock
    call past its timeout makes a node fetch on its own, which is the timeout's test, not this
    one's."""
    nodes = [
        await make_edge(
            url(origin, "/"),
            node=f"edge-{i}",
            redis_url=redis_url,
            redis_prefix=key_prefix,
            redis_timeout=2.0,
        )
        for i in range(3)
    ]
    conn = aiohttp.TCPConnector(limit=600)
    async with aiohttp.ClientSession(connector=conn) as s:
        results = await asyncio.gather(
            *(get(s, url(nodes[i % 3], "/api/misc/heavy?name=herd3")) for i in range(500))
        )
    assert {r[0] for r in results} == {200}
    assert len({r[2] for r in results}) == 1
    assert origin_hits(origin, "/api/misc/heavy") == 1


@pytest.mark.redis
async def test_purge_reaches_every_node(
    origin, make_edge: EdgeFactory, redis_url, key_prefix
) -> None:
    from tests.edge.conftest import TOKEN

    nodes = [
        await make_edge(
            url(origin, "/"), node=f"edge-{i}", redis_url=redis_url, redis_prefix=key_prefix
        )
        for i in range(3)
    ]
    for n in nodes:
        assert await node_of(n).tiers.bus.wait_connected(5)  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as s:
        for n in nodes:
            await get(s, url(n, "/api/misc/heavy?name=pp"))
            _, h, _ = await get(s, url(n, "/api/misc/heavy?name=pp"))
            assert h["X-Cache"] == "HIT"
        async with s.post(
            url(nodes[0], "/_edge/purge"),
            json={"prefixes": ["/api/misc/*"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
        deadline = time.monotonic() + 10  # at once on an idle machine; room for a loaded one
        misses: set[int] = set()
        while time.monotonic() < deadline and len(misses) < 3:
            for i, n in enumerate(nodes):
                if i in misses:
                    continue
                node = node_of(n)
                if not node.tiers.memory.get("/api/misc/heavy?name=pp"):
                    misses.add(i)
            await asyncio.sleep(0.01)
        assert misses == {0, 1, 2}
        for n in nodes:
            _, h, _ = await get(s, url(n, "/api/misc/heavy?name=pp"))
            assert h["X-Cache"] in ("MISS", "HIT")  # the first node to refetch refills Redis


async def test_accept_encoding_variants_stay_apart(scripted, make_edge: EdgeFactory) -> None:
    """A gzip answer is only ever served to clients that accept gzip (Vary: Accept-Encoding),
    and the bytes pass through as the origin compressed them."""
    import gzip

    from aiohttp import web

    script, server = scripted
    plain = b"hello " * 200

    async def page(request: web.Request) -> web.StreamResponse:
        headers = {"Cache-Control": "max-age=60", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=gzip.compress(plain), headers=headers)
        return web.Response(body=plain, headers=headers)

    script.handlers["/gz"] = page
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        _, h1, b1 = await get(s, url(edge, "/gz"), headers={"Accept-Encoding": "gzip, br"})
        _, h2, b2 = await get(s, url(edge, "/gz"), headers={"Accept-Encoding": "identity"})
        _, h3, b3 = await get(s, url(edge, "/gz"), headers={"Accept-Encoding": "br,  gzip"})
        _, h4, b4 = await get(s, url(edge, "/gz"), headers={"Accept-Encoding": "identity"})
    assert h1["Content-Encoding"] == "gzip" and gzip.decompress(b1) == plain
    assert "Content-Encoding" not in h2 and b2 == plain
    assert h3["X-Cache"] == "HIT" and h3["Content-Encoding"] == "gzip" and b3 == b1
    assert h4["X-Cache"] == "HIT" and "Content-Encoding" not in h4 and b4 == plain
    assert script.hits["/gz"] == 2


async def test_objects_over_the_size_limit_stream_through_uncached(
    scripted, make_edge: EdgeFactory
) -> None:
    """memory.max_object_bytes: a bigger answer is streamed whole and never stored."""
    script, server = scripted
    big = bytes(range(256)) * 4096  # 1 MiB
    script.set("/big", body=big, Cache_Control="max-age=60")
    edge = await make_edge(
        url(server, "/"), config=STANDARD_YAML, memory_max_object_bytes=256 * 1024
    )
    async with aiohttp.ClientSession() as s:
        _, h1, b1 = await get(s, url(edge, "/big"))
        _, h2, b2 = await get(s, url(edge, "/big"))
    assert b1 == big and b2 == big
    assert h1["X-Cache"] == "MISS" and "detail=too-big" in h1["Cache-Status"]
    assert h2["X-Cache"] == "MISS" and script.hits["/big"] == 2
    assert node_of(edge).tiers.memory.stats()["entries"] == 0


async def test_collapsed_requests_fetch_privately_when_the_answer_is_not_shareable(
    scripted, make_edge: EdgeFactory
) -> None:
    """Waiters on a fetch whose answer turns out private each get a fetch of their own."""
    from aiohttp import web

    script, server = scripted
    calls = {"n": 0}

    async def account(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        n = calls["n"]
        if n == 1:
            return web.Response(text="public v1", headers={"Cache-Control": "max-age=1"})
        await asyncio.sleep(0.3)
        return web.Response(text=f"private {n}", headers={"Cache-Control": "private"})

    script.handlers["/account"] = account
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession() as s:
        await get(s, url(edge, "/account"))
        await asyncio.sleep(1.1)  # stale now: the next misses collapse on its revalidation
        results = await asyncio.gather(*(get(s, url(edge, "/account")) for _ in range(5)))
    bodies = [r[2] for r in results]
    assert all(b.startswith(b"private ") for b in bodies)
    assert len(set(bodies)) == 5  # nobody got somebody else's private answer
    assert calls["n"] == 6


async def test_a_store_that_fails_leaves_every_answer_whole(origin, make_edge: EdgeFactory) -> None:
    """A small miss is stored the moment after its leader's answer is written, in the
    leader's stack: if storing fails, the leader and the clients collapsed on its fetch still
    get the whole answer, none waits, and the next request fetches again."""
    edge = await make_edge(url(origin, "/"))
    engine = node_of(edge)

    def broken(entry, until):  # type: ignore[no-untyped-def]
        raise RuntimeError("the storage failed")

    engine.collapser.on_store = broken
    async with aiohttp.ClientSession() as s:
        results = await asyncio.wait_for(
            asyncio.gather(*(get(s, url(edge, "/api/misc/heavy?name=broken")) for _ in range(8))),
            60,
        )
        assert {r[0] for r in results} == {200}
        assert len({r[2] for r in results}) == 1 and results[0][2]
        assert origin_hits(origin, "/api/misc/heavy") == 1
    # One connection: each answer is the one asked for (nothing sent after it), each a miss.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        for _ in range(3):
            status, headers, body = await asyncio.wait_for(
                get(s, url(edge, "/api/misc/heavy?name=again")), 60
            )
            assert status == 200 and b"again" in body and headers["X-Cache"] == "MISS"
    assert origin_hits(origin, "/api/misc/heavy") == 4
