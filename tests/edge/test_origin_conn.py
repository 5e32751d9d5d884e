"""The origin client (edge.upstream.origin_conn, edge.upstream.client.Upstream) against origins
that answer with scripted bytes on real sockets: what a proxy must get right on the wire."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from multidict import CIMultiDict

from edge.upstream.client import OriginUnavailable, Upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A TCP origin whose every connection runs `handler`; counts connections and keeps the
    request heads it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Awaitable[Scripted]]]:
    made: list[Scripted] = []

    async def make(handler: Handler) -> Scripted:
        origin = Scripted(handler)
        origin.server = await asyncio.start_server(origin._serve, "127.0.0.1", 0)
        made.append(origin)
        return origin

    yield make
    for origin in made:
        assert origin.server is not None
        origin.server.close()


Make = Callable[[Handler], Awaitable[Scripted]]


async def _upstream(url: str, read_timeout: float = 10.0) -> Upstream:
    up = Upstream([url], connect_timeout=5.0, read_timeout=read_timeout)
    await up.start()
    return up


async def test_an_interim_answer_is_skipped_and_the_final_one_read(scripted: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await origin.read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello")
        await writer.drain()
        await reader.read()

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    resp = await up.request("GET", "/x", CIMultiDict())
    assert resp.status == 200
    assert resp.headers["X-Final"] == "yes" and "Link" not in resp.headers
    assert await resp.read() == b"hello"
    resp.release()
    await up.close()


async def test_field_values_pass_as_the_bytes_they_are(scripted: Make) -> None:
    raw = "caf\u00e9 \u00ff".encode("latin-1")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await origin.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Name: " + raw + b"\r\n\r\n")
        await writer.drain()
        await reader.read()

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    sent = CIMultiDict({"X-Client": "na\u00efve"})
    resp = await up.request("GET", "/x", sent)
    assert resp.headers["X-Name"].encode("latin-1") == raw
    assert b"X-Client: na\xefve\r\n" in origin.heads[0]
    resp.release()
    await up.close()


async def test_a_body_ended_by_the_close_is_read_whole_and_the_connection_not_reused(
    scripted: Make,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await origin.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for part in (b"one ", b"two ", b"three"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    for _ in range(2):
        resp = await up.request("GET", "/x", CIMultiDict())
        assert resp.content_length is None
        assert await resp.read() == b"one two three"
        resp.release()
    assert origin.connections == 2
    await up.close()


async def test_a_head_answer_with_a_length_leaves_the_connection_reusable(scripted: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await origin.read_head(reader)
            body = b"" if head.startswith(b"HEAD") else b"x" * 100
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + body)
            await writer.drain()

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    for method in ("HEAD", "GET", "HEAD", "GET"):
        resp = await up.request(method, "/x", CIMultiDict())
        assert resp.status == 200 and resp.content_length == 100
        assert await resp.read() == (b"" if method == "HEAD" else b"x" * 100)
        resp.release()
    assert origin.connections == 1
    await up.close()


async def test_an_origin_silent_past_the_read_timeout_is_a_timeout(scripted: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await origin.read_head(reader)
        await asyncio.sleep(30)

    origin = await scripted(handler)
    up = await _upstream(origin.url, read_timeout=0.5)
    with pytest.raises(OriginUnavailable) as caught:
        await asyncio.wait_for(up.request("GET", "/x", CIMultiDict()), 20)
    assert caught.value.kind == "timeout"
    await up.close()


async def test_a_body_that_stops_short_is_an_error_not_a_shorter_body(scripted: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await origin.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    resp = await up.request("GET", "/x", CIMultiDict())
    with pytest.raises(OSError):
        await resp.read()
    resp.release()
    await up.close()


async def test_a_pooled_connection_the_origin_closed_is_retried_only_for_a_safe_request(
    scripted: Make,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One answer per connection, announced as keep-alive, then the connection dropped
        # when the next request arrives (as an origin whose keep-alive timer just ran out).
        await origin.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await origin.read_head(reader)

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    resp = await up.request("GET", "/a", CIMultiDict())
    assert await resp.read() == b"ok"
    resp.release()
    resp = await up.request("GET", "/b", CIMultiDict())  # the pooled one fails: a fresh one
    assert await resp.read() == b"ok"
    resp.release()
    with pytest.raises(OriginUnavailable):
        await up.request("POST", "/orders", CIMultiDict(), body=b"{}")
    assert [h.split(b" ")[1] for h in origin.heads] == [b"/a", b"/b", b"/b", b"/orders"]
    await up.close()


async def test_a_body_goes_with_its_length_and_the_clients_framing_never(scripted: Make) -> None:
    got: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await origin.read_head(reader)
        got.append(await reader.readexactly(7))
        assert b"Transfer-Encoding" not in head
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    origin = await scripted(handler)
    up = await _upstream(origin.url)
    sent = CIMultiDict({"Transfer-Encoding": "chunked", "Content-Length": "99"})
    resp = await up.request("POST", "/orders", sent, body=b"payload")
    assert resp.status == 201
    resp.release()
    assert got == [b"payload"]
    head = origin.heads[0]
    assert head.startswith(b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 7\r\n" in head and b"Content-Length: 99" not in head
    await up.close()


async def test_a_large_body_the_origin_reads_late_still_goes_through() -> None:
    """The edge gives up on a connection whose bytes go unacknowledged for the connect timeout
    (a machine lost); an origin that is only slow to read a large body is not that."""
    got: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await asyncio.sleep(3.0)  # the body waits, its window closed
        got.append(len(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(handler, sock=listener)
    port = listener.getsockname()[1]
    up = Upstream([f"http://127.0.0.1:{port}"], connect_timeout=1.0, read_timeout=30.0)
    await up.start()
    body = b"x" * (8 << 20)
    resp = await asyncio.wait_for(up.request("POST", "/upload", CIMultiDict(), body=body), 60)
    assert resp.status == 201 and got == [len(body)]
    resp.release()
    await up.close()
    server.close()
