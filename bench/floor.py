"""The floor: the cheapest HTTP/1.1 server on the edge's own stack, a peer in `bench load`.

    python -m bench.floor --port P [--tls-port T --cert C --key K] [--workers 2] [--hit]
    python -m bench.floor --port P --proxy http://HOST:PORT [--workers 2]

uvloop, httptools and the edge's TLS layer (`edge.protocol.tls_transport`, with
`edge.protocol.tls`'s server context), and no cache: every request is answered with one constant
200 of 1 KB whose head has the size and fields of an edge hit's. What `bench load` measures for
it is what a Python server on this stack costs before it does any of the edge's work (routing,
the lookup, freshness, Age, counters), so edge ÷ floor is the price of that work and floor ÷
nginx the price of the stack. It is not a cache and serves only the 1 KB scenarios (a, h, j).

With `--hit` (`--caches floor-hit`), it does the least an HTTP/1.1 cache does for a hit in
Python, on the same stack: the target and every field read in httptools' callbacks (the
fields a cache must look at flagged, Host kept), one dict lookup by target, Age and
Cache-Status written per answer. No routing, no tiers, no purge generation, no pipelining
queue, no timeouts, no counters. edge ÷ floor-hit is the price of what the edge does beyond
that least; floor-hit ÷ nginx says what any Python hit path on this stack can reach.

With `--proxy` (`--caches floor` in scenario e, the miss), it is the least a reverse proxy
does for a miss on the same stack: the request's target sent on the client connection's own
kept-alive connection to the origin, the answer's bytes written back as they came. No cache
key, no header rules, no collapsing, no storing. What it adds over the origin direct is what
any Python proxy on this stack adds to a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from typing import Any

import httptools

from edge.http.fields import FLAGS_BY_NAME

BODY = b"x" * 1024
# The fields and sizes of an edge hit on /bench/obj/1024 (its X-Cache says what this is).
HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Cache-Control: public, max-age=3600\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b'Etag: "400-d39b636e"\r\n'
    b"Date: Wed, 02 Dec 2026 17:58:01 GMT\r\n"
    b"Server: bench-floor\r\n"
    b"Via: 1.1 floor (bench)\r\n"
    b"X-Served-By: floor\r\n"
    b"X-Cache: FLOOR\r\n"
    b"Accept-Ranges: bytes\r\n"
    b"Content-Length: 1024\r\n"
    b"Age: 0\r\n"
    b"Cache-Status: floor; constant answer\r\n"
)
KEEP = HEAD + b"\r\n" + BODY
CLOSE = HEAD + b"Connection: close\r\n\r\n" + BODY
# --hit: the stored object, its head without the per-answer Age and Cache-Status.
HIT_HEAD = HEAD.split(b"Age:")[0].replace(b"X-Cache: FLOOR", b"X-Cache: FLOOR-HIT")
LIFETIME = 3600
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class FloorConnection(asyncio.Protocol):
    """Parses requests with httptools and answers each with the constant."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.parser.should_keep_alive():
            self.transport.write(KEEP)
        else:
            self.transport.write(CLOSE)
            self.transport.close()


class FloorHitConnection(FloorConnection):
    """--hit: the least a cache does for a hit (the module's docstring)."""

    def __init__(self, store: dict[bytes, tuple[bytes, bytes, float]]) -> None:
        super().__init__()
        self.store = store
        self.url = b""
        self.host = b""
        self.flags = 0

    def on_message_begin(self) -> None:
        self.url = b""
        self.host = b""
        self.flags = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        flag = FLAGS_BY_NAME.get(lname)
        if flag is not None:
            self.flags |= flag
        elif lname == b"host":
            self.host = value

    def on_message_complete(self) -> None:
        stored = self.store.get(self.url)
        keep = self.parser.should_keep_alive()
        if stored is None:
            self.transport.write(NOT_FOUND)
        else:
            head, body, stored_at = stored
            age = int(time.time() - stored_at)
            tail = b"Age: %d\r\nCache-Status: floor; hit; ttl=%d\r\n" % (age, LIFETIME - age)
            end = b"\r\n" if keep else b"Connection: close\r\n\r\n"
            self.transport.write(head + tail + end + body)
        if not keep:
            self.transport.close()


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to the origin: a request out, its whole answer's bytes back."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.answer: asyncio.Future[bytes] | None = None
        self.received: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(b"".join(self.received))
        self.received = []

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("the origin closed the connection"))


class FloorProxyConnection(FloorConnection):
    """--proxy: the least a reverse proxy does for a miss (no cache, no header rules): each
    request's target sent to the origin on this connection's own kept-alive connection, the
    origin's answer written back as it came."""

    def __init__(self, origin: tuple[str, int]) -> None:
        super().__init__()
        self.origin = origin
        self.upstream: _Upstream | None = None
        self.url = b""

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self._forward(self.url))

    async def _forward(self, url: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.upstream is None or self.upstream.transport.is_closing():
            _, self.upstream = await loop.create_connection(_Upstream, *self.origin)
        up = self.upstream
        up.answer = loop.create_future()
        up.transport.write(b"GET " + url + b" HTTP/1.1\r\nHost: origin\r\n\r\n")
        try:
            self.transport.write(await up.answer)
        except ConnectionError:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one per worker
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


async def _serve(args: argparse.Namespace) -> None:
    from edge.base.guard import ConnectionGuard
    from edge.config.tls import CertFiles, TlsSettings
    from edge.protocol.tls import make_context
    from edge.protocol.tls_transport import TlsTransport

    loop = asyncio.get_running_loop()
    store = {b"/bench/obj/1024": (HIT_HEAD, BODY, time.time())}

    def connection() -> FloorConnection:
        if args.proxy:
            host, _, port = args.proxy.removeprefix("http://").rstrip("/").partition(":")
            return FloorProxyConnection((host, int(port or 80)))
        return FloorHitConnection(store) if args.hit else FloorConnection()

    servers = [await loop.create_server(connection, sock=_listener(args.port))]
    if args.tls_port:
        settings = TlsSettings(
            port=args.tls_port,
            certificates=(CertFiles(args.cert, args.key),),
            session_tickets=False,  # as the bench's edge and nginx
        )
        context = make_context(settings.certificates[0], settings, http2=False)
        guard = ConnectionGuard()

        def tls_connection() -> TlsTransport:
            return TlsTransport(context, lambda _: connection(), 10.0, guard)

        servers.append(await loop.create_server(tls_connection, sock=_listener(args.tls_port)))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="plain HTTP/1.1")
    parser.add_argument("--tls-port", type=int, default=0, help="HTTPS (HTTP/1.1) beside it")
    parser.add_argument("--cert", default="", help="certificate file (with --tls-port)")
    parser.add_argument("--key", default="", help="key file (with --tls-port)")
    parser.add_argument("--workers", type=int, default=2, help="processes (SO_REUSEPORT)")
    parser.add_argument("--hit", action="store_true", help="the least a cache does for a hit")
    parser.add_argument(
        "--proxy", default="", help="http://host:port: the least a proxy does for a miss"
    )
    args = parser.parse_args(argv)
    if args.tls_port and not (args.cert and args.key):
        parser.error("--tls-port needs --cert and --key")
    import uvloop

    children = []
    for _ in range(max(1, args.workers) - 1):
        pid = os.fork()
        if pid == 0:
            uvloop.run(_serve(args))
            os._exit(0)
        children.append(pid)
    try:
        uvloop.run(_serve(args))
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
