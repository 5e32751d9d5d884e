"""The front door: an HTTP/1.1 protocol (httptools on uvloop) in front of the aiohttp app.

A plain fresh hit -- GET or HEAD, no body, no Range, no conditional, no Cache-Control or
Pragma in the request, a fresh entry (the request's Vary variant) in this node's memory --
is answered right here from a pre-serialized response head, with only `Age` and
`Cache-Status` written per request. Everything else (misses, revalidations, ranges,
purges, admin, request bodies) is relayed, byte for byte in order, to the aiohttp
application listening on a private Unix socket, which does the full RFC 9111 work. So the
hit path skips aiohttp's request objects while every behaviour stays the application's.

Per connection, requests are answered strictly in order (pipelining): while a relayed
request is in flight, later requests wait behind it, hits included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools
from multidict import CIMultiDict

from edge.access_log import FORMAT
from edge.config import QueryPolicy
from edge.deliver import client_headers
from edge.keys import cache_key, query_names, select_variant

if TYPE_CHECKING:
    from edge.app import ConnectionGuard
    from edge.entry import Entry
    from edge.proxy import EdgeNode

log = logging.getLogger("edge.front")

PEER_HEADER = b"x-edge-peer"  # the client's address, for the app behind the relay
# Request headers that make a request more than a plain hit: the aiohttp app handles them.
NOT_PLAIN = frozenset(
    {
        b"range",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"cache-control",
        b"pragma",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        PEER_HEADER,
    }
)
MAX_QUEUED = 32  # pipelined requests waiting behind a relayed one before reading pauses
HEAD_CACHE_SIZE = 4096
RELAY_CONNECT_TRIES = 20

ERROR_BODIES = {
    400: b"400: malformed request\n",
    408: b"408: request header timeout\n",
    414: b"414: request line too long\n",
    431: b"431: request header fields too large\n",
    501: b"501: protocol upgrades are not supported\n",
    502: b"502: edge worker unavailable\n",
    503: b"503: too many connections\n",
}
REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def error_bytes(status: int) -> bytes:
    body = ERROR_BODIES[status]
    return (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class _Request:
    __slots__ = (
        "body",
        "chunked",
        "complete",
        "headers",
        "keep_alive",
        "method",
        "plain",
        "started",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.version = "1.1"
        self.plain = True
        self.chunked = False
        self.keep_alive = True
        self.complete = False
        self.started = False  # its head was sent to the relay
        self.body: list[bytes] = []


class HeadCache:
    """Pre-serialized response heads of stored entries, rebuilt when the entry changes."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self.heads: dict[tuple[str, str], tuple[Entry, bytes]] = {}
        self.keys: dict[bytes, str | None] = {}

    def key_for(self, url: bytes) -> str | None:
        """The cache key of a request target, or None when a bypass rule names it."""
        try:
            return self.keys[url]
        except KeyError:
            pass
        target = url.decode("latin-1")
        path, _, query = target.partition("?")

        rule = self.node.cfg.rule_for(path, query_names(query))
        if rule is not None and rule.bypass:
            key = None
        else:
            key = cache_key(path, query, rule.query if rule else QueryPolicy())
        if len(self.keys) >= 65536:
            self.keys.clear()
        self.keys[url] = key
        return key

    def head_for(self, entry: Entry) -> bytes:
        slot = (entry.key, entry.variant_id)
        cached = self.heads.get(slot)
        if cached is not None and cached[0] is entry:
            return cached[1]
        node = self.node
        headers = client_headers(entry.headers, node.ident)
        lines = [f"HTTP/1.1 {entry.status} {_reason(entry.status)}"]
        for name, value in headers.items():
            if name.lower() == "via":
                continue
            lines.append(f"{name}: {value}")
        prior_via = headers.getall("Via", [])
        lines.append("Via: " + ", ".join([*prior_via, node.ident.via]))
        lines.append("X-Cache: HIT")
        lines.append(f"X-Served-By: {node.cfg.node}")
        if entry.status == 200 and "Accept-Ranges" not in headers:
            lines.append("Accept-Ranges: bytes")
        if entry.status != 204:  # RFC 9110 8.6: no Content-Length in a 204
            lines.append(f"Content-Length: {len(entry.body)}")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1", "replace")
        if len(self.heads) >= HEAD_CACHE_SIZE:
            self.heads.clear()
        self.heads[slot] = (entry, head)
        return head


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class FrontProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(
        self,
        node: EdgeNode,
        heads: HeadCache,
        relay_path: str,
        connections: set[FrontProtocol],
        limits: Limits,
        guard: ConnectionGuard,
        access_log: logging.Logger | None = None,
    ) -> None:
        self.node = node
        self.guard = guard
        self.access_log = access_log
        self.heads = heads
        self.relay_path = relay_path
        self.connections = connections
        self.limits = limits
        self.max_line, self.max_field = limits.max_line, limits.max_field
        self.header_timeout, self.idle_timeout = limits.header_timeout, limits.idle_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Request] = deque()
        self.current: _Request | None = None  # being parsed
        self.relay: _Relay | None = None
        self.relaying: _Request | None = None
        self.connecting = False
        self.peer = b""
        self.closing = False
        self.read_paused = False
        self.write_paused = False
        self.head_bytes = 0
        self.head_started = 0.0  # loop time the current request head began (0: none)
        self.last_activity = 0.0
        self.loop = asyncio.get_running_loop()

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if len(self.connections) >= self.limits.max_connections:
            self.guard.over_limit += 1
            self.transport.write(error_bytes(503))
            self.transport.close()
            return
        self.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0]).encode()
        self.last_activity = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_reading()
        self._advance()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.write_paused and len(self.queue) < MAX_QUEUED:
            self.read_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the response in progress."""
        self.closing = True
        if self.relaying is None and not self.queue and self.current is None:
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _fail(self, status: int) -> None:
        """Answer a protocol error and close (nothing is queued behind it)."""
        if self.transport is not None and not self.transport.is_closing():
            if self.relaying is None and not self.queue:
                self.transport.write(error_bytes(status))
            self.transport.close()

    # -- timeouts: header read (slowloris) and keep-alive idle, checked by `tick` ------------

    def tick(self, now: float) -> None:
        """Called about once a second for every connection (cheaper than a timer a request)."""
        if self.head_started and now - self.head_started > self.header_timeout:
            self.guard.header_timeouts += 1
            self._fail(408)  # a request head that never finished
        elif (
            self.relaying is None
            and not self.queue
            and self.current is None
            and now - self.last_activity > self.idle_timeout
        ):
            self._close()  # idle keep-alive connection

    # -- parsing (httptools callbacks) -----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(501)
            return
        except httptools.HttpParserError as exc:
            self.guard.bad_request(self.peer.decode() or None, exc)
            self._fail(400)
            return
        if self.current is not None and not self.current.started:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_line + self.limits.max_headers * self.max_field:
                self._fail(431)
        self._advance()

    def on_message_begin(self) -> None:
        self.current = _Request()
        self.head_bytes = 0
        self.head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url
        if len(self.current.url) > self.max_line:
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        assert req is not None
        if len(name) + len(value) > self.max_field or len(req.headers) >= self.limits.max_headers:
            raise httptools.HttpParserError("header too large")
        lname = name.lower()
        if lname in NOT_PLAIN:
            req.plain = False
            if lname == b"transfer-encoding":
                req.chunked = True
            if lname == PEER_HEADER:
                return  # never trusted from a client
        req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        req.method = self.parser.get_method()
        req.version = self.parser.get_http_version()
        req.keep_alive = self.parser.should_keep_alive()
        if req.method not in (b"GET", b"HEAD"):
            req.plain = False
        self.head_started = 0.0
        self.queue.append(req)
        if len(self.queue) >= MAX_QUEUED:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.current
        assert req is not None
        if req is self.relaying and self.relay is not None:
            self.relay.send_body(body, req.chunked)
        else:
            req.body.append(body)

    def on_message_complete(self) -> None:
        req = self.current
        assert req is not None
        req.complete = True
        self.current = None
        if req is self.relaying and self.relay is not None:
            self.relay.end_body(req.chunked)
        self.last_activity = self.loop.time()

    # -- answering, in order ---------------------------------------------------------------

    def _advance(self) -> None:
        transport = self.transport
        while self.queue and self.relaying is None and transport is not None:
            if transport.is_closing() or self.write_paused:
                return
            req = self.queue[0]
            if req.plain and req.complete and self._try_hit(req, transport):
                self.queue.popleft()
                if not req.keep_alive or self.closing:
                    self._close()
                    return
                continue
            self._start_relay(req)
            return
        if not self.queue and self.relaying is None:
            self._resume_reading()
            if self.closing and self.current is None:
                self._close()

    def _try_hit(self, req: _Request, transport: asyncio.Transport) -> bool:
        heads = self.heads
        key = heads.key_for(req.url)
        if key is None:
            return False
        node = self.node
        entries = node.tiers.memory_get(key)
        if not entries:
            return False
        entry = entries[0]
        if entry.vary:
            # Vary (RFC 9111 4.1): pick the variant for this request's header values.
            headers = CIMultiDict(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers
            )
            found = select_variant(entries, headers)
            if found is None:
                return False
            entry = found
        if entry.invalidated:
            return False
        meta = entry.meta
        if meta.get("nc"):
            return False
        # current_age and freshness as edge.policy computes them (RFC 9111 4.2.3), inline.
        now = time.time()
        age = meta.get("age0", 0.0) + max(0.0, now - entry.response_time)
        lifetime = meta.get("lifetime", 0.0)
        if age >= lifetime:
            return False
        head = heads.head_for(entry)
        tail = b"Age: %d\r\nCache-Status: %s; hit; ttl=%d\r\n" % (
            int(age),
            node.ident.node.encode(),
            int(lifetime - age),
        )
        if not req.keep_alive or self.closing:
            tail += b"Connection: close\r\n"
        elif req.version == "1.0":
            tail += b"Connection: keep-alive\r\n"
        if req.method == b"HEAD":
            transport.write(head + tail + b"\r\n")
            node.stats.record("HIT", 0)
        else:
            body = entry.body
            if len(body) <= 16384:
                transport.write(head + tail + b"\r\n" + body)
            else:
                transport.write(head + tail + b"\r\n")
                transport.write(body)
            node.stats.record("HIT", len(body))
        if self.access_log is not None:
            size = 0 if req.method == b"HEAD" else len(entry.body)
            self.access_log.info(
                FORMAT,
                self.peer.decode() or "-",
                req.method.decode(),
                req.url.decode("latin-1"),
                req.version,
                entry.status,
                size,
                "HIT",
                time.time() - now,
            )
        return True

    # -- the relay to the aiohttp application ----------------------------------------------

    def _start_relay(self, req: _Request) -> None:
        if self.relay is None or self.relay.closed:
            if not self.connecting:
                self.connecting = True
                self.loop.create_task(self._connect())
            return
        self.relaying = req
        req.started = True
        self.relay.start(req, self._head_of(req))
        for chunk in req.body:
            self.relay.send_body(chunk, req.chunked)
        req.body.clear()
        if req.complete:
            self.relay.end_body(req.chunked)

    def _head_of(self, req: _Request) -> bytes:
        parts = [req.method, b" ", req.url, b" HTTP/", req.version.encode(), b"\r\n"]
        for name, value in req.headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"X-Edge-Peer: ", self.peer, b"\r\n\r\n"]
        return b"".join(parts)

    async def _connect(self) -> None:
        # A burst of new connections can overflow the Unix socket's backlog for a moment
        # (EAGAIN): retry briefly before giving the client a 502.
        for attempt in range(RELAY_CONNECT_TRIES):
            try:
                _, relay = await self.loop.create_unix_connection(
                    lambda: _Relay(self), self.relay_path
                )
                break
            except OSError as exc:
                if attempt == RELAY_CONNECT_TRIES - 1 or (
                    self.transport is None or self.transport.is_closing()
                ):
                    log.warning("relay to the edge application failed: %s", exc)
                    self.connecting = False
                    self._fail(502)
                    return
                await asyncio.sleep(0.01 * (attempt + 1))
        self.connecting = False
        self.relay = relay
        self._advance()

    def relay_done(self, keep_alive: bool) -> None:
        """The relayed response was written in full."""
        self.last_activity = self.loop.time()
        req = self.relaying
        self.relaying = None
        if req is not None and self.queue and self.queue[0] is req:
            self.queue.popleft()
        if not keep_alive or (req is not None and not req.keep_alive) or self.closing:
            self._close()
            return
        if req is not None and not req.complete:
            # Answered before its body arrived (say a 413): the rest of the body has no
            # reader, so close rather than wait for it.
            self._close()
            return
        self._advance()

    def relay_lost(self) -> None:
        """The app closed the relay: finish this client's connection the same way."""
        self.relay = None
        if self.relaying is not None:
            self.relaying = None
            self._close()
        elif self.queue:
            self._advance()


