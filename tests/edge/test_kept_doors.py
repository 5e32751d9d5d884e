"""What a client can make a worker hold while it is still sending (issue 27, items 5 and 6,
and request bodies): a header block in CONTINUATION frames, a TLS handshake, a request body.
Each is bounded, charged to the worker's memory ledger (`edge_kept_bytes{kind}` in
/_edge/metrics) while held and given back when it ends, and refused past its bound with an
answer the client sees (GOAWAY, a closed connection, 503 with Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import h2.events
import hpack
import pytest
import trustme
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, DataFrame, Frame, HeadersFrame

from edge.base.ledger import HANDSHAKE_BYTES, ITEM_OVERHEAD
from edge.config.tls import Http2Settings
from edge.protocol import h2_frames as wire
from edge.protocol.h2_frames import encode_field
from edge.server import EdgeServer
from tests.edge.conftest import url
from tests.edge.tls_helpers import H2Client, client_context, start_tls_edge

LIST_SIZE = 16384  # SETTINGS_MAX_HEADER_LIST_SIZE of these edges
H2 = Http2Settings(max_header_list_size=LIST_SIZE)
# A request's header block begun in a HEADERS frame (GET https://localhost/a); CONTINUATION
# frames add `pad` fields to it.
BLOCK_START = (
    b"\x82\x87" + encode_field(b":path", b"/a") + encode_field(b":authority", b"localhost")
)


def pad(size: int) -> bytes:
    """An encoded field of `size` bytes (x-pad: v...)."""
    overhead = len(encode_field(b"x-pad", b"v" * size)) - size
    field = encode_field(b"x-pad", b"v" * (size - overhead))
    assert len(field) == size
    return field


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


async def tls_edge(scripted: Any, tmp_path: Path, ca: trustme.CA, **limits: Any) -> EdgeServer:
    script, origin = scripted
    script.set("/a", body=b"A" * 100, Cache_Control="max-age=60")
    script.set("/api/in", status=201, body=b"ok")
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca, limits=limits, http2=H2)
    return server


async def metrics(server: EdgeServer) -> str:
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(f"http://127.0.0.1:{server.port}/_edge/metrics") as r,
    ):
        assert r.status == 200
        return await r.text()


def metric(text: str, name: str, kind: str | None = None) -> int:
    """One sample of /_edge/metrics (the one with kind="..." when given)."""
    labels = rf'[^}}]*kind="{kind}"[^}}]*' if kind else r"[^}]*"
    found = re.search(rf"^{name}(?:\{{{labels}\}})? (\S+)$", text, re.M)
    assert found, f"{name} {kind or ''} not in /_edge/metrics"
    return int(float(found.group(1)))


async def kept(server: EdgeServer, kind: str) -> int:
    return metric(await metrics(server), "edge_kept_bytes", kind)


async def eventually(check: Any, timeout: float = 15.0) -> None:
    """`check()` (a coroutine) comes true within `timeout`, on a busy machine too."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


def goaway_code(client: H2Client) -> int | None:
    g = client.goaway()
    return None if g is None else int(g.error_code or 0)


async def open_block(client: H2Client, sid: int) -> None:
    """A HEADERS frame without END_HEADERS: a header block begins (a GET: END_STREAM)."""
    client.raw(HeadersFrame(sid, data=BLOCK_START, flags=["END_STREAM"]).serialize())
    await client.writer.drain()


async def add_to_block(client: H2Client, sid: int, size: int, end: bool = False) -> None:
    frame = ContinuationFrame(
        sid, data=pad(size) if size else b"", flags=["END_HEADERS"] if end else []
    )
    client.raw(frame.serialize())
    await client.writer.drain()


async def raw_answer(client: H2Client, sid: int, timeout: float = 20.0) -> tuple[str, bytes]:
    """The status and body of stream `sid`, read past h2's state machine (the stream was
    opened with raw frames)."""
    decoder = hpack.Decoder()
    buf, status, body = b"", "", b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        data = await asyncio.wait_for(client.reader.read(65536), max(0.1, deadline - loop.time()))
        assert data, "closed before the answer was whole"
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            if frame.stream_id != sid:
                continue
            if isinstance(frame, HeadersFrame):
                status = dict(decoder.decode(frame.data))[":status"]
            elif isinstance(frame, DataFrame):
                body += frame.data
                if "END_STREAM" in frame.flags:
                    return status, body


async def send_part(client: H2Client, sid: int, data: bytes) -> None:
    """DATA frames on `sid`, without END_STREAM."""
    step = client.h2.max_outbound_frame_size
    for i in range(0, len(data), step):
        client.h2.send_data(sid, data[i : i + step])
    client.flush()
    await client.writer.drain()


