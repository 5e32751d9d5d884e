"""The edge's own TLS transport (edge/protocol/tls_transport.py), seen from clients: handshakes that
never finish or are not TLS at all are closed, and a large answer to a slow reader arrives
whole (encrypted as the socket drains)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.edge.conftest import url
from tests.edge.tls_helpers import open_https, start_tls_edge

BIG = bytes(range(256)) * 4096  # 1 MiB: four of the transport's 256 KiB chunks


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture
async def edge(scripted: Any, tmp_path: Path, ca: trustme.CA):  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/big", body=BIG, Cache_Control="max-age=60")
    script.set("/a", body=b"A" * 100, Cache_Control="max-age=60")
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca, {"header_timeout": 0.5})
    yield server
    await server.stop()


async def https_get(port: int, ca: trustme.CA, path: str, slow: bool = False) -> bytes:
    reader, writer = await open_https(port, ca)
    try:
        head = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        if slow:  # let the edge's socket buffer fill before reading anything
            await asyncio.sleep(0.5)
        chunks = []
        while chunk := await asyncio.wait_for(reader.read(8192 if slow else 65536), 10):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


async def closed_within(port: int, data: bytes, seconds: float) -> float:
    """Open a TCP connection, send `data`, and time how long until the edge closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        writer.write(data)
        while await asyncio.wait_for(reader.read(4096), seconds):
            pass
        return time.monotonic() - start
    finally:
        writer.close()


async def test_a_large_answer_reaches_a_slow_reader_whole(edge: Any, ca: trustme.CA) -> None:
    assert (await https_get(edge.tls_port, ca, "/big")).endswith(BIG)  # the miss, then cached
    answer = await https_get(edge.tls_port, ca, "/big", slow=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nx-cache: hit" in head.lower()
    assert body == BIG


async def test_a_handshake_that_never_comes_is_closed_after_the_header_timeout(
    edge: Any, ca: trustme.CA
) -> None:
    waited = await closed_within(edge.tls_port, b"", 5)
    assert 0.4 <= waited < 3
    assert (await https_get(edge.tls_port, ca, "/a")).endswith(b"A" * 100)


async def test_plain_http_on_the_tls_port_is_closed_and_the_edge_serves_on(
    edge: Any, ca: trustme.CA
) -> None:
    waited = await closed_within(edge.tls_port, b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n", 5)
    assert waited < 0.4  # at once, not after the handshake timeout
    assert (await https_get(edge.tls_port, ca, "/a")).endswith(b"A" * 100)


async def test_many_pipelined_requests_in_one_write_are_all_answered_in_order(
    edge: Any, ca: trustme.CA
) -> None:
    # 200 requests in a few records: the connection pauses reading after 32 (MAX_QUEUED)
    # with the rest still encrypted in the transport's buffers, and resumes from there.
    reader, writer = await open_https(edge.tls_port, ca)
    try:
        requests = [f"GET /a?n={i} HTTP/1.1\r\nHost: localhost\r\n\r\n" for i in range(199)]
        requests.append("GET /a?n=199 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        writer.write("".join(requests).encode())
        data = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 200
    assert all(a.startswith(b"200") and a.endswith(b"A" * 100) for a in answers)


async def test_a_client_close_notify_closes_the_connection(edge: Any, ca: trustme.CA) -> None:
    reader, writer = await open_https(edge.tls_port, ca)
    writer.write(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"A" * 100), 5)
    assert head.startswith(b"HTTP/1.1 200")
    open_before = len(edge.engine.guard.open)
    writer.close()  # close_notify, then FIN
    await writer.wait_closed()
    for _ in range(50):
        if len(edge.engine.guard.open) < open_before:
            break
        await asyncio.sleep(0.05)
    assert len(edge.engine.guard.open) == open_before - 1
