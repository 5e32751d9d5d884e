"""HTTP/1.1 to clients: one asyncio protocol per connection, httptools parsing each request once.

The connection parses, enforces the limits (`limits:` in the config) and timeouts, and hands
each complete request to the engine in order (pipelining: one answer at a time, later requests
wait behind it). The hit path comes first: a plain GET or HEAD with nothing queued before it is
looked up while its head is parsed (`Engine.fresh_hit`) and, when it is a fresh hit, answered
there, before any `Request` is made of it; a read that is a whole head already parsed once
(a client repeating itself) is not parsed again: its kept outcome is used. The engine
answers through the methods below (its `edge.http.answer.Responder`): a whole `Answer`, written
in HTTP/1.1's bytes (`wired`), or a head then a streamed body with flow
control (`write` waits while the client's socket is full). A whole answer whose body lies in a
memfd goes out on plain TCP with sendfile (`edge.protocol.file_out`), the connection answering
nothing else until it is out. Request bodies are read whole
before the engine sees the request (as nginx's `proxy_request_buffering on`): the origin never
holds half a request from a slow client, and a client sending its body slower than
`limits.body_min_rate` is answered 408. The bytes of the bodies being received are charged to
the worker's memory ledger (`bodies`, every connection together) as they arrive and given
back once the request is answered (or the connection gone); a body that does not fit is
answered 503 with Retry-After and the connection closed. So is a head that is still unfinished
after a read: its bytes are charged to `header_blocks` until it ends (one that does not fit:
503 with Retry-After, closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import httptools

from edge.base.memfile import MemFile
from edge.cache.respond import refusal
from edge.http.answer import Answer
from edge.http.fields import (
    ANSWERED_FROM_CACHE,
    F_BODY,
    F_CONNECTION,
    F_EXPECT,
    F_HOST,
    F_TE,
    F_UPGRADE,
    HIT_PATH,
    NEUTRAL,
    PLAIN,
    HeadFields,
)
from edge.http.request import (
    ParsedHead,
    Refused,
    Request,
    check_host,
    content_length,
    method_of,
    split_target,
    status_without_body,
    without_body,
)
from edge.protocol import file_out
from edge.protocol.file_out import FileOut
from edge.protocol.tls_transport import LINGER

if TYPE_CHECKING:
    from edge.protocol.handler import Handler

log = logging.getLogger("edge.protocol.http1")

MAX_QUEUED = 32  # pipelined requests parsed ahead before reading pauses
MAX_KEPT_HEAD = 4096  # bytes: a read longer than this is parsed every time
MAX_KEPT_HEADS = 1024  # heads kept per worker; past it they are all dropped
UNKEPT = F_BODY | F_TE | F_EXPECT | F_UPGRADE  # a body, or a head that asks for more than an answer


class Http1Connection(asyncio.BaseProtocol):
    """One client connection (plain TCP, or TLS through `edge.protocol.tls_transport`)."""

    def __init__(self, engine: Handler) -> None:
        self.engine = engine
        self.guard = engine.guard
        limits = engine.cfg
        self.max_line = limits.max_line_size
        self.max_field = limits.max_field_size
        self.max_headers = limits.max_headers
        self.max_body = limits.max_request_body
        self.header_timeout = limits.header_timeout
        self.idle_timeout = limits.keepalive_timeout
        self.body_timeout = limits.body_timeout
        self.body_min_rate = limits.body_min_rate
        self.connections = engine.guard.open
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.current: Request | None = None  # being parsed, from the end of its head
        # The head being parsed, before a Request is made of it (none for the hit path):
        self.parsing = False  # between a message's first byte and its end
        self.h_target = ""
        self.h_fields: list[tuple[bytes, bytes]] = []
        self.h_seen = HeadFields()  # what the field lines say (flags, special fields, Host)
        # Whole request heads already parsed, and their outcome (see `data_received`).
        self.heads: dict[bytes, ParsedHead] = engine.request_heads
        self.h_memo: ParsedHead | None = None  # this head's outcome, to keep if it came whole
        self.begun = 0  # messages begun in the current `data_received`
        self.answering: Request | None = None
        self.task: asyncio.Task[None] | None = None
        self.peer = ""
        self.closing = False
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.head_bytes = 0
        self.head_started = 0.0  # loop time the current head began (0: not reading a head)
        self.body_started = 0.0
        self.body_bytes = 0
        self.bodies = engine.ledger.account("bodies")
        self.body_kept = 0  # request body bytes charged to `bodies`, given back once answered
        self.header_blocks = engine.ledger.account("header_blocks")
        self.head_kept = 0  # the unfinished head's bytes charged to `header_blocks`
        self.last_activity = 0.0
        self.chunked_out = False  # the response being streamed uses chunked framing
        self.close_after = False
        self.broken = False  # parsing stopped (a bad request or an upgrade)
        self.lingering = False  # answered and half-closed: what comes is dropped (`_linger`)
        self.timed = engine.timed
        self.body_out: FileOut | None = None  # a body being sent from its file (`_send_file`)
        self.out_fd = -2  # the socket's fd for sendfile, -1 none (TLS), -2 not asked yet

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self.guard.accept(self, transport)
        if peer is None:  # limits.max_connections
            self.transport.write(self._error_bytes(503, "too many connections"))
            self.transport.close()
            return
        self.peer = peer
        now = self.loop.time()
        self.last_activity = now
        self.head_started = now  # a new connection must send a head in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.queue.clear()
        self._give_kept()
        if self.body_out is not None:
            self.guard.client_gone += 1
            self.body_out.cancel()  # ends the answer (`_file_sent`)
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionResetError("client gone"))
        if self.task is not None and not self.task.done():
            # Nothing can be sent any more; the engine's fetch goes on for other clients.
            self.guard.client_gone += 1

    def eof_received(self) -> bool:
        return False  # the transport closes (what `asyncio.Protocol` does)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.write_paused and len(self.queue) < MAX_QUEUED:
            self.read_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the answer in progress."""
        self.closing = True
        if self.answering is None and not self.queue and not self.parsing:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def gone(self) -> bool:
        return self.transport is None or self.transport.is_closing() or self.lingering

    def _error_bytes(self, status: int, message: str, head: bool = False) -> bytes:
        answer = refusal(status, message)
        out, body = wired(answer)
        out = with_tail(out, "Connection: close\r\n")
        return out if head else out + body  # RFC 9110 section 9.3.2: none after a HEAD

    def fail(self, status: int, message: str, head: bool = False) -> None:
        """Answer a protocol error and close; nothing queued behind it is answered."""
        self.broken = True
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.lingering:
            if self.answering is None:
                transport.write(self._error_bytes(status, message, head))
                if status in (413, 503) and self._linger(transport):
                    return
            transport.close()

    def _give_kept(self) -> None:
        """What the ledger counts for this connection (a head and bodies being received)
        is dropped."""
        if self.body_kept:
            self.bodies.give(self.body_kept)
            self.body_kept = 0
        if self.head_kept:
            self.header_blocks.give(self.head_kept)
            self.head_kept = 0

    def _linger(self, transport: asyncio.Transport) -> bool:
        """A body refused (413, 503) while the client may still be sending it: FIN after the
        answer, then what comes is read and dropped, `LINGER` seconds at most. Closed with
        its data unread, the kernel would answer RST, and the client could lose the answer."""
        try:
            if not transport.can_write_eof():
                return False
        except NotImplementedError:  # TLS: edge.protocol.tls_transport lingers on close itself
            return False
        self.lingering = True
        transport.write_eof()
        self.queue.clear()  # nothing more is answered: the bodies received are dropped now
        self.current = None
        self._give_kept()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self.loop.call_later(LINGER, self.close)
        return True

    # -- timeouts, checked by `tick` about once a second (cheaper than a timer a request) ---

    def tick(self, now: float) -> None:
        guard = self.guard
        if self.head_started and now - self.head_started > self.header_timeout:
            guard.header_timeouts += 1
            if self.parsing:
                self.fail(408, "request head too slow")
            else:
                self.close()  # connected, sent nothing
        elif self.body_started and self.body_timeout > 0:
            # Apache's mod_reqtimeout: a grace period, extended by each body_min_rate bytes.
            allowed = self.body_timeout + (
                self.body_bytes / self.body_min_rate if self.body_min_rate > 0 else 1e9
            )
            if now - self.body_started > allowed:
                guard.body_timeouts += 1
                self.fail(408, "request body too slow")
        elif (
            self.answering is None
            and not self.queue
            and not self.parsing
            and now - self.last_activity > self.idle_timeout
        ):
            self.close()  # idle keep-alive connection

    # -- parsing (httptools callbacks) --------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        from_start = not self.parsing  # this read begins a message (or is between two)
        if from_start:
            # The same bytes parse the same way: a read that is one whole request head
            # already parsed (a keep-alive GET or HEAD without a body, as a client repeats
            # it) is answered from its kept outcome, and httptools is left where it
            # stands, between two messages.
            head = self.heads.get(data)
            if head is not None:
                self.head_started = 0.0
                method, target, host, flags, special, fields, version = head
                self._head_parsed(method, target, host, flags, special, fields, True, version)
                self.on_message_complete()
                if self.queue:
                    self._advance()
                return
        self.begun = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT, or a request with Upgrade: answered (405 / 501), then the connection
            # closes; nothing after it is parsed.
            req = self.current or (self.queue[-1] if self.queue else None)
            if req is not None:
                req.upgrade = req.complete = True
                if req not in self.queue:
                    self.queue.append(req)
            self.current = None
            self.parsing = False
            self.broken = True
        except httptools.HttpParserError as exc:
            refused = exc.__context__ if isinstance(exc.__context__, Refused) else None
            if refused is None and isinstance(exc, httptools.HttpParserInvalidMethodError):
                refused = _method_refusal(data if from_start else b"")
            if refused is None or refused.status in (400, 414, 431):
                self.guard.bad_request(self.peer or None, refused or exc)
            if refused is not None:
                # Refused by a callback: the request line was read, its method is known.
                after_head = exc.__context__ is refused and self.parser.get_method() == b"HEAD"
                self.fail(refused.status, refused.message, after_head)
            else:
                self.fail(400, "malformed request")
            return
        if self.parsing and self.head_started:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_line + self.max_headers * self.max_field:
                self.fail(431, "request header fields too large")
                return
            # An unfinished head is kept across reads: charged to the ledger's header_blocks
            # (every connection's, limits.kept) until it ends.
            grow = self.head_bytes - self.head_kept
            if grow > 0 and not self.header_blocks.take(grow):
                self.fail(503, "too many request heads being received; retry later")
                return
            if grow < 0:  # a new head began in this read
                self.header_blocks.give(-grow)
            self.head_kept = self.head_bytes
        elif self.head_kept:
            self.header_blocks.give(self.head_kept)
            self.head_kept = 0
        memo = self.h_memo
        if memo is not None:
            self.h_memo = None
            if from_start and self.begun == 1 and not self.parsing and len(data) <= MAX_KEPT_HEAD:
                # `data` was that one message, whole, from its first byte to its last:
                # begun in this read, with nothing before it and nothing after it.
                heads = self.heads
                if len(heads) >= MAX_KEPT_HEADS:
                    heads.clear()
                heads[data] = memo
        if self.queue:
            self._advance()

    request_class = Request  # edge.protocol.tls.TlsHttp1Connection: TlsRequest
    # Fields every answer of this connection carries, serialized (over TLS:
    # `TlsSettings.answer_fields`); `_tail_for` adds them.
    extra_fields = ""

    def on_message_begin(self) -> None:
        self.parsing = True
        self.begun += 1
        self.h_memo = None
        self.h_target = ""
        self.h_fields = []
        self.h_seen = HeadFields()
        self.head_bytes = 0
        self.head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.h_target += url.decode("latin-1")
        if len(self.h_target) > self.max_line:
            raise Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self.h_fields
        if len(name) + len(value) > self.max_field or len(fields) >= self.max_headers:
            raise Refused(431, "request header fields too large")
        self.h_seen.add(name.lower(), value)
        fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        # The request check every door makes, in the same order (edge.http.request).
        method = method_of(parser.get_method())
        seen = self.h_seen
        flags = seen.flags
        if flags & F_HOST:
            check_host(seen.host)
        keep_alive = parser.should_keep_alive()
        # Without a Connection field, a connection llhttp keeps alive is HTTP/1.1's (it
        # keeps 1.0, 0.9 and 2.0 open only with "Connection: keep-alive"); asking httptools
        # the version formats a string.
        version = "1.1" if keep_alive and not flags & F_CONNECTION else parser.get_http_version()
        self.head_started = 0.0
        target = self.h_target
        fields = self.h_fields
        if keep_alive and not flags & UNKEPT and (method == "GET" or method == "HEAD"):
            self.h_memo = (method, target, seen.host, flags, seen.special, tuple(fields), version)
        self._head_parsed(
            method, target, seen.host, flags, seen.special, fields, keep_alive, version
        )

    def _head_parsed(
        self,
        method: str,
        target: str,
        host: str,
        flags: int,
        special: tuple[tuple[bytes, bytes], ...],
        fields: Sequence[tuple[bytes, bytes]],
        keep_alive: bool,
        version: str,
    ) -> None:
        """A request's head, parsed: a fresh hit answered at once, or the request made and
        queued (`current` until its body is read)."""
        tried = False
        if (
            (flags | ANSWERED_FROM_CACHE | NEUTRAL) == HIT_PATH
            and target[:1] == "/"
            and (method == "GET" or method == "HEAD")
            and self.answering is None
            and not self.queue
            and not self.timed
            and not self.write_paused
            and not self.closing
        ):
            transport = self.transport
            if transport is not None and not transport.is_closing():
                answer = self.engine.fresh_hit(method, target, host, flags, special, fields)
                if answer is not None:
                    self._write_built(transport, keep_alive, version, method, answer)
                    if self.body_out is not None:
                        self._answer_after_body(keep_alive)
                        return
                    self._done(keep_alive)
                    return
                # Nothing queued before it: `_advance` serves it before anything else runs.
                tried = True
        req = self.request_class(self.peer)
        req.hit_tried = tried
        req.method = method
        req.target = target
        req.version = version
        req.keep_alive = keep_alive
        req.raw_headers = fields
        req.flags = flags
        req.special = special
        req.host = host
        self.current = req
        if self.timed:
            req.started = time.monotonic()
        if (flags | NEUTRAL) != PLAIN or target[:1] != "/":
            self._check_head(req)
        self.queue.append(req)
        if len(self.queue) >= MAX_QUEUED:
            self._pause_reading()

    def _check_head(self, req: Request) -> None:
        """What a plain request (a path and a Host, nothing else the edge looks at) needs
        no check of: framing, Expect, the request-target's form."""
        flags = req.flags
        if not flags & F_HOST and req.version != "1.0":
            # RFC 9112 section 3.2: "MUST respond with a 400 ... to any HTTP/1.1 request
            # message that lacks a Host header field".
            raise Refused(400, "an HTTP/1.1 request needs a Host header field")
        if flags & F_TE and req.version == "1.0":
            # RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing; nothing ambiguous goes on.
            raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
        if req.target[:1] != "/":
            authority, req.target = split_target(req.method, req.target)
            if authority is not None:
                # RFC 9112 section 3.2.2: the absolute-form's authority replaces Host.
                check_host(authority)
                req.host = authority
        if flags & F_BODY:
            length = req.headers.get("Content-Length")
            if length is not None and content_length(length) > self.max_body:
                raise Refused(413, "request body too large")
            self.body_started = self.loop.time()
            self.body_bytes = 0
            expect = req.headers.get("Expect", "") if flags & F_EXPECT else ""
            if "100-continue" in expect.lower() and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        req = self.current
        assert req is not None
        self.body_bytes += len(body)
        if len(req.body) + len(body) > self.max_body:
            raise Refused(413, "request body too large")
        if not self.bodies.take(len(body)):
            # limits.kept.bodies: the bodies every connection of the worker is receiving.
            raise Refused(503, "too many request bodies being received; retry later")
        self.body_kept += len(body)
        req.body += body

    def on_message_complete(self) -> None:
        req = self.current
        if req is not None:  # None: answered at once by the hit path
            req.complete = True
            self.current = None
        self.parsing = False
        self.body_started = 0.0

    # -- answering, in order ------------------------------------------------------------

    def _advance(self) -> None:
        while self.queue and self.answering is None:
            if self.gone or self.write_paused:
                return
            req = self.queue[0]
            if not req.complete:
                return  # its body is still arriving
            if req.upgrade:
                self.queue.clear()
                if req.method == "CONNECT":
                    run = self.engine.serve(req, self)
                    assert run is None  # answered at once (flow.recv: Reject)
                else:
                    self.fail(501, "protocol upgrades are not supported")
                self.close()
                return
            self.answering = req
            run = self.engine.serve(req, self)
            if run is not None:
                if not req.started:
                    req.started = time.monotonic()  # an answer that waits: it is timed
                self.task = self.loop.create_task(self._run(req, run))
                return
            if self.body_out is not None:
                return  # its body is still going out from its file: `_file_sent` goes on
            self._finished(req)
        if not self.queue and self.answering is None:
            self._resume_reading()
            if self.closing and not self.parsing:
                self.close()

    def _answer_after_body(self, keep_alive: bool) -> None:
        """A hit answered at once whose body is still going out from its file: the
        connection is answering it (what is pipelined behind waits) until it is out; then
        `_finished` reads no more of it than whether the connection stays open."""
        req = self.request_class(self.peer)
        req.keep_alive = keep_alive
        self.answering = req

    def _file_sent(self, ok: bool) -> None:
        """The body going out from its file is out (`ok`), or broke off (the client is gone:
        closed). The answer is over once the engine's coroutine is too (`_run`)."""
        self.body_out = None
        if not ok:
            self.close()
        req = self.answering
        if req is not None and self.task is None:
            self._finished(req)
            self._advance()

    async def _run(self, req: Request, run: Coroutine[Any, Any, None]) -> None:
        try:
            await run
        except (ConnectionError, asyncio.CancelledError):
            self.close()
        except Exception:
            log.exception("answering %s %s failed", req.method, req.target)
            if self.chunked_out or self.answering is None:
                self.close()
            else:
                self.fail(500, "internal error")
        finally:
            self.task = None
        if self.body_out is not None:
            return  # its body is still going out from its file: `_file_sent` goes on
        self._finished(req)
        self._advance()

    def _finished(self, req: Request) -> None:
        self.answering = None
        if req.body and self.body_kept:  # answered: its body is no longer kept
            given = min(len(req.body), self.body_kept)
            self.bodies.give(given)
            self.body_kept -= given
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        self._done(req.keep_alive)

    def _done(self, keep_alive: bool) -> None:
        """An answer went out: the connection idles, or closes when that answer said so."""
        self.last_activity = self.loop.time()
        if self.close_after or not keep_alive or self.closing:
            self.queue.clear()
            self.close()

    # -- the engine's side: writing answers ---------------------------------------------

    def _tail(self, req: Request, close: bool) -> str:
        return self._tail_for(req.keep_alive, req.version, close)

    def _tail_for(self, keep_alive: bool, version: str, close: bool) -> str:
        """The connection's fields and Connection line an answer ends its head with."""
        if close or not keep_alive or self.closing:
            self.close_after = True
            return self.extra_fields + "Connection: close\r\n"
        if version == "1.0":
            return self.extra_fields + "Connection: keep-alive\r\n"
        return self.extra_fields

    def send(self, req: Request, answer: Answer) -> None:
        """A whole answer."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._write_built(transport, req.keep_alive, req.version, req.method, answer)

    def _write_built(
        self,
        transport: asyncio.Transport,
        keep_alive: bool,
        version: str,
        method: str,
        answer: Answer,
    ) -> None:
        head, body = answer.wire.get(H1) or wired(answer)
        tail = self._tail_for(keep_alive, version, answer.close)
        if tail:  # HTTP/1.1 keep-alive without extra fields, the usual hit, adds nothing
            head = with_tail(head, tail)
        span = answer.file
        if (
            span is not None
            and len(body) >= file_out.MIN_BYTES
            and method != "HEAD"
            and self._socket_fd() >= 0
        ):
            self._send_file(transport, head, span[0], span[1], len(body))
            return
        _write_whole(transport, head, b"" if method == "HEAD" else body)

    def _socket_fd(self) -> int:
        if self.out_fd == -2 and self.transport is not None:
            self.out_fd = file_out.socket_fd(self.transport)
        return self.out_fd

    def _send_file(
        self, transport: asyncio.Transport, head: bytes, file: MemFile, offset: int, count: int
    ) -> None:
        """The head, then `count` bytes of `file` from `offset`, with sendfile: at once as far
        as the socket takes them; the rest as it drains (`body_out`, then `_file_sent`)."""
        out = FileOut(self.loop, transport, self.out_fd, head, file, offset, count, self._file_sent)
        if not out.start():
            self.body_out = out

    def start(self, req: Request, answer: Answer) -> None:
        """The head of an answer whose body follows through `write` and `end`."""
        if self.gone:
            raise ConnectionResetError("client gone")
        assert self.transport is not None
        tail = self._tail(req, answer.close)
        self.chunked_out = False
        no_body = without_body(req.method, answer.status)
        if answer.length is None and not no_body:
            if req.version == "1.0":
                # the end of the body is the end of the connection
                tail = self.extra_fields + "Connection: close\r\n"
                self.close_after = True
            else:
                tail += "Transfer-Encoding: chunked\r\n"
                self.chunked_out = True
        head = wired(answer)[0]
        self.transport.write(with_tail(head, tail) if tail else head)
        if self.timed:
            req.first_byte = time.monotonic()

    def interim(self, status: int, fields: list[tuple[str, str]]) -> None:
        """A 1xx answer before the final one (103 Early Hints); HTTP/1.1 clients only."""
        if self.transport is not None and not self.gone and self.answering is not None:
            head = status_line(status) + field_lines(fields) + b"\r\n"
            self.transport.write(head)

    async def write(self, data: bytes | memoryview) -> None:
        """A piece of the body; waits while the client's socket buffer is full."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client gone")
        if self.chunked_out:
            if not data:
                return
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            transport.write(data)
        if self.write_paused:
            if self.drained is None:
                self.drained = self.loop.create_future()
            await self.drained

    def end(self) -> None:
        if self.chunked_out and self.transport is not None and not self.gone:
            self.transport.write(b"0\r\n\r\n")
        self.chunked_out = False

    def abort(self) -> None:
        """The body broke off: close, so the client sees it short (never a complete-looking
        wrong answer)."""
        self.close_after = True
        if self.transport is not None:
            self.transport.abort()


