"""HTTP/2 abuse, driven with raw frames against a served edge (edge/protocol/http2.py): each
attack gets its answer (GOAWAY, RST_STREAM, refusal), the edge stays up, answers a fresh client,
and what it holds stays bounded. Plus h2spec-style malformed input: no crash, no hang."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import h2.events
import pytest
import trustme
from aiohttp import web
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from edge.config.tls import Http2Settings
from edge.protocol.h2_frames import encode_field
from edge.protocol.http2 import Http2Connection
from edge.server import EdgeServer
from tests.edge.conftest import url
from tests.edge.tls_helpers import H2Client, start_tls_edge

LIMITS = Http2Settings(
    max_concurrent_streams=16,
    max_header_list_size=16384,
    max_resets=50,
    max_control_frames=100,
    stall_timeout=1.0,
)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture
async def edge(scripted, tmp_path: Path, ca: trustme.CA):  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A" * 100, Cache_Control="max-age=60")
    script.set("/big", body=b"B" * 512000, Cache_Control="max-age=60")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(body=b"slow", headers={"Cache-Control": "max-age=60"})

    script.handlers["/slow"] = slow
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca, http2=LIMITS)
    yield script, server
    await server.stop()


def h2_conns(server: EdgeServer) -> list[Http2Connection]:
    return [c for c in server.node.guard.open if isinstance(c, Http2Connection)]


async def still_serves(server: EdgeServer, ca: trustme.CA) -> None:
    """A fresh client is answered normally."""
    client = await H2Client.open(server.tls_port, ca)
    try:
        headers, body = await client.response(client.request("/a"))
        assert headers[b":status"] == b"200" and body == b"A" * 100
    finally:
        await client.close()


async def settled(client: H2Client) -> None:
    """The SETTINGS exchange done (the server's limits in force)."""
    assert await client.until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))


def goaway_code(client: H2Client) -> int | None:
    g = client.goaway()
    return None if g is None else int(g.error_code or 0)


async def test_rapid_reset_is_bounded_and_ends_in_goaway(edge: Any, ca: trustme.CA) -> None:
    script, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    # CVE-2023-44487: open a stream whose answer takes time, cancel it at once, repeat.
    for i in range(400):
        sid = client.request(f"/slow?i={i}")
        client.h2.reset_stream(sid, ErrorCodes.CANCEL)
    client.flush()
    assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
    assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    # Never more answers in progress than SETTINGS_MAX_CONCURRENT_STREAMS allows.
    assert script.hits["/slow"] <= LIMITS.max_concurrent_streams
    await client.close()
    await still_serves(server, ca)


async def test_rapid_reset_of_hits(edge: Any, ca: trustme.CA) -> None:
    _, server = edge
    await still_serves(server, ca)  # /a stored: every stream below is a hit
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    for _ in range(1000):
        client.h2.reset_stream(client.request("/a"), ErrorCodes.CANCEL)
    client.flush()
    await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 2)
    goaway = client.goaway()
    # Answered at once, a hit is done before its reset arrives: the resets cost nothing and
    # the connection may go on (a GOAWAY would only be ENHANCE_YOUR_CALM).
    assert goaway is None or goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    for conn in h2_conns(server):
        assert len(conn.streams) <= LIMITS.max_concurrent_streams
    await client.close()
    await still_serves(server, ca)


async def test_streams_over_the_limit_while_answers_run_are_refused(
    edge: Any, ca: trustme.CA
) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    # 16 cancelled but still running, then one more: refused, the connection stays.
    for i in range(LIMITS.max_concurrent_streams):
        client.h2.reset_stream(client.request(f"/slow?r={i}"), ErrorCodes.CANCEL)
    client.flush()
    await asyncio.sleep(0.05)
    refused = client.request("/slow?r=extra")
    assert await client.until(
        lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == refused
    )
    reset = next(
        e for e in client.events if isinstance(e, h2.events.StreamReset) and e.stream_id == refused
    )
    assert reset.error_code == ErrorCodes.REFUSED_STREAM
    await asyncio.sleep(0.5)  # the slow answers complete
    headers, _ = await client.response(client.request("/a"))
    assert headers[b":status"] == b"200"
    await client.close()