# -- item 5: HTTP/2 header blocks ------------------------------------------------------------


async def test_a_header_block_is_refused_as_it_passes_the_list_size_and_charged_meanwhile(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(scripted, tmp_path, ca, keepalive_timeout=60.0)
    try:
        client = await H2Client.open(server.tls_port, ca)
        assert await client.until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
        await open_block(client, 1)
        for _ in range(4):  # 16,000 bytes and the start: within the list size (16 KiB)
            await add_to_block(client, 1, 4000)
        # Held while it is sent, and charged: its bytes and a part's overhead each.
        expected = len(BLOCK_START) + 4 * 4000 + 5 * ITEM_OVERHEAD
        assert len(BLOCK_START) + 4 * 4000 <= LIST_SIZE

        async def charged() -> bool:
            return await kept(server, "header_blocks") == expected

        await eventually(charged)
        assert client.goaway() is None
        # One part more and the block passes what it could decode to: the connection is
        # closed at once, not after the whole block (or the keep-alive timeout).
        await add_to_block(client, 1, 4000)
        assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 10)
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
        while await client.pump(1):
            pass
        assert client.closed
        assert await kept(server, "header_blocks") == 0
        await client.close()
    finally:
        await server.stop()


async def test_header_blocks_of_every_connection_share_the_worker_bound(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    # Two blocks of 12 KB fit in limits.kept.header_blocks, a third does not.
    one = len(BLOCK_START) + 3 * 4000 + 4 * ITEM_OVERHEAD
    bound = 2 * one + 1000
    server = await tls_edge(scripted, tmp_path, ca, kept_limits={"header_blocks": bound})
    clients = []
    try:
        for _ in range(3):
            client = await H2Client.open(server.tls_port, ca)
            assert await client.until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
            await open_block(client, 1)
            for _ in range(3):
                await add_to_block(client, 1, 4000)
            clients.append(client)
        first, second, third = clients
        assert await third.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 10)
        assert goaway_code(third) == ErrorCodes.ENHANCE_YOUR_CALM
        text = await metrics(server)
        assert metric(text, "edge_kept_refused_total", "header_blocks") == 1
        assert metric(text, "edge_kept_bytes", "header_blocks") == 2 * one
        # The two within the bound go on: their blocks end, their requests are answered.
        for client in (first, second):
            assert client.goaway() is None
            await add_to_block(client, 1, 0, end=True)
            assert await raw_answer(client, 1) == ("200", b"A" * 100)
        assert await kept(server, "header_blocks") == 0
    finally:
        for client in clients:
            await client.close()
        await server.stop()


async def test_a_header_block_not_finished_within_the_header_timeout_closes_the_connection(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(scripted, tmp_path, ca, header_timeout=2.0, keepalive_timeout=60.0)
    try:
        client = await H2Client.open(server.tls_port, ca)
        headers, _ = await client.response(client.request("/a"), timeout=15)
        assert headers[b":status"] == b"200"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await open_block(client, 3)
        await add_to_block(client, 3, 100)  # and the rest never comes
        assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 20)
        waited = loop.time() - started
        assert 1.9 < waited < 20  # after header_timeout, long before keepalive_timeout
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
        assert server.node.guard.header_timeouts >= 1
        assert await kept(server, "header_blocks") == 0
        await client.close()
    finally:
        await server.stop()


async def test_http1_heads_not_finished_are_charged_and_bounded(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    """The HTTP/1.1 side of the same rule: a head kept across reads is charged to
    `header_blocks` until it ends; one that does not fit is answered 503."""
    server = await tls_edge(scripted, tmp_path, ca, kept_limits={"header_blocks": 50_000})
    try:
        fields = b"".join(b"X-F%d: %s\r\n" % (k, b"v" * 990) for k in range(30))
        head = b"GET /a HTTP/1.1\r\nHost: localhost\r\n" + fields
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head)  # and not its end

        async def charged() -> bool:
            return await kept(server, "header_blocks") == len(head)

        await eventually(charged)
        other_r, other_w = await asyncio.open_connection("127.0.0.1", server.port)
        other_w.write(head)
        refused = await asyncio.wait_for(other_r.read(), 20)
        other_w.close()
        assert refused.startswith(b"HTTP/1.1 503")
        assert b"\r\nRetry-After: 5\r\n" in refused
        writer.write(b"\r\n")  # the first head ends: answered, given back
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert answer.startswith(b"HTTP/1.1 200")
        writer.close()
        text = await metrics(server)
        assert metric(text, "edge_kept_bytes", "header_blocks") == 0
        assert metric(text, "edge_kept_refused_total", "header_blocks") == 1
    finally:
        await server.stop()


