"""The engine's HTTP/1.1 connection (edge/protocol/http1.py) on raw sockets: pipelining, HEAD,
HTTP/1.0, early answers, and the client address it hands to the engine."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from edge.config.settings import load_config
from edge.server import EdgeServer
from tests.edge.conftest import STANDARD_YAML, url


@pytest.fixture
async def front(scripted):  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A" * 100, Cache_Control="max-age=60")
    script.set("/b", body=b"B" * 200, Cache_Control="max-age=60")
    cfg = replace(
        load_config(STANDARD_YAML),
        origins=(url(origin, "/").rstrip("/"),),
        port=0,
        max_request_body=1024,
    )
    server = EdgeServer(cfg)
    await server.start()
    yield script, server
    await server.stop()


async def exchange(port: int, data: bytes, expect: int, timeout: float = 5) -> tuple[bytes, bool]:
    """Send raw bytes; read until `expect` responses arrived (by counting status lines and
    bodies via Content-Length). Returns what was read and whether the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    seen = 0
    closed = False
    try:
        while seen < expect:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            out += head
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            is_head = data.count(b"HEAD ") > 0 and b"X-Cache" in head and length and seen == 0
            if length and not is_head:
                out += await asyncio.wait_for(reader.readexactly(length), timeout)
            seen += 1
        try:
            rest = await asyncio.wait_for(reader.read(1), 0.5)
            closed = rest == b""
        except TimeoutError:
            closed = False
    finally:
        writer.close()
    return out, closed