async def test_continuation_flood_is_cut_off(edge: Any, ca: trustme.CA) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    # CVE-2024-27316 and kin: a header block that never ends, in small frames (200 x 100
    # bytes: the 65th frame is refused before the block's size reaches its bound).
    first = HeadersFrame(1, data=b"\x82\x87\x84", flags=[])
    client.raw(first.serialize())
    junk = ContinuationFrame(1, data=b"\x00" * 100, flags=[]).serialize()
    client.raw(junk * 200)
    assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 5)
    assert goaway_code(client) == ErrorCodes.PROTOCOL_ERROR
    assert await client.pump(2) is False  # closed
    assert not h2_conns(server)
    await still_serves(server, ca)


async def test_header_list_over_the_limit(edge: Any, ca: trustme.CA) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    sid = client.h2.get_next_available_stream_id()
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/a"),
        (b"x-big", b"v" * 40000),  # over SETTINGS_MAX_HEADER_LIST_SIZE (16 KB): CONTINUATIONs
    ]
    client.h2.send_headers(sid, headers, end_stream=True)
    client.flush()
    assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 5)
    assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    await client.close()
    await still_serves(server, ca)


async def test_a_field_over_max_field_size_is_431(edge: Any, ca: trustme.CA) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    sid = client.h2.get_next_available_stream_id()
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/a"),
        (b"x-big", b"v" * 9000),  # under the header list size, over limits.max_field_size
    ]
    client.h2.send_headers(sid, headers, end_stream=True)
    client.flush()
    headers_got, _ = await client.response(sid)
    assert headers_got[b":status"] == b"431"
    headers_got, _ = await client.response(client.request("/a"))  # the connection goes on
    assert headers_got[b":status"] == b"200"
    await client.close()


@pytest.mark.parametrize(
    "frame",
    [PingFrame(0, opaque_data=b"12345678"), SettingsFrame(0), WindowUpdateFrame(0, 1)],
    ids=["ping", "settings", "one-byte-window-updates"],
)
async def test_control_frame_floods_end_in_goaway(edge: Any, ca: trustme.CA, frame: Any) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    client.raw(frame.serialize() * 1000)
    assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 5)
    assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    await client.close()
    await still_serves(server, ca)


async def test_zero_stream_window_stall_is_reset(edge: Any, ca: trustme.CA) -> None:
    _, server = edge
    # The client opens no stream window at all: the answer can never be sent.
    client = await H2Client.open(server.tls_port, ca, settings={0x4: 0})
    await settled(client)
    sid = client.request("/big")
    assert await client.until(
        lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid, 5
    )
    reset = next(e for e in client.events if isinstance(e, h2.events.StreamReset))
    assert reset.error_code == ErrorCodes.CANCEL
    # Nothing is held for it any more; the connection itself is still usable.
    (conn,) = h2_conns(server)
    for _ in range(40):
        if not conn.streams:
            break
        await asyncio.sleep(0.05)
    assert not conn.streams
    await client.close()
    await still_serves(server, ca)


async def test_zero_connection_window_stall_is_closed(edge: Any, ca: trustme.CA) -> None:
    _, server = edge
    # A huge stream window, but the connection window is never opened again.
    client = await H2Client.open(server.tls_port, ca, settings={0x4: 2**31 - 1})
    await settled(client)
    client.request("/big")
    got = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    while loop.time() < deadline and client.goaway() is None:
        await client.pump(0.5)
        got = sum(len(e.data or b"") for e in client.events if isinstance(e, DataEv))
    assert goaway_code(client) == ErrorCodes.FLOW_CONTROL_ERROR
    assert got <= 65535  # what the initial connection window allowed, no more
    await client.close()
    await still_serves(server, ca)


async def test_a_client_that_does_not_read_is_closed(edge: Any, ca: trustme.CA) -> None:
    script, server = edge
    script.set("/huge", body=b"H" * (4 << 20), Cache_Control="max-age=60")
    client = await H2Client.open(server.tls_port, ca, settings={0x4: 2**31 - 1})
    await settled(client)
    client.h2.increment_flow_control_window(2**30)
    client.flush()
    # 16 x 4 MB asked for with every window open, and never read: more than the socket
    # buffers hold, so the socket stays full.
    for _ in range(LIMITS.max_concurrent_streams):
        client.request("/huge")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8
    await asyncio.sleep(0.5)
    assert h2_conns(server), "the connection should be open while its socket fills"
    while h2_conns(server) and loop.time() < deadline:  # noqa: ASYNC110 (polling the server)
        await asyncio.sleep(0.2)
    assert not h2_conns(server)  # closed after stall_timeout with the socket full
    await client.close()
    await still_serves(server, ca)