# -- item 6: TLS handshakes ------------------------------------------------------------------


async def stuck_handshake(port: int, ca: trustme.CA) -> tuple[Any, Any]:
    """A TCP connection that sends a ClientHello and never finishes the handshake."""
    hello = client_context(ca, ["h2"]).wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with contextlib.suppress(ssl.SSLWantReadError):
        hello.do_handshake()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(outgoing.read())
    return reader, writer


async def closed_by_edge(reader: asyncio.StreamReader, seconds: float) -> bool:
    """The edge closed the connection within `seconds` (whatever it sent before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            if not await asyncio.wait_for(reader.read(65536), left):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


async def test_handshakes_in_progress_count_against_max_connections(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(scripted, tmp_path, ca, max_connections=20, header_timeout=60.0)
    conns = []
    try:
        for _ in range(50):
            conns.append(await stuck_handshake(server.tls_port, ca))
        closed = await asyncio.gather(*(closed_by_edge(r, 5.0) for r, _ in conns))
        # 30 were closed at once; 20 wait in their handshakes.
        assert closed.count(True) == 30
        guard = server.node.guard
        assert guard.as_dict()["open"] == 20 and guard.over_limit == 30
        conns[closed.index(False)][1].close()  # one leaves: room for the metrics request

        async def one_left() -> bool:
            return len(guard.open) == 19

        await eventually(one_left)
        text = await metrics(server)
        assert metric(text, "edge_client_connections_open") == 20  # 19 + this request
        assert metric(text, "edge_connections_refused_total") == 30
        assert metric(text, "edge_kept_bytes", "handshakes") == 19 * HANDSHAKE_BYTES
        for _, writer in conns:
            writer.close()

        async def all_given_back() -> bool:
            return await kept(server, "handshakes") == 0

        await eventually(all_given_back)
    finally:
        for _, writer in conns:
            writer.close()
        await server.stop()


async def test_handshakes_over_their_ledger_bound_are_refused_and_counted(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(
        scripted,
        tmp_path,
        ca,
        header_timeout=60.0,
        kept_limits={"handshakes": 5 * HANDSHAKE_BYTES},
    )
    conns = []
    try:
        for _ in range(8):
            conns.append(await stuck_handshake(server.tls_port, ca))
        closed = await asyncio.gather(*(closed_by_edge(r, 5.0) for r, _ in conns))
        assert closed.count(True) == 3
        text = await metrics(server)
        assert metric(text, "edge_kept_bytes", "handshakes") == 5 * HANDSHAKE_BYTES
        assert metric(text, "edge_kept_refused_total", "handshakes") == 3
    finally:
        for _, writer in conns:
            writer.close()
        await server.stop()


async def test_a_handshake_past_the_header_timeout_is_closed_and_given_back(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(scripted, tmp_path, ca, header_timeout=5.0)
    try:
        reader, writer = await stuck_handshake(server.tls_port, ca)

        async def charged() -> bool:
            return await kept(server, "handshakes") == HANDSHAKE_BYTES

        await eventually(charged, 4.0)
        assert await closed_by_edge(reader, 20.0)
        writer.close()
        assert server.node.guard.header_timeouts >= 1
        assert await kept(server, "handshakes") == 0
    finally:
        await server.stop()


# -- request bodies --------------------------------------------------------------------------


async def test_http1_bodies_over_the_worker_bound_get_503_and_are_given_back(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(scripted, tmp_path, ca, kept_limits={"bodies": 100_000})
    try:
        # A body being received is charged as it arrives.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = b"POST /api/in HTTP/1.1\r\nHost: localhost\r\nContent-Length: 80000\r\n\r\n"
        writer.write(head + b"x" * 50_000)

        async def half_charged() -> bool:
            return await kept(server, "bodies") == 50_000

        await eventually(half_charged)
        # Another client's body does not fit beside it: 503, Retry-After, and counted.
        other_r, other_w = await asyncio.open_connection("127.0.0.1", server.port)
        other_w.write(head.replace(b"80000", b"60000") + b"y" * 60_000)
        refused = await asyncio.wait_for(other_r.read(), 20)  # to the close
        other_w.close()
        assert refused.startswith(b"HTTP/1.1 503")
        assert b"\r\nRetry-After: 5\r\n" in refused
        assert b"request bodies" in refused
        # The first one ends and is answered: its bytes are given back.
        writer.write(b"x" * 30_000)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert answer.startswith(b"HTTP/1.1 201")
        writer.close()

        async def given_back() -> bool:
            return await kept(server, "bodies") == 0

        await eventually(given_back)
        assert metric(await metrics(server), "edge_kept_refused_total", "bodies") == 1
        # Within the bound: answered as before.
        timeout = aiohttp.ClientTimeout(total=20)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.post(f"http://127.0.0.1:{server.port}/api/in", data=b"z" * 90_000) as r,
        ):
            assert r.status == 201
    finally:
        await server.stop()


async def test_h2_bodies_over_the_worker_bound_get_503_on_their_stream(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await tls_edge(scripted, tmp_path, ca, kept_limits={"bodies": 100_000})
    try:
        client = await H2Client.open(server.tls_port, ca)
        assert await client.until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
        first = client.request("/api/in", method="POST", end=False)
        await send_part(client, first, b"x" * 50_000)

        async def half_charged() -> bool:
            return await kept(server, "bodies") == 50_000

        await eventually(half_charged)
        second = client.request("/api/in", method="POST", end=False)
        await client.send_body(second, b"y" * 60_000, timeout=20)
        headers, body = await client.response(second, timeout=20)
        assert headers[b":status"] == b"503"
        assert headers[b"retry-after"] == b"5"
        assert b"request bodies" in body
        # The connection and the first stream go on; answered, its bytes are given back.
        await client.send_body(first, b"x" * 10_000, timeout=20)
        headers, body = await client.response(first, timeout=20)
        assert headers[b":status"] == b"201" and body == b"ok"

        async def given_back() -> bool:
            return await kept(server, "bodies") == 0

        await eventually(given_back)
        assert metric(await metrics(server), "edge_kept_refused_total", "bodies") == 1
        await client.close()
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("limits", "status"),
    [({"kept_limits": {"bodies": 100_000}}, b"503"), ({"max_request_body": 100_000}, b"413")],
    ids=["bodies-bound", "max-request-body"],
)
async def test_a_body_refused_as_it_arrives_is_answered_before_the_close(
    scripted: Any, tmp_path: Path, ca: trustme.CA, limits: dict[str, Any], status: bytes
) -> None:
    """The client is still sending when it is refused: it reads the answer, then the end of
    the connection (the edge reads and drops the rest, never answering it with RST)."""
    server = await tls_edge(scripted, tmp_path, ca, **limits)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = b"POST /api/in HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4000000\r\n\r\n"
        writer.write(head + b"x" * 4_000_000)
        answer = await asyncio.wait_for(reader.read(), 20)  # to the close, no reset
        assert answer.startswith(b"HTTP/1.1 " + status)
        writer.close()

        async def given_back() -> bool:
            return await kept(server, "bodies") == 0

        await eventually(given_back)
    finally:
        await server.stop()


async def test_header_blocks_kept_decoded_are_charged_and_given_back(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    """A connection keeps the table-neutral blocks it decoded (a repeated request is decoded
    once): charged to the ledger's `heads` while kept, never one over CACHED_BLOCK_BYTES."""
    server = await tls_edge(scripted, tmp_path, ca)
    try:
        await kept(server, "heads")  # this request's own head, kept from now on
        before = await kept(server, "heads")
        client = await H2Client.open(server.tls_port, ca)
        assert await client.until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
        blocks = [BLOCK_START + pad(3000)[:-4] + b"%04d" % i for i in range(8)]
        for i, block in enumerate(blocks):
            assert wire.table_neutral(block) and len(block) <= wire.CACHED_BLOCK_BYTES
            sid = 1 + 2 * i
            frame = HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"])
            client.raw(frame.serialize())
            assert await raw_answer(client, sid) == ("200", b"A" * 100)
        fresh = wire.RequestDecoder(LIST_SIZE)
        expected = sum(wire._decoded_size(b, fresh.request(b)) for b in blocks)
        assert await kept(server, "heads") == before + expected
        # A larger block is answered, and not kept.
        big = BLOCK_START + pad(wire.CACHED_BLOCK_BYTES)
        client.raw(HeadersFrame(17, data=big, flags=["END_HEADERS", "END_STREAM"]).serialize())
        assert await raw_answer(client, 17) == ("200", b"A" * 100)
        assert await kept(server, "heads") == before + expected
        await client.close()

        async def given_back() -> bool:
            return await kept(server, "heads") == before

        await eventually(given_back)
    finally:
        await server.stop()
