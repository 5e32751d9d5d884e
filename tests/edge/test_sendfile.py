"""A big body kept in memory lives in a memfd (edge/base/memfile.py) and HTTP/1.1 on plain TCP
sends it with sendfile (edge/protocol/file_out.py): the same bytes as every other door, in
order behind pipelined requests, a client gone mid-body costs nothing, and the memfd goes
with the last user of its body (a purge, then the sends still under way)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import socket
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import pytest
import trustme
import uvloop
from aiohttp import web

from edge.base import memfile
from edge.config.settings import Rule, SlicePolicy, load_config
from edge.engine.engine import Engine
from edge.protocol.file_out import FileOut
from edge.server import EdgeServer
from origin.app import create_app as create_origin
from origin.settings import OriginSettings
from tests.edge.conftest import EDGE_YAML, TOKEN
from tests.edge.test_request_check import Sent, _h1, _h2
from tests.edge.tls_helpers import client_context, start_tls_edge

IMAGE = Path(__file__).resolve().parents[2] / "origin" / "static" / "5mo.jpg"
PHOTO = b"/5mo.jpg"
WAIT = 30.0  # seconds: a bound for what must happen, never a pace


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture
async def edge(origin: Any, tmp_path: Path, ca: trustme.CA):  # type: ignore[no-untyped-def]
    """The shop's origin behind an edge with plain and TLS ports, the photo sliced at 128 KB
    as config/edge.yaml slices it."""
    rules = (Rule(match="/5mo.jpg", slice=SlicePolicy(128 * 1024, 4)),)
    server, _ = await start_tls_edge(
        str(origin.make_url("/")), tmp_path, ca, limits={"rules": rules, "purge_token": TOKEN}
    )
    yield server
    await server.stop()


def sendfiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts `os.sendfile` sent, from now on."""
    sent: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)
    return sent


async def warm(server: Any) -> None:
    """The photo fetched in slices, then kept whole (in a memfd) by its next hit."""
    for _ in range(2):
        await _h1(server.port, Sent(b"GET", PHOTO, b"localhost", (), b""), None)
    engine: Engine = server.node
    assert engine.slicer.assembled == 1
    (entry,) = engine.tiers.hot.get("/5mo.jpg")
    assert memfile.file_of(entry.body) is not None


