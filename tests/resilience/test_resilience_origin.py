"""Origin faults: round-robin with passive health, one safe retry, stale-if-error, quick errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.resilience.conftest import EdgeFactory, Origin, OriginFactory
from tests.resilience.helpers import free_port


def u(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def get(s: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, bytes]:
    async with s.request(kw.pop("method", "GET"), url, **kw) as r:
        return r.status, r.headers.copy(), await r.read()


async def test_round_robin_over_healthy_origins(make_origin: OriginFactory, make_edge: EdgeFactory):
    (a, sa), (b, sb) = await make_origin(), await make_origin()
    for o in (a, b):
        o.set("/plain", body=b"plain")  # no caching headers, no rule: never stored
    edge = await make_edge([u(sa, "/"), u(sb, "/")])
    async with aiohttp.ClientSession() as s:
        results = [await get(s, u(edge, "/plain")) for _ in range(10)]
    assert all(st == 200 and body == b"plain" for st, _, body in results)
    assert a.hits["/plain"] == 5 and b.hits["/plain"] == 5


async def test_refused_origin_is_skipped_then_probed_back(
    aiohttp_server: Any, make_origin: OriginFactory, make_edge: EdgeFactory
):
    good, sg = await make_origin()
    good.set("/plain", body=b"good")
    dead_port = free_port()  # nothing listens there yet
    edge = await make_edge([f"http://127.0.0.1:{dead_port}", u(sg, "/")], origin_down=1.0)
    async with aiohttp.ClientSession() as s:
        # A refused connection carried nothing: even a POST is retried on the other origin.
        st, _, _ = await get(s, u(edge, "/plain"), method="POST", data=b"x=1")
        assert st == 200 and good.methods == [("POST", "/plain")]
        results = [await get(s, u(edge, "/plain")) for _ in range(6)]
        assert all(r[0] == 200 for r in results)
        st, _, body = await get(s, u(edge, "/_edge/health"))
        origins = {o["url"]: o["up"] for o in __import__("json").loads(body)["origins"]}
        assert origins[f"http://127.0.0.1:{dead_port}"] is False
        # The dead origin comes back on its port: after `origin_down` it is probed and used.
        back = Origin()
        back.set("/plain", body=b"back")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", back.handle)
        await aiohttp_server(app, port=dead_port)
        await asyncio.sleep(1.3)
        results = [await get(s, u(edge, "/plain")) for _ in range(6)]
    assert all(r[0] == 200 for r in results)
    assert back.hits["/plain"] >= 2


async def test_origin_that_never_answers_gives_504_within_the_read_timeout(
    hanging: Any, make_edge: EdgeFactory
):
    h = await hanging()
    edge = await make_edge([h.url], read_timeout=1.0, connect_timeout=1.0)
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        st, headers, body = await get(s, u(edge, "/never"))
        elapsed = time.monotonic() - t0
        st2, headers2, _ = await get(s, u(edge, "/api/orders/do?order=x"))
    assert st == 504 and body.startswith(b"504:") and len(body) < 200
    assert "detail=timeout" in headers["Cache-Status"]
    assert elapsed < 8, f"a hanging origin held the client {elapsed:.1f} s"
    assert st2 == 504 and headers2["X-Cache"] == "BYPASS"


async def test_timeouts_retry_reads_once_but_never_writes(
    hanging: Any, make_origin: OriginFactory, make_edge: EdgeFactory
):
    good, sg = await make_origin()
    good.set("/plain", body=b"good")
    good.set("/api/orders/do", body=b"order placed")
    h = await hanging()
    async with aiohttp.ClientSession() as s:
        # The first pick of a fresh edge is the first origin: the hanging one.
        edge = await make_edge([h.url, u(sg, "/")], read_timeout=1.0)
        st, _, body = await get(s, u(edge, "/plain"))
        assert st == 200 and body == b"good"  # a GET is retried on the other origin
        for path, method in (("/api/orders/do?order=x", "GET"), ("/form", "POST")):
            edge = await make_edge([h.url, u(sg, "/")], read_timeout=1.0)
            st, _, _ = await get(s, u(edge, path), method=method, data=b"a=1")
            assert st == 504, (path, st)
    # The write reached the hanging origin once and was not replayed on the healthy one.
    assert good.hits["/api/orders/do"] == 0 and good.hits["/form"] == 0
    assert sum(b"/api/orders/do" in r for r in h.requests) == 1


async def test_origin_closing_after_a_write_is_not_replayed(
    hanging: Any, make_origin: OriginFactory, make_edge: EdgeFactory
):
    good, sg = await make_origin()
    good.set("/api/orders/do", body=b"order placed")
    drop = await hanging(drop=True)
    edge = await make_edge([drop.url, u(sg, "/")])
    async with aiohttp.ClientSession() as s:
        st, _, body = await get(s, u(edge, "/api/orders/do?order=yoyo"))
    assert st == 502 and body.startswith(b"502:")
    assert good.hits["/api/orders/do"] == 0


async def test_stale_if_error_when_the_origin_fails_or_is_gone(
    make_origin: OriginFactory, make_edge: EdgeFactory
):
    origin, so = await make_origin()
    origin.set("/page", body=b"the page", Cache_Control="max-age=1")
    edge = await make_edge([u(so, "/")], connect_timeout=1.0)
    async with aiohttp.ClientSession() as s:
        st, h, body = await get(s, u(edge, "/page"))
        assert st == 200 and h["X-Cache"] == "MISS"
        await asyncio.sleep(1.2)  # now stale; edge.yaml's defaults.stale_if_error is 1d
        origin.fail_with = 500
        st, h, body = await get(s, u(edge, "/page"))
        assert (st, h["X-Cache"], body) == (200, "STALE", b"the page")
        assert "fwd-status=500" in h["Cache-Status"] and "stale-if-error" in h["Cache-Status"]
        origin.fail_with = 503
        st, h, _ = await get(s, u(edge, "/page"))
        assert (st, h["X-Cache"]) == (200, "STALE")
        await so.close()  # the origin is gone: connections are refused
        t0 = time.monotonic()
        st, h, body = await get(s, u(edge, "/page"))
        assert (st, h["X-Cache"], body) == (200, "STALE", b"the page")
        assert "detail=stale-if-error" in h["Cache-Status"]
        st, h, body = await get(s, u(edge, "/never-cached"))
        assert st == 502 and body.startswith(b"502:") and "detail=connect" in h["Cache-Status"]
        assert time.monotonic() - t0 < 5


async def test_origin_stale_if_error_zero_is_respected(
    make_origin: OriginFactory, make_edge: EdgeFactory
):
    """The origin's own stale-if-error=0 overrides the "always online" default."""
    origin, so = await make_origin()
    origin.set("/strict", body=b"strict", Cache_Control="max-age=1, stale-if-error=0")
    edge = await make_edge([u(so, "/")])
    async with aiohttp.ClientSession() as s:
        assert (await get(s, u(edge, "/strict")))[0] == 200
        await asyncio.sleep(1.2)
        origin.fail_with = 500
        st, h, _ = await get(s, u(edge, "/strict"))
    assert st == 500 and h["X-Cache"] in ("MISS", "EXPIRED")
