"""HTTP/1.1 to the origin: keep-alive connections on the worker's loop, parsed by httptools.

One request at a time per connection (no pipelining), the answer's head awaited, its body read
as it comes. A pool per origin keeps idle connections (the most recent first) and closes those
idle longer than `idle_seconds`. A name that resolves to several addresses (a Swarm service
with `dnsrr`) is tried address by address: one that refuses or does not answer within the
connect timeout is skipped for `down_seconds`, and the connection is made to the next.

Why not aiohttp's client: a miss is one small request on a pooled connection, and the general
client's layers (connector, request and response objects, payload writers, a stream reader)
were a fifth of a worker's time on a miss. This does what a reverse proxy needs and nothing
else; the bytes of header values pass through as the origin sent them (latin-1 both ways).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

# Body bytes held for a reader before the connection stops reading from the socket.
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
# A request body larger than this (about what socket buffers take at once) may wait on the
# origin's reading: its connection gives up on silence after the read timeout, not connect.
UPLOAD_BYTES = 1 << 16
DNS_SECONDS = 10.0  # how long an origin name's addresses are reused (as aiohttp's default)


class ConnectFailed(OSError):
    """No connection could be opened: nothing was sent."""


class BrokeOff(OSError):
    """The connection ended, or the origin sent garbage, before the answer was complete."""

    def __init__(self, detail: str, before_answer: bool) -> None:
        super().__init__(detail)
        self.before_answer = before_answer  # no byte of an answer had come back


class OriginResponse:
    """An answer's head, and its body to read once (`read` or `chunks`); `release` gives the
    connection back to its pool (or closes it when the body was not read to its end)."""

    def __init__(self, conn: OriginConnection, status: int, headers: CIMultiDict[str]) -> None:
        self._conn = conn
        self.status = status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    async def read(self) -> bytes:
        conn = self._conn  # what `chunks` yields, without an async generator
        parts = []
        while chunk := await conn.next_body():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (what is buffered, joined), until its end."""
        conn = self._conn
        while True:
            chunk = await conn.next_body()
            if not chunk:
                return
            yield chunk

    def release(self) -> None:
        self._conn.finished()