def read_answers(data: bytes, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` HTTP/1.1 answers parsed from one connection's bytes, in order."""
    answers: list[tuple[int, dict[str, str], bytes]] = []

    class Collect:
        def on_message_begin(self) -> None:
            answers.append((0, {}, b""))

        def on_header(self, name: bytes, value: bytes) -> None:
            answers[-1][1][name.decode().lower()] = value.decode()

        def on_headers_complete(self) -> None:
            _, fields, body = answers[-1]
            answers[-1] = (parser.get_status_code(), fields, body)

        def on_body(self, body: bytes) -> None:
            status, fields, old = answers[-1]
            answers[-1] = (status, fields, old + body)

    parser = httptools.HttpResponseParser(Collect())
    parser.feed_data(data)
    assert len(answers) == count
    return answers


async def test_a_big_hit_is_the_same_on_every_door_and_in_order(
    edge: Any, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = IMAGE.read_bytes()
    await warm(edge)
    sent = sendfiles(monkeypatch)
    # Pipelined in one write: the photo, a Range of it, the shop's stylesheet, the photo.
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    heads = [
        b"GET /5mo.jpg HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /5mo.jpg HTTP/1.1\r\nHost: localhost\r\nRange: bytes=1000-1999\r\n\r\n",
        b"GET /woody.css HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /5mo.jpg HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ]
    writer.write(b"".join(heads))
    data = await asyncio.wait_for(reader.read(-1), WAIT)
    writer.close()
    answers = read_answers(data, 4)
    assert [a[0] for a in answers] == [200, 206, 200, 200]
    assert sha(answers[0][2]) == sha(answers[3][2]) == sha(whole)
    assert answers[1][2] == whole[1000:2000]
    assert answers[0][1]["x-cache"] == "HIT"
    assert sum(sent) == 2 * len(whole)  # both whole bodies, and only they, by sendfile
    # The same bytes over HTTPS (HTTP/1.1 and h2): written there, never sendfile.
    before = len(sent)
    https = await _h1(edge.tls_port, Sent(b"GET", PHOTO, b"localhost", (), b""), tls(ca))
    h2 = await _h2(edge.tls_port, ca, Sent(b"GET", PHOTO, b"localhost", (), b""))
    assert https.status == h2.status == 200
    assert sha(https.body) == sha(h2.body) == sha(whole)
    assert len(sent) == before
    # A part of 64 KiB or more is sent from the file too, from its offset.
    before = len(sent)
    part = await _h1(
        edge.port,
        Sent(b"GET", PHOTO, b"localhost", ((b"range", b"bytes=100001-1200000"),), b""),
        None,
    )
    assert part.status == 206 and part.body == whole[100001:1200001]
    assert sum(sent[before:]) == 1100000
    before = len(sent)
    # HEAD: the head alone.
    head = await _h1(edge.port, Sent(b"HEAD", PHOTO, b"localhost", (), b""), None)
    assert head.status == 200 and head.fields["content-length"] == str(len(whole))
    assert len(sent) == before


def tls(ca: trustme.CA) -> Any:
    return client_context(ca, ["http/1.1"])


def slow_client(port: int) -> socket.socket:
    """A blocking client whose receive buffer is small: a 5 MB answer stays mid-body until it
    reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(WAIT)
    return sock


async def until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_client_gone_mid_body_leaves_the_edge_serving(
    edge: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = IMAGE.read_bytes()
    await warm(edge)
    ended: list[bool] = []
    end = FileOut._end

    def ending(out: FileOut, ok: bool) -> None:
        ended.append(ok)
        end(out, ok)

    monkeypatch.setattr(FileOut, "_end", ending)
    engine: Engine = edge.node
    fds = len(os.listdir("/proc/self/fd"))
    sock = slow_client(edge.port)
    sock.sendall(b"GET /5mo.jpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = await asyncio.to_thread(sock.recv, 65536)
    assert got.startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(0.2)  # the edge is at the socket's limit: the rest waits for it
    # Gone with a reset, mid-body.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    await until(lambda: not engine.guard.open, "the connection is let go")
    assert ended == [False]  # the send broke off mid-body
    await until(lambda: len(os.listdir("/proc/self/fd")) <= fds, "no fd is left behind")
    answer = await _h1(edge.port, Sent(b"GET", PHOTO, b"localhost", (), b""), None)
    assert answer.status == 200 and sha(answer.body) == sha(whole)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not any(r.exc_info for r in caplog.records)


async def files_open(session: aiohttp.ClientSession, server: Any) -> int:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with session.get(f"http://127.0.0.1:{server.port}/_edge/stats", headers=auth) as r:
        return int((await r.json())["memory"]["files"])


async def test_the_memfd_goes_after_the_purge_and_the_sends_still_reading_it(
    edge: Any,
) -> None:
    whole = IMAGE.read_bytes()
    async with aiohttp.ClientSession() as s:
        at_first = await files_open(s, edge)
        await warm(edge)
        assert await files_open(s, edge) == at_first + 1
        # A send under way holds the body; the purge takes the hot entry.
        sock = slow_client(edge.port)
        sock.sendall(b"GET /5mo.jpg HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        first = await asyncio.to_thread(sock.recv, 65536)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.post(
            f"http://127.0.0.1:{edge.port}/_edge/purge", json={"urls": ["/5mo.jpg"]}, headers=auth
        ) as r:
            assert r.status == 200
        assert not edge.node.tiers.hot.get("/5mo.jpg")
        await asyncio.sleep(1.5)  # kept hits let go of the entry within a second
        assert await files_open(s, edge) == at_first + 1  # still read by the send

        def rest() -> bytes:
            data = first
            while chunk := sock.recv(1 << 20):
                data += chunk
            sock.close()
            return data

        data = await asyncio.to_thread(rest)
        assert sha(data.partition(b"\r\n\r\n")[2]) == sha(whole)  # intact after the purge

        async def gone() -> bool:
            return await files_open(s, edge) == at_first

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not await gone():
            assert loop.time() < deadline, "the memfd was not closed"
            await asyncio.sleep(0.1)


# -- the sender on the edge's own loop (uvloop), beneath its transport ---------------------


async def around_a_file(body: memoryview, without_dup: pytest.MonkeyPatch | None = None) -> bytes:
    """What a client reads when a server writes 1 MiB on its transport, then `body` from its
    5th byte through a FileOut (headed "head"), then ">" on the transport again."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    transport = await made
    fd = transport.get_extra_info("socket").fileno()
    transport.write(b"<" * (1 << 20))  # more than the socket takes at once: buffered
    ended: asyncio.Future[bool] = loop.create_future()
    file = memfile.file_of(body)
    assert file is not None
    out = FileOut(loop, transport, fd, b"head", file, 5, len(body) - 5, ended.set_result)
    if without_dup is None:
        assert not out.start()  # the transport still holds bytes: the file waits for them
        data = await reader.readexactly(1 << 20)
        assert await ended is True
    else:
        with without_dup.context() as patch:

            def no_fd(fd: int) -> int:
                raise OSError(24, "Too many open files")

            patch.setattr(os, "dup", no_fd)
            assert out.start()  # written at once, as an ordinary body
        data = b""
    transport.write(b">")
    transport.close()
    data += await reader.read(-1)
    writer.close()
    server.close()
    return data


def test_file_out_on_uvloop_keeps_the_transports_order() -> None:
    """Bytes written to the transport before the file go first, those after it go after: the
    connection writes nothing else while the file is out, and the file waits for what the
    transport still holds."""
    body = memoryview(memfile.MemFile(os.urandom(3 * 1024 * 1024 + 7)))
    data = uvloop.run(around_a_file(body))
    assert data == b"<" * (1 << 20) + b"head" + bytes(body[5:]) + b">"


async def test_without_an_fd_to_wait_on_the_rest_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = memoryview(memfile.MemFile(os.urandom(3 * 1024 * 1024 + 7)))
    data = await around_a_file(body, monkeypatch)
    assert data == b"<" * (1 << 20) + b"head" + bytes(body[5:]) + b">"


def test_on_uvloop_a_whole_edge_sends_from_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The edge as `edge serve` runs it (uvloop, config/edge.yaml): pipelined answers in
    order around two bodies sent from the file, a client gone mid-body, the next one served,
    nothing logged as an error."""
    whole = IMAGE.read_bytes()

    async def main() -> None:
        settings = OriginSettings(
            db=str(tmp_path / "woody.sqlite3"), static_rate=0, access_log=False
        )
        runner = web.AppRunner(create_origin(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origin_port = runner.addresses[0][1]
        cfg = replace(
            load_config(EDGE_YAML),
            origins=(f"http://127.0.0.1:{origin_port}",),
            port=0,
            purge_token=TOKEN,
        )
        server = EdgeServer(cfg)
        await server.start()
        try:
            await warm(server)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /5mo.jpg HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /woody.css HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET /5mo.jpg HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            data = await asyncio.wait_for(reader.read(-1), WAIT)
            writer.close()
            photo, css, again = read_answers(data, 3)
            assert sha(photo[2]) == sha(again[2]) == sha(whole)
            assert css[0] == 200 and css[1]["content-type"].startswith("text/css")
            sock = slow_client(server.port)
            sock.sendall(b"GET /5mo.jpg HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await asyncio.to_thread(sock.recv, 65536)).startswith(b"HTTP/1.1 200 ")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            await until(lambda: not server.node.guard.open, "the connection is let go")
            answer = await _h1(server.port, Sent(b"GET", PHOTO, b"a", (), b""), None)
            assert sha(answer.body) == sha(whole)
        finally:
            await server.stop()
            await runner.cleanup()

    uvloop.run(main())
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_memfile_closes_with_its_last_user() -> None:
    before = memfile.open_files()
    view = memfile.kept(b"x" * memfile.MIN_BYTES)
    part = view[10:20]
    assert memfile.kept(view) is view and memfile.file_of(part) is view.obj
    assert not memfile.worth_keeping(view) and not memfile.worth_keeping(b"x" * 10)
    del view
    assert memfile.open_files() == before + 1  # `part` still reads it
    del part
    assert memfile.open_files() == before


async def test_with_sendfile_off_big_bodies_stay_bytes(
    origin: Any, tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`memory.sendfile: false`: no memfd, the body written as before."""
    rules = (Rule(match="/5mo.jpg", slice=SlicePolicy(128 * 1024, 4)),)
    server, _ = await start_tls_edge(
        str(origin.make_url("/")), tmp_path, ca, limits={"rules": rules, "memory_sendfile": False}
    )
    try:
        sent = sendfiles(monkeypatch)
        for _ in range(3):
            answer = await _h1(server.port, Sent(b"GET", PHOTO, b"localhost", (), b""), None)
            assert sha(answer.body) == sha(IMAGE.read_bytes())
        (entry,) = server.node.tiers.hot.get("/5mo.jpg")
        assert memfile.file_of(entry.body) is None and not sent
    finally:
        await server.stop()


def test_without_a_memfd_the_body_stays_as_it_came(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memfd(name: str, flags: int = 0) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    body = b"x" * memfile.MIN_BYTES
    assert memfile.kept(body) is body


def test_the_hot_tier_counts_a_memfd_body_as_before_and_closes_it_on_eviction() -> None:
    from edge.cache.entry import Entry
    from edge.store.memory import MemoryTier

    def entry(key: str) -> Entry:
        return Entry(key, 200, (("ETag", '"1"'),), os.urandom(300_000), 1.0, 1.0)

    far = 4e9
    before = memfile.open_files()
    with_files = MemoryTier(max_bytes=700_000, max_object_bytes=400_000, files=True)
    without = MemoryTier(max_bytes=700_000, max_object_bytes=400_000)
    a, b, c = entry("/a"), entry("/b"), entry("/c")
    for tier in (with_files, without):
        assert tier.put(a, far) and tier.put(b, far)
    assert with_files.stats()["bytes"] == without.stats()["bytes"] == a.size + b.size
    (kept,) = with_files.get("/a")
    assert memfile.file_of(kept.body) is not None and kept.body == a.body
    assert memfile.open_files() == before + 2
    del kept
    assert with_files.put(c, far)  # /b, least recently used (/a was just read), is evicted
    assert with_files.get("/b") == [] and memfile.open_files() == before + 2
    with_files.clear()
    assert memfile.open_files() == before


def test_memfds_leave_most_fds_to_the_connections() -> None:
    """A worker's memfds take at most an eighth of its fd limit (two fds each: a quarter):
    past it a big body stays in the heap, as without memfds, and accept keeps its fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 512
    assert len(os.listdir("/proc/self/fd")) < limit // 2
    body = b"b" * memfile.MIN_BYTES
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        while memfile.open_files() < limit // 8:
            view = memfile.kept(body)
            assert memfile.file_of(view) is not None
            held.append(view)
        assert memfile.kept(body) is body  # the budget is spent: kept as it came
        del view
        held.pop()
        assert memfile.file_of(memfile.kept(body)) is not None  # one let go: room again
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
