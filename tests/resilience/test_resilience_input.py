"""Hostile input over raw sockets: smuggling, oversized heads, odd paths, slow and vanishing
clients, too many connections. Each gets a clean 4xx or a closed connection, never a 500,
never an ambiguous request at the origin, never a poisoned cache entry or a leaked task."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.resilience.conftest import EdgeFactory, Origin, OriginFactory
from tests.resilience.helpers import http_get, raw_exchange, status_of

H = b"Host: edge\r\n"
HC = H + b"Connection: close\r\n"
SMUGGLING = {
    "cl-and-te": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "cl-cl-conflict": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nContent-Length: 40"
    b"\r\n\r\nabcdGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "cl-list": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 4, 40\r\n\r\nabcd",
    "cl-negative": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "cl-plus": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: +4\r\n\r\nabcd",
    "cl-hex": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 0x4\r\n\r\nabcd",
    "cl-overflow": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "te-junk": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, junk\r\n\r\n0\r\n\r\n",
    "te-xchunked": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n"
    b"\r\n0\r\n\r\n",
    "te-twice": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "te-in-http-1.0": b"POST /s HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-tab": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding:\tchunked\x0b\r\n\r\n0\r\n\r\n",
    "obs-fold": b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nX-A: b\r\n"
    b" Transfer-Encoding: chunked\r\n\r\n",
    "bad-chunk-size": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk-bare-lf": b"POST /s HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    b"3\nabc\n0\n\n",
    "bare-lf-head": b"GET /s HTTP/1.1\n" + H.replace(b"\r", b"") + b"\n",
    "nul-in-path": b"GET /s\x00x HTTP/1.1\r\n" + H + b"\r\n",
    "nul-in-header": b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "non-utf8-path": b"GET /\xff\xfe HTTP/1.1\r\n" + H + b"\r\n",
    "two-hosts": b"GET /s HTTP/1.1\r\n" + H + b"Host: other\r\n\r\n",
    "long-request-line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "long-header": b"GET /s HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "many-headers": b"GET /s HTTP/1.1\r\n"
    + H
    + b"".join(b"X-%d: a\r\n" % i for i in range(500))
    + b"\r\n",
    "bad-version": b"GET /s HTTP/9.9\r\n" + H + b"\r\n",
    "bad-method": b"G\x01T /s HTTP/1.1\r\n" + H + b"\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
}


@pytest.fixture
async def setup(make_origin: OriginFactory, make_edge: EdgeFactory) -> tuple[Origin, TestServer]:
    origin, so = await make_origin()
    origin.set("/page", body=b"the real page", Cache_Control="max-age=600")
    edge = await make_edge([str(so.make_url("/"))], header_timeout=1.0, read_timeout=5.0)
    return origin, edge


async def _page_is_intact(edge: TestServer) -> None:
    st, _, body = await http_get(edge.port, "/page")  # type: ignore[arg-type]
    assert st == 200 and body == b"the real page", (st, body[:100])


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_ambiguous_framing_is_rejected_never_forwarded(
    name: str, setup: tuple[Origin, TestServer]
) -> None:
    origin, edge = setup
    await _page_is_intact(edge)
    out = await raw_exchange(edge.port, SMUGGLING[name], timeout=5)  # type: ignore[arg-type]
    status = status_of(out)
    assert status is None or 400 <= status < 500, (name, out[:200])
    assert b"HTTP/1.1 200" not in out and b"HTTP/1.0 200" not in out, out[:300]
    assert origin.hits["/smuggled"] == 0 and origin.hits["/s"] == 0, origin.methods
    await _page_is_intact(edge)


async def test_odd_paths_and_values_never_500_nor_poison(
    setup: tuple[Origin, TestServer],
) -> None:
    origin, edge = setup
    port: Any = edge.port
    await _page_is_intact(edge)
    cases = [
        b"GET /../../etc/passwd HTTP/1.1\r\n" + HC + b"\r\n",
        b"GET /%2e%2e/%2e%2e/page HTTP/1.1\r\n" + HC + b"\r\n",
        b"GET /a%2F..%2Fpage HTTP/1.1\r\n" + HC + b"\r\n",
        b"GET /page%00 HTTP/1.1\r\n" + HC + b"\r\n",
        b"GET /%ff%fe%c0%af HTTP/1.1\r\n" + HC + b"\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"X-Junk: \xff\xfe\r\n\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"Range: bytes=99999999999999999999999-1\r\n\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"Range: bytes=5-2\r\n\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"Range: bytes=-0\r\n\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"Range: lines=1-2\r\n\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"Range: bytes=" + b"0-0," * 2000 + b"0-0\r\n\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"Cache-Control: max-age=99999999999999999999999, "
        b'max-stale=-5, min-fresh=abc, no-cache="\r\n\r\n',
        b"GET /page HTTP/1.1\r\n" + HC + b"If-None-Match: " + b'"x",' * 2000 + b"\r\n\r\n",
        b"GET /page HTTP/1.1\r\n"
        + HC
        + b"If-Modified-Since: Sun, 99 Foo 99999 99:99:99 GMT\r\n\r\n",
        b"GET http://evil.example/page HTTP/1.1\r\n" + HC + b"\r\n",
        b"GET /page HTTP/1.1\r\n" + HC + b"X-Forwarded-Host: evil.example\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n" + HC + b"\r\n",
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
        b"PURGE /page HTTP/1.1\r\n" + HC + b"\r\n",
        b"POST /_edge/purge HTTP/1.1\r\n" + HC + b'Content-Length: 12\r\n\r\n{"all":true}',
    ]
    for data in cases:
        out = await raw_exchange(port, data, timeout=5)
        status = status_of(out)
        assert status is None or status < 500, (data[:80], out[:200])
    # The absurd answers of an origin: huge max-age, junk directives, bad Content-Length.
    origin.set("/absurd", body=b"absurd", Cache_Control="max-age=99999999999999999999, s-maxage=-1")
    st, _, body = await http_get(port, "/absurd")
    assert st == 200 and body == b"absurd"
    st, _, body = await http_get(port, "/absurd")
    assert st == 200 and body == b"absurd"
    await _page_is_intact(edge)


async def test_slowloris_is_cut_off_by_the_header_timeout(
    setup: tuple[Origin, TestServer],
) -> None:
    _, edge = setup  # header_timeout=1s
    port: Any = edge.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /page HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    closed_after = None
    for byte in head:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed_after = time.monotonic() - t0
            break
        if reader.at_eof() or writer.is_closing():
            closed_after = time.monotonic() - t0
            break
        # Meanwhile other clients are served.
        if byte == ord("H"):
            await _page_is_intact(edge)
        await asyncio.sleep(0.2)
        if reader._buffer or reader.at_eof():  # the 408
            closed_after = time.monotonic() - t0
            break
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert closed_after is not None and closed_after < 6, closed_after
    assert data.startswith(b"HTTP/1.1 408"), data
    # An idle new connection that sends nothing is closed too.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    guard = edge.engine.guard
    assert guard.header_timeouts >= 2
    await _page_is_intact(edge)


async def test_header_timeout_spares_slow_bodies_and_keepalive(
    make_origin: OriginFactory, make_edge: EdgeFactory
) -> None:
    """The head timer stops at the end of the head: a slow upload and an idle keep-alive
    between requests are governed by other limits."""
    origin, so = await make_origin()
    origin.set("/up", body=b"got it")
    edge = await make_edge([str(so.make_url("/"))], header_timeout=0.5, keepalive_timeout=30.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)  # type: ignore[arg-type]
    writer.write(b"POST /up HTTP/1.1\r\nHost: e\r\nContent-Length: 4\r\n\r\n")
    for b in b"abcd":
        await asyncio.sleep(0.3)
        writer.write(bytes([b]))
    first = await asyncio.wait_for(reader.readuntil(b"got it"), 10)
    assert first.startswith(b"HTTP/1.1 200")
    await asyncio.sleep(1.0)  # idle keep-alive, longer than header_timeout
    writer.write(b"POST /up HTTP/1.1\r\nHost: e\r\nContent-Length: 0\r\n\r\n")
    second = await asyncio.wait_for(reader.readuntil(b"got it"), 10)
    assert second.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_max_connections(make_origin: OriginFactory, make_edge: EdgeFactory) -> None:
    origin, so = await make_origin()
    origin.set("/page", body=b"p")
    edge = await make_edge([str(so.make_url("/"))], max_connections=4, header_timeout=30.0)
    port: Any = edge.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    await asyncio.sleep(0.1)
    out = await raw_exchange(port, b"GET /page HTTP/1.1\r\nHost: e\r\n\r\n", timeout=5)
    assert status_of(out) == 503
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    st, _, body = await http_get(port, "/page")
    assert st == 200 and body == b"p"
    assert edge.engine.guard.over_limit == 1


async def test_client_vanishing_mid_download_leaks_nothing(
    make_origin: OriginFactory, make_edge: EdgeFactory
) -> None:
    body = hashlib.sha256(b"seed").digest() * (5_000_000 // 32)
    origin, so = await make_origin()

    async def slow_big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 250_000):
            await resp.write(body[i : i + 250_000])
            await asyncio.sleep(0.02)
        return resp

    origin.routes["/big"] = slow_big
    edge = await make_edge([str(so.make_url("/"))])
    port: Any = edge.port
    node = edge.engine
    # A MISS abandoned after 300 kB, then a HIT abandoned after 300 kB.
    for expected in ("MISS", "HIT"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: e\r\n\r\n")
        got, first = 0, b""
        while got < 300_000:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk
            first = first or chunk
            got += len(chunk)
        assert f"X-Cache: {expected}".encode() in first
        writer.transport.abort()  # RST, no goodbye
        # The shared fetch finishes (and stores) without its client, then nothing is left.
        for _ in range(300):
            if not (node.collapser.flights or node.collapser._tasks):
                break
            await asyncio.sleep(0.05)
        assert not node.collapser.flights and not node.collapser._tasks
    st, h, got_body = await http_get(port, "/big", timeout=30)
    assert st == 200 and h["x-cache"] == "HIT"
    assert hashlib.sha256(got_body).digest() == hashlib.sha256(body).digest()
    assert origin.hits["/big"] == 1
    # Only this test's own tasks remain: nothing left behind by the aborted responses.
    await asyncio.sleep(0.2)
    stray = [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and not t.done() and "fetch" in repr(t.get_coro())
    ]
    assert not stray, stray