# -- an answer in HTTP/1.1's bytes -------------------------------------------------------

H1 = "http/1.1"  # the key of this protocol's serializations on an Answer (`Answer.wire`)


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {reason(status)}\r\n".encode("latin-1")


def field_lines(fields: Sequence[tuple[str, str]]) -> bytes:
    return "".join([f"{k}: {v}\r\n" for k, v in fields]).encode("latin-1", "replace")


def wired(answer: Answer) -> tuple[bytes, bytes | memoryview]:
    """The answer as HTTP/1.1 writes it, but for what the connection adds (`_tail_for`):
    its head up to the blank line (the status line, the fields, Content-Length, the stamp)
    and its body, neither for a status without content (RFC 9110 sections 6.4.1 and 8.6).
    Made once per answer (`Answer.wire`: a repeated hit writes what is there), the head
    before the stamp once per kept answer (`Answer.fixed`)."""
    out = answer.wire.get(H1)
    if out is None:
        status = answer.status
        no_content = status_without_body(status)
        fixed = answer.fixed.get(H1)
        if fixed is None:
            fixed = status_line(status) + field_lines(answer.fields)
            if answer.length is not None and not no_content:
                fixed += b"Content-Length: %d\r\n" % answer.length
            answer.fixed[H1] = fixed
        head = fixed + field_lines(answer.stamp) + b"\r\n"
        out = answer.wire[H1] = (head, b"" if no_content else answer.body)
    return out


def with_tail(head: bytes, tail: str) -> bytes:
    """A head (`wired`) with the connection's lines (`tail`) before its blank line."""
    return head[:-2] + tail.encode("latin-1", "replace") + b"\r\n"


def _method_refusal(data: bytes) -> Refused:
    """llhttp refused the method it read: the same refusal as every door gives it (400 not a
    token, 501 unknown: `edge.http.request.method_of`), when the read began with it."""
    raw = data.lstrip(b"\r\n").split(b" ", 1)[0]
    try:
        method_of(raw)
    except Refused as refused:
        return refused
    return Refused(400, "malformed request line")


def _write_whole(transport: asyncio.Transport, head: bytes, body: bytes | memoryview) -> None:
    """Head and body in one write when small (one segment), else two (no copy of a big body)."""
    if not body:
        transport.write(head)
    elif len(body) <= 16384:
        transport.write(head + body)
    else:
        transport.write(head)
        transport.write(body)


async def tick_forever(connections: set[Any], every: float = 1.0) -> None:
    """Enforce the header, body and idle timeouts of every connection."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        for conn in list(connections):
            conn.tick(now)