class _Relay(asyncio.Protocol):
    """The private connection from a front connection to the aiohttp application."""

    def __init__(self, front: FrontProtocol) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser: httptools.HttpResponseParser | None = None
        self.head_only = False
        self.head_buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.relay_lost()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.front._pause_reading()

    def resume_writing(self) -> None:
        self.front._resume_reading()

    def start(self, req: _Request, head: bytes) -> None:
        assert self.transport is not None
        self.head_only = req.method == b"HEAD"
        self.head_buf = b""
        self.parser = None if self.head_only else httptools.HttpResponseParser(self)
        self.transport.write(head)

    def send_body(self, chunk: bytes, chunked: bool) -> None:
        if self.transport is None or not chunk:
            return
        if chunked:
            self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.transport.write(chunk)

    def end_body(self, chunked: bool) -> None:
        if chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")

    # -- the response, passed through as it comes --------------------------------------

    def data_received(self, data: bytes) -> None:
        front = self.front
        if front.transport is not None and not front.transport.is_closing():
            front.transport.write(data)
        if self.head_only:
            # HEAD: the response ends with its head (it has no body whatever it says).
            self.head_buf += data
            end = self.head_buf.find(b"\r\n\r\n")
            if end >= 0:
                keep = b"connection: close" not in self.head_buf[:end].lower()
                self.head_buf = b""
                front.relay_done(keep)
            return
        assert self.parser is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:
        assert self.parser is not None
        if 100 <= self.parser.get_status_code() < 200:
            return  # an interim response (100 Continue): the final one follows
        self.front.relay_done(self.parser.should_keep_alive())


async def tick_forever(connections: set[FrontProtocol], every: float = 1.0) -> None:
    """Enforce the header and idle timeouts of every front connection."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        for conn in list(connections):
            conn.tick(now)


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits of `limits:` in the config, as the front door applies them."""

    max_line: int
    max_field: int
    max_headers: int
    header_timeout: float
    idle_timeout: float
    max_connections: int


def make_limits(node: EdgeNode) -> Limits:
    cfg = node.cfg
    return Limits(
        max_line=cfg.max_line_size,
        max_field=cfg.max_field_size,
        max_headers=cfg.max_headers,
        header_timeout=cfg.header_timeout,
        idle_timeout=cfg.keepalive_timeout,
        max_connections=cfg.max_connections,
    )