DataEv = h2.events.DataReceived

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()


def frame_bytes(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid)
    return head + payload


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no preface
        PREFACE + frame_bytes(0x0, 0, 0, b"x"),  # DATA on stream 0
        PREFACE + frame_bytes(0x1, 0x5, 2, b"\x82\x87\x84"),  # an even (server) stream id
        PREFACE + frame_bytes(0x4, 0, 0, b"\x00\x04\xff\xff\xff\xff"),  # window over 2^31-1
        PREFACE + frame_bytes(0x0, 0, 1, b"x" * 20000),  # DATA over SETTINGS_MAX_FRAME_SIZE
        PREFACE + frame_bytes(0x8, 0, 0, b"\x00\x00\x00\x00"),  # zero increment
        PREFACE + frame_bytes(0x1, 0x5, 1, b"\xff\xff\xff\xff"),  # HPACK garbage
        PREFACE + frame_bytes(0x1, 0x5, 1, b"\x40\x01A\x01b\x82\x87\x84"),  # upper-case name
        PREFACE + frame_bytes(0x1, 0x5, 1, b"\x82\x87"),  # no :path
        PREFACE + frame_bytes(0x8, 0, 1, b"\x00\x00\x01\x00"),  # WINDOW_UPDATE, idle stream
        PREFACE + frame_bytes(0x4, 0x1, 0, b"\x00"),  # SETTINGS ACK with a payload
    ],
    ids=[
        "no-preface",
        "data-stream-0",
        "even-stream",
        "window-overflow",
        "oversized-frame",
        "zero-increment",
        "hpack-garbage",
        "uppercase-name",
        "no-path",
        "idle-window-update",
        "settings-ack-payload",
    ],
)
async def test_malformed_input_gets_an_error_not_a_crash(
    edge: Any, ca: trustme.CA, data: bytes
) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca, init=False)
    client.writer.write(data)
    # The server answers with GOAWAY or RST_STREAM (or closes): it must not hang.
    frames = await client.raw_frames(until_closed=1.5)
    kinds = {type(f).__name__ for f in frames}
    closed = client.reader.at_eof()
    assert closed or "RstStreamFrame" in kinds or "GoAwayFrame" in kinds, kinds
    await client.close()
    await still_serves(server, ca)


async def test_streams_over_max_concurrent_streams_are_refused_not_fatal(
    edge: Any, ca: trustme.CA
) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    for i in range(LIMITS.max_concurrent_streams):  # all open: their answers take 0.3 s
        client.request(f"/slow?c={i}")
    await asyncio.sleep(0.05)
    # One more than SETTINGS_MAX_CONCURRENT_STREAMS, past the client library (which would
    # not send it), with a stateless header block (the client's HPACK table stays in step).
    extra = 2 * LIMITS.max_concurrent_streams + 1
    block = b"\x82\x87" + encode_field(b":authority", b"localhost") + encode_field(b":path", b"/a")
    client.raw(frame_bytes(0x1, 0x5, extra, block))
    frames = await client.raw_frames(until_closed=1.5)
    resets = [f for f in frames if type(f).__name__ == "RstStreamFrame" and f.stream_id == extra]
    # RFC 9113 section 5.1.2: REFUSED_STREAM for that stream, not a connection error.
    assert [f.error_code for f in resets] == [ErrorCodes.REFUSED_STREAM]
    assert not [f for f in frames if type(f).__name__ == "GoAwayFrame"]
    assert not client.reader.at_eof()
    # The streams already open are answered.
    answered = {f.stream_id for f in frames if type(f).__name__ == "HeadersFrame"}
    assert answered == set(range(1, extra, 2))
    await client.close()
    await still_serves(server, ca)