def _give_up_on_silence(sock: Any, seconds: float) -> None:
    """The kernel drops the connection when bytes it sent stay unacknowledged for `seconds`
    (TCP_USER_TIMEOUT, RFC 5482 section 2; Linux): a request written on a kept-alive connection
    to a machine that vanished (its power, its link, its kernel) then fails in that time, not
    after the read timeout, and a safe one is sent again on a new connection to the name's
    other addresses. A live origin's kernel acknowledges at once, however slow its answer."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None:
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))


class OriginConnection(asyncio.Protocol):
    """One connection to the origin, answering one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None  # the address connected to
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.last_data = 0.0
        self._head: asyncio.Future[OriginResponse] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._head_only = False
        self._complete = False
        self._error: BaseException | None = None
        self._got_bytes = False
        self._status = 0
        self._fields: CIMultiDict[str] = CIMultiDict()
        self._keep_alive = False
        self._until_close = False
        self._sock: Any = None  # a TCP socket (its user timeout is set: `_give_up_on_silence`)
        self._uploading = False  # a large body is on its way: the origin may read it slowly

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            self._sock = sock
            _give_up_on_silence(sock, self.pool.connect_timeout)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self.last_data = time.monotonic()
        if self._head is None and self._complete:
            self._fail(BrokeOff("the origin sent bytes nobody asked for", False))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokeOff(f"bad answer from the origin ({exc})", not self._status))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.closed = True
        self.pool.forget(self)
        if isinstance(exc, TimeoutError):  # its machine went silent: try the others first
            self.pool.went_silent(self.peer)
        if self._until_close and self._status and not self._complete:
            self._complete = True  # a body delimited by the connection's end (RFC 9112 6.3)
            self._wake()
            return
        if not self._complete or self._head is not None:
            before = not self._got_bytes
            self._fail(BrokeOff("the origin closed the connection", before))

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._fields = CIMultiDict()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (RFC 9110 section 15.2): the final one follows
        self._status = status
        self._keep_alive = self.parser.should_keep_alive()
        fields = self._fields
        self._until_close = (
            not self._head_only
            and status not in (204, 304)
            and "Content-Length" not in fields
            and "Transfer-Encoding" not in fields
        )
        head, self._head = self._head, None
        if self._head_only or status in (204, 304):
            self._message_done()
        if head is not None and not head.done():
            head.set_result(OriginResponse(self, status, fields))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._status:
            return  # the end of an interim answer
        self._message_done()

    # -- the request --------------------------------------------------------------------

    def _message_done(self) -> None:
        if self._complete:
            return
        self._complete = True
        self.reusable = self._keep_alive and not self._until_close
        if self._head_only:
            self.parser = httptools.HttpResponseParser(self)  # it expects a body otherwise
        self._wake()

    async def request(self, head: bytes, body: bytes | None, head_only: bool) -> OriginResponse:
        """Send one request and wait for the answer's head."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise BrokeOff("the origin closed the connection", True)
        loop = asyncio.get_running_loop()
        self._head = loop.create_future()
        self._head_only = head_only
        self._complete = False
        self._status = 0
        self._got_bytes = False
        self._until_close = False
        self.reusable = False
        self.last_data = time.monotonic()
        self._arm(loop)
        if body is not None and len(body) > UPLOAD_BYTES and self._sock is not None:
            # An origin may leave a large body unread for a while (its window closed, our
            # bytes unacknowledged); only the read timeout bounds that, as for an answer.
            self._uploading = True
            _give_up_on_silence(self._sock, self.pool.read_timeout)
        self.transport.write(head if body is None else head + body)
        return await self._head

    async def next_body(self) -> bytes:
        """The body bytes buffered so far (waiting for some), or b"" at its end."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        body = self._body
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def finished(self) -> None:
        """The response is done with: back to the pool if it was read to its end."""
        if self._complete and self.reusable and not self._body and not self.closed:
            self._body.clear()
            if self._uploading:
                self._uploading = False
                _give_up_on_silence(self._sock, self.pool.connect_timeout)
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self._disarm()
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    # -- the read timeout: time between bytes while an answer is awaited ----------------
    # One timer per connection, not per request: it stays armed across the answers of a
    # kept connection and, when it fires, looks at the time since the last byte (nothing
    # awaited: it ends; else it is armed again for the time left). A connection's end
    # cancels it.

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(self.pool.read_timeout, self._check_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        self._timer = None
        if self._complete and self._head is None:
            return
        if self._paused:  # the reader is behind, not the origin
            self.last_data = time.monotonic()
        quiet = time.monotonic() - self.last_data
        if quiet >= self.pool.read_timeout:
            self._fail(TimeoutError("the origin did not answer in time"))
            self.close()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.pool.read_timeout - quiet, self._check_timeout)

    # -- errors -------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(exc)
        self._wake()
        if not self.closed:
            self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Pool:
    """The connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        connect_timeout: float,
        read_timeout: float,
        idle_seconds: float,
        down_seconds: float,
        limit: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        https = scheme == "https"
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if https else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_seconds = idle_seconds
        self.down_seconds = down_seconds
        self.limit = limit
        self.idle: list[OriginConnection] = []
        self.open: set[OriginConnection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._addresses: list[Any] = []
        self._resolved_at = -DNS_SECONDS
        self._down: dict[Any, float] = {}  # an address skipped until then
        self._next = 0

    async def acquire(self, fresh: bool = False) -> OriginConnection:
        """An idle connection (unless `fresh`), or a new one once under the limit."""
        now = time.monotonic()
        idle = self.idle
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_seconds:
                return conn
            conn.close()
        while len(self.open) >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
            if self.idle and not fresh:
                return await self.acquire()
        return await self._connect()

    def put_back(self, conn: OriginConnection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_seconds, self._sweep)
        self._wake_one()

    def forget(self, conn: OriginConnection) -> None:
        self.open.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self._wake_one()

    def went_silent(self, address: Any) -> None:
        """A connection to `address` got no acknowledgement in time (the machine was lost):
        new connections try the name's other addresses first for `down_seconds`."""
        if len(self._addresses) > 1:
            self._down[address] = time.monotonic() + self.down_seconds

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close the connections idle for `idle_seconds` (before the origin closes them under
        a request in flight)."""
        self._sweeper = None
        now = time.monotonic()
        for conn in [c for c in self.idle if now - c.idle_since >= self.idle_seconds]:
            conn.close()
        if self.idle:
            oldest = min(c.idle_since for c in self.idle)
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_seconds - (now - oldest), self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.open):
            conn.close()

    # -- connecting, address by address ---------------------------------------------------

    async def _resolve(self) -> list[Any]:
        now = time.monotonic()
        if now - self._resolved_at >= DNS_SECONDS or not self._addresses:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ConnectFailed(f"cannot resolve {self.host}: {exc}") from exc
            self._addresses = [info[4] for info in infos]
            self._resolved_at = now
        return self._addresses

    async def _connect(self) -> OriginConnection:
        addresses = await self._resolve()
        now = time.monotonic()
        start = self._next % len(addresses)
        self._next += 1
        # Round robin over the addresses; those that failed lately are tried last.
        ordered = addresses[start:] + addresses[:start]
        ordered.sort(key=lambda a: self._down.get(a, 0.0) > now)
        loop = asyncio.get_running_loop()
        last: BaseException | None = None
        for address in ordered:
            conn = OriginConnection(self)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await loop.create_connection(
                        lambda conn=conn: conn,
                        host=address[0],
                        port=address[1],
                        ssl=self.ssl,
                        server_hostname=self.host if self.ssl is not None else None,
                    )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                last = exc
                if len(addresses) > 1:
                    self._down[address] = time.monotonic() + self.down_seconds
                continue
            self._down.pop(address, None)
            self.open.add(conn)
            return conn
        kind = "timed out" if isinstance(last, TimeoutError) else str(last)
        raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {kind}")