def statuses(raw: bytes) -> list[bytes]:
    return [line.split(b" ")[1] for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


async def test_pipelined_requests_are_answered_in_order(front) -> None:  # type: ignore[no-untyped-def]
    script, server = front
    await exchange(server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 1)  # now a hit
    raw, closed = await exchange(
        server.port,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        3,
    )
    bodies = [p for p in raw.split(b"\r\n\r\n") if p.startswith((b"A", b"B"))]
    assert [b[:1] for b in bodies] == [b"A", b"B", b"A"]
    assert raw.count(b"X-Cache: HIT") == 2 and raw.count(b"X-Cache: MISS") == 1
    assert not closed
    assert script.hits["/a"] == 1 and script.hits["/b"] == 1


async def test_pipelined_hits_are_answered_in_order_and_a_closing_one_ends_them(front) -> None:  # type: ignore[no-untyped-def]
    # Hits are answered while their head is parsed (no queue): in order, and none after
    # one that closes the connection.
    _, server = front
    await exchange(
        server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", 2
    )
    raw, closed = await exchange(
        server.port,
        b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        3,
    )
    assert raw.count(b"X-Cache: HIT") == 3 and not closed
    assert raw.index(b"B" * 200) < raw.index(b"A" * 100) and raw.count(b"A" * 100) == 1
    raw, closed = await exchange(
        server.port,
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        1,
    )
    assert statuses(raw) == [b"200"] and b"Connection: close" in raw and closed
    assert b"B" * 200 not in raw


async def test_head_hit_has_no_body(front) -> None:  # type: ignore[no-untyped-def]
    _, server = front
    await exchange(server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"X-Cache: HIT" in head and b"Content-Length: 100" in head
    nxt = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert nxt.startswith(b"HTTP/1.1 200") and b"Content-Length: 200" in nxt  # no body between
    writer.close()


async def test_http10_and_connection_close(front) -> None:  # type: ignore[no-untyped-def]
    _, server = front
    await exchange(server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    raw, closed = await exchange(server.port, b"GET /a HTTP/1.0\r\n\r\n", 1)
    assert b"X-Cache: HIT" in raw and closed
    raw, closed = await exchange(
        server.port, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1
    )
    assert b"Connection: keep-alive" in raw and not closed
    raw, closed = await exchange(
        server.port, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1
    )
    assert b"Connection: close" in raw and closed


@pytest.mark.parametrize(
    ("head", "via"),
    [
        (b"GET /v1 HTTP/1.1\r\nHost: x\r\n\r\n", "1.1"),
        (b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "1.1"),
        (b"GET /v3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "1.1"),
        (b"GET /v4 HTTP/1.0\r\n\r\n", "1.0"),
        (b"GET /v5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "1.0"),
    ],
)
async def test_the_origin_is_told_the_clients_version(front, head: bytes, via: str) -> None:  # type: ignore[no-untyped-def]
    # The version is read from httptools only when the connection's fate leaves it open
    # (edge.http.fields.F_CONNECTION); each case here must still say the right one.
    script, server = front
    raw, _ = await exchange(server.port, head, 1)
    assert statuses(raw) == [b"404"] or b"X-Cache: MISS" in raw
    assert script.seen[-1].headers["Via"].startswith(f"{via} ")


async def test_an_early_answer_closes_instead_of_waiting_for_the_body(front) -> None:  # type: ignore[no-untyped-def]
    _, server = front
    # Announce 1 MB (over max_request_body) but send only the head: the 413 comes at once
    # and the connection is closed rather than left waiting for the body.
    raw, closed = await exchange(
        server.port,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 100,
        1,
    )
    assert statuses(raw) == [b"413"] and closed


async def test_the_client_cannot_forge_its_address(front) -> None:  # type: ignore[no-untyped-def]
    script, server = front
    await exchange(
        server.port,
        b"GET /fresh HTTP/1.1\r\nHost: x\r\nX-Edge-Peer: 6.6.6.6\r\n\r\n",
        1,
    )
    seen = script.seen[-1]
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_malformed_request_gets_400_and_close(front) -> None:  # type: ignore[no-untyped-def]
    _, server = front
    raw, closed = await exchange(server.port, b"GET /a HTTP/1.1\r\nHost x\r\n\r\n", 1)
    assert statuses(raw) == [b"400"] and closed


async def test_graceful_stop_finishes_the_answer_in_flight(scripted) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.delay = 0.5
    script.set("/slow", body=b"S" * 1000)
    cfg = replace(load_config(STANDARD_YAML), origins=(url(origin, "/").rstrip("/"),), port=0)
    server = EdgeServer(cfg)
    await server.start()
    task = asyncio.create_task(exchange(server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 1))
    await asyncio.sleep(0.2)
    await server.stop()
    raw, closed = await task
    assert statuses(raw) == [b"200"] and raw.endswith(b"S" * 1000) and closed


async def test_access_log_has_one_line_per_answer_with_the_cache_verdict(scripted, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    script, origin = scripted
    script.set("/logged", body=b"L" * 10, Cache_Control="max-age=60")
    cfg = replace(load_config(STANDARD_YAML), origins=(url(origin, "/").rstrip("/"),), port=0)
    server = EdgeServer(cfg, access_log=True)
    await server.start()
    try:
        with caplog.at_level(logging.INFO, logger="edge.access"):
            for _ in range(2):
                await exchange(server.port, b"GET /logged HTTP/1.1\r\nHost: x\r\n\r\n", 1)
            await asyncio.sleep(0.1)
    finally:
        await server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.access"]
    assert len(lines) == 2, lines
    assert lines[0].startswith('127.0.0.1 "GET /logged HTTP/1.1" 200 10 MISS ')
    assert lines[1].startswith('127.0.0.1 "GET /logged HTTP/1.1" 200 10 HIT ')


async def test_vary_variants_are_hits(scripted, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from aiohttp import web

    script, origin = scripted

    async def lang(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=request.headers.get("Accept-Language", "none"),
            headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
        )

    script.handlers["/lang"] = lang
    cfg = replace(load_config(STANDARD_YAML), origins=(url(origin, "/").rstrip("/"),), port=0)
    server = EdgeServer(cfg, access_log=True)
    await server.start()
    try:
        with caplog.at_level(logging.INFO, logger="edge.access"):
            bodies = []
            for lang_ in ("fr", "en", "fr", "en", "de"):
                raw, _ = await exchange(
                    server.port,
                    f"GET /lang HTTP/1.1\r\nHost: x\r\nAccept-Language: {lang_}\r\n\r\n".encode(),
                    1,
                )
                bodies.append(raw.rsplit(b"\r\n\r\n", 1)[1])
    finally:
        await server.stop()
    assert bodies == [b"fr", b"en", b"fr", b"en", b"de"]
    verdicts = [r.getMessage().split()[-2] for r in caplog.records if r.name == "edge.access"]
    assert verdicts == ["MISS", "MISS", "HIT", "HIT", "MISS"]  # the second fr and en hit
    assert script.hits["/lang"] == 3