async def timed_edge(scripted: Any, tmp_path: Path, ca: trustme.CA, **limits: float) -> EdgeServer:
    script, origin = scripted
    script.set("/a", body=b"A" * 100, Cache_Control="max-age=60")
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca, limits=limits, http2=LIMITS)
    return server


async def test_slow_preface_is_closed_after_header_timeout(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await timed_edge(scripted, tmp_path, ca, header_timeout=0.5)
    try:
        client = await H2Client.open(server.tls_port, ca, init=False)
        client.writer.write(PREFACE[:10])  # a preface that never ends
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        frames = await client.raw_frames(until_closed=4)
        assert client.reader.at_eof(), "still open after header_timeout"
        assert loop.time() - t0 < 3.5
        assert {type(f).__name__ for f in frames} <= {"SettingsFrame", "WindowUpdateFrame"}
        assert server.node.guard.header_timeouts >= 1
        await client.close()
        await still_serves(server, ca)
    finally:
        await server.stop()


async def test_idle_connection_gets_goaway_after_keepalive_timeout(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    server = await timed_edge(scripted, tmp_path, ca, keepalive_timeout=1.0)
    try:
        client = await H2Client.open(server.tls_port, ca)
        headers, _ = await client.response(client.request("/a"))
        assert headers[b":status"] == b"200"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), 5)
        assert goaway_code(client) == ErrorCodes.NO_ERROR
        assert 0.9 < loop.time() - t0 < 4
        while await client.pump(1):  # then closed
            pass
        assert client.closed
        assert not h2_conns(server)
        await client.close()
    finally:
        await server.stop()


def post_headers(path: str, length: int | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", path.encode()),
    ]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return headers


async def test_request_bodies_over_the_limit_are_413(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    script, _ = scripted
    script.set("/api/in", status=201, body=b"ok")
    server = await timed_edge(scripted, tmp_path, ca, max_request_body=1000)
    try:
        client = await H2Client.open(server.tls_port, ca)
        await settled(client)
        # Announced too large: 413 at once.
        sid = client.h2.get_next_available_stream_id()
        client.h2.send_headers(sid, post_headers("/api/in", 5000))
        client.flush()
        headers, _ = await client.response(sid)
        assert headers[b":status"] == b"413"
        # Not announced, and larger than the limit as it arrives: 413 too.
        sid = client.request("/api/in", method="POST", end=False)
        client.h2.send_data(sid, b"x" * 5000)
        client.flush()
        headers, _ = await client.response(sid)
        assert headers[b":status"] == b"413"
        # Within the limit: it reaches the origin; the connection went on.
        sid = client.request("/api/in", method="POST", end=False)
        await client.send_body(sid, b"y" * 500)
        headers, body = await client.response(sid)
        assert headers[b":status"] == b"201" and body == b"ok"
        assert script.seen[-1].method == "POST"
        await client.close()
    finally:
        await server.stop()


async def test_a_body_that_does_not_match_its_content_length_is_a_stream_error(
    edge: Any, ca: trustme.CA
) -> None:
    _, server = edge
    client = await H2Client.open(server.tls_port, ca)
    await settled(client)
    sid = client.h2.get_next_available_stream_id()
    client.h2.send_headers(sid, post_headers("/a", 10))
    client.h2.send_data(sid, b"12345", end_stream=True)  # 5 of the 10 announced
    client.flush()
    assert await client.until(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid)
    reset = next(e for e in client.events if isinstance(e, h2.events.StreamReset))
    assert reset.error_code == ErrorCodes.PROTOCOL_ERROR  # RFC 9113 section 8.1.1
    headers, _ = await client.response(client.request("/a"))  # the connection goes on
    assert headers[b":status"] == b"200"
    await client.close()


async def test_a_slow_request_body_is_408(scripted: Any, tmp_path: Path, ca: trustme.CA) -> None:
    server = await timed_edge(scripted, tmp_path, ca, body_timeout=0.5)
    try:
        client = await H2Client.open(server.tls_port, ca)
        await settled(client)
        sid = client.request("/api/slow-body", method="POST", end=False)  # and no DATA
        headers, _ = await client.response(sid, timeout=5)
        assert headers[b":status"] == b"408"
        assert server.node.guard.body_timeouts >= 1
        await client.close()
    finally:
        await server.stop()
