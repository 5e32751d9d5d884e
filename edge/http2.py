"""HTTP/2 to clients (RFC 9113), over TLS after ALPN chose "h2": one protocol per connection,
the `h2` library (python-hyper) for framing, HPACK and the stream state machine.

Each stream is a `Stream`: the engine's responder, with the same methods as
`edge.http1.Http1Connection` (`send`, `start` / `write` / `end`, `abort`, `interim`,
`write_raw`), so `Engine.serve` answers both protocols with the same headers. A request is
built from its HEADERS (`:authority` as Host) and its DATA, buffered whole as on HTTP/1.1.

Flow control both ways: a response body goes out as the client's stream and connection
windows allow (`write` waits; `send` leaves the rest pending, sent as WINDOW_UPDATEs come);
request bodies are acknowledged as they arrive, each up to `limits.max_request_body`.

Protections (each has a test in tests/edge/test_http2_abuse.py that drives it with raw frames):
- SETTINGS_MAX_CONCURRENT_STREAMS and SETTINGS_MAX_HEADER_LIST_SIZE (`tls.http2.*`); streams
  whose answer is still being computed count against the limit even after the client reset
  them, so resetting does not let a client run more work than the limit (rapid reset,
  CVE-2023-44487); more than `max_resets` client resets in 10 s: GOAWAY ENHANCE_YOUR_CALM.
- CONTINUATION floods (CVE-2024-27316 and kin): a header block is bounded by h2 (64 frames
  of at most 16 KB) and by SETTINGS_MAX_HEADER_LIST_SIZE; past that, GOAWAY.
- SETTINGS, PING and unknown-frame floods: more than `max_control_frames` in 10 s: GOAWAY
  ENHANCE_YOUR_CALM; and a client that does not read what they make us write (the socket's
  buffer over `OUTBUF_LIMIT`) is closed.
- Zero-window stalls: a stream whose window stays 0 (or a connection whose window or socket
  stays full) longer than `stall_timeout` is reset (or closed); a stalled stream holds at
  most a reference to its body, never a copy.
- Slow request heads and bodies, idle connections: `limits.header_timeout` (the preface),
  `limits.body_timeout` with `body_min_rate`, `limits.keepalive_timeout`.
Graceful stop (`shutdown`, from `EdgeServer.stop`): GOAWAY NO_ERROR naming the last stream
accepted; the streams in flight finish, then the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from edge.http1 import _FLAGS, F_BODY, F_HOST, METHODS
from edge.respond import Reply
from edge.tls import TlsRequest
from edge.tls_config import Http2Settings

if TYPE_CHECKING:
    from edge.engine import Engine
    from edge.http1 import Http1Connection, Request

log = logging.getLogger("edge.http2")

# Connection-specific fields HTTP/2 forbids (RFC 9113 section 8.2.2); never sent.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
WINDOW_SECONDS = 10.0  # the period the reset and control-frame budgets count over
OUTBUF_LIMIT = 4 << 20  # bytes queued to a client that is not reading: close it
MAX_FRAME = 16384


class Stream:
    """One request and its answer: the engine's responder for this stream."""

    __slots__ = (
        "body_started",
        "conn",
        "done",
        "end_after",
        "ended",
        "id",
        "pending",
        "req",
        "reset",
        "running",
        "stalled_since",
        "started",
        "waiter",
    )

    def __init__(self, conn: Http2Connection, stream_id: int, req: Request) -> None:
        self.conn = conn
        self.id = stream_id
        self.req = req
        self.started = False  # the final head was sent
        self.ended = False  # END_STREAM sent (or scheduled after `pending`)
        self.end_after = False
        self.reset = False  # reset by either side: nothing more is sent
        self.running = False  # the engine is still computing the answer
        self.done = False  # the request arrived whole (END_STREAM)
        self.pending: memoryview | None = None  # body bytes waiting for window
        self.waiter: asyncio.Future[None] | None = None
        self.stalled_since = 0.0
        self.body_started = 0.0

    # -- the engine's side (the same methods as Http1Connection) -------------------------

    def send(self, req: Request, reply: Reply) -> None:
        if self.reset or self.started:
            return
        no_body = req.method == "HEAD" or not reply.body or reply.status in (204, 304)
        self.conn.send_head(self, reply.status, _fields(reply.fields), reply.length, no_body)
        if not no_body:
            self.conn.send_body(self, memoryview(reply.body), end=True)

    def write_raw(self, req: Request, head: bytes, body: bytes | memoryview) -> None:
        """The engine's hit fast path hands a pre-serialized HTTP/1.1 head: its fields are
        taken as they are (the same X-Cache, Age, Cache-Status as on HTTP/1.1)."""
        if self.reset or self.started:
            return
        status, fields = h1_head_fields(head)
        no_body = req.method == "HEAD" or not body
        self.conn.send_head(self, status, fields, None, no_body)
        if not no_body:
            self.conn.send_body(self, memoryview(body), end=True)

    def start(self, req: Request, reply: Reply) -> None:
        if self.reset:
            raise ConnectionResetError("stream reset")
        no_body = req.method == "HEAD" or reply.status in (204, 304)
        self.conn.send_head(self, reply.status, _fields(reply.fields), reply.length, no_body)

    async def write(self, data: bytes | memoryview) -> None:
        if self.reset:
            raise ConnectionResetError("stream reset")
        if self.ended or not data:
            return
        self.conn.send_body(self, memoryview(data), end=False)
        if self.pending is not None or self.conn.write_paused:
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def end(self) -> None:
        if self.reset or self.ended:
            return
        self.conn.send_body(self, memoryview(b""), end=True)

    def abort(self) -> None:
        """The body broke off: reset the stream, so the client sees it incomplete."""
        self.conn.reset_stream(self, ErrorCodes.INTERNAL_ERROR)

    def interim(self, status: int, fields: list[tuple[str, str]]) -> None:
        """A 1xx answer before the final one (103 Early Hints)."""
        if not self.reset and not self.started:
            headers = [(b":status", str(status).encode()), *_fields(fields)]
            self.conn.h2_call(self.conn.h2.send_headers, self.id, headers)
            self.conn.flush()


def _fields(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in fields:
        name = k.lower().encode("latin-1")
        if name not in HOP_BY_HOP:
            out.append((name, v.encode("latin-1", "replace")))
    return out


def h1_head_fields(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Status and fields of a serialized HTTP/1.1 head (`edge.http1.serialize_head`)."""
    lines = head.split(b"\r\n")
    status = int(lines[0][9:12])
    out = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name not in HOP_BY_HOP:
            out.append((name, value.strip()))
    return status, out


class Budget:
    """At most `limit` events per WINDOW_SECONDS."""

    __slots__ = ("count", "limit", "since")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.since = 0.0

    def spend(self, now: float, n: int = 1) -> bool:
        """False when over the budget."""
        if now - self.since > WINDOW_SECONDS:
            self.since = now
            self.count = 0
        self.count += n
        return self.count <= self.limit


class Http2Connection(asyncio.Protocol):
    """One client connection speaking HTTP/2."""

    def __init__(self, engine: Engine, settings: Http2Settings, hsts: str | None) -> None:
        self.engine = engine
        self.guard = engine.guard
        self.settings = settings
        cfg = engine.cfg
        self.max_body = cfg.max_request_body
        self.body_budget = max(4 * cfg.max_request_body, 16 << 20)
        self.header_timeout = cfg.header_timeout
        self.idle_timeout = cfg.keepalive_timeout
        self.body_timeout = cfg.body_timeout
        self.body_min_rate = cfg.body_min_rate
        self.hsts = [(b"strict-transport-security", hsts.encode())] if hsts else []
        self.loop = asyncio.get_running_loop()
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=True,
            # Its normalizing only joins split cookie fields: `_request` does that.
            normalize_inbound_headers=False,
            # Our fields are lower-cased and stripped of hop-by-hop ones here.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
            },
        )
        # The SETTINGS above are h2's values from the start (not a change waiting for the
        # client's ACK), so the HPACK decoder gets its bound here.
        self.h2.decoder.max_header_list_size = settings.max_header_list_size
        self.max_headers = cfg.max_headers
        self.max_field = cfg.max_field_size
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.running = 0  # streams whose answer the engine is still computing
        self.peer = ""
        self.closing = False  # GOAWAY sent: no new streams
        self.last_accepted = 0
        self.write_paused = False
        self.paused_since = 0.0
        self.conn_stalled_since = 0.0
        self.last_activity = 0.0
        self.preface_deadline = 0.0
        self.body_buffered = 0
        self.resets = Budget(settings.max_resets)
        self.control = Budget(settings.max_control_frames)
        self.counters = engine.guard
        self.gone = False
        self.in_batch = False  # in data_received: writes wait for the end of the batch

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        guard = self.guard
        if len(guard.open) >= guard.max_connections:
            guard.over_limit += 1
            self.h2.initiate_connection()
            self.h2.close_connection(ErrorCodes.REFUSED_STREAM, b"too many connections")
            self.flush()
            self.transport.close()
            return
        guard.accepted += 1
        guard.open.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
        now = self.loop.time()
        self.last_activity = now
        self.preface_deadline = now + self.header_timeout
        self.h2.initiate_connection()
        # The connection window, for request bodies of several streams at once.
        self.h2.increment_flow_control_window(self.settings.initial_window)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.guard.open.discard(self)
        for stream in list(self.streams.values()):
            if stream.running:
                self.guard.client_gone += 1
            self._mark_reset(stream)
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.paused_since = self.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.paused_since = 0.0
        self._pump_all()

    def flush(self, now: bool = False) -> None:
        """Write what h2 has queued. Inside `data_received` this waits for the end of the
        batch: one TLS record and one send for all the answers the batch produced (a write
        per answer was most of the time h2 spent)."""
        if self.in_batch and not now:
            return
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush(now=True)  # what the batch produced (a GOAWAY) goes out first
            self.transport.close()

    def h2_call(self, fn: Any, *args: Any, **kw: Any) -> bool:
        """Call into h2 for a stream that may have been closed meanwhile."""
        try:
            fn(*args, **kw)
            return True
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            log.debug("h2: %s", exc)
            return False

    def goaway(self, code: ErrorCodes, reason: str, abort: bool = False) -> None:
        """A connection error: GOAWAY and close (nothing more is answered). `abort`: the
        client reads nothing, so nothing queued can be flushed: drop the connection."""
        if self.gone:
            return
        if code == ErrorCodes.ENHANCE_YOUR_CALM:
            self.guard.bad_request(self.peer or None, ValueError(f"h2: {reason}"))
        self.h2_call(self.h2.close_connection, code, reason.encode())
        self.flush(now=True)
        self.closing = True
        for stream in list(self.streams.values()):
            self._mark_reset(stream)
        if abort and self.transport is not None:
            self.transport.abort()
        else:
            self.close()

    def shutdown(self) -> None:
        """Graceful stop: GOAWAY NO_ERROR with the last stream accepted; streams in flight
        finish. The frame is written directly (h2 would refuse to send anything after its
        own GOAWAY), then the connection closes once no answer is in progress."""
        if self.closing or self.gone:
            self.close()
            return
        self.closing = True
        self.flush(now=True)
        frame = GoAwayFrame(stream_id=0, last_stream_id=self.last_accepted, error_code=0)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame.serialize())
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.closing and not self.streams:
            self.close()

    # -- timeouts (edge.http1.tick_forever calls this about once a second) -------------------

    def tick(self, now: float) -> None:
        if self.gone:
            return
        if self.preface_deadline and now > self.preface_deadline:
            self.guard.header_timeouts += 1
            self.close()  # no preface, or no first request, in time
            return
        stall = self.settings.stall_timeout
        if self.paused_since and now - self.paused_since > stall:
            # The socket stayed full too long: the client reads nothing.
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "not reading", abort=True)
            return
        if self.conn_stalled_since and now - self.conn_stalled_since > stall:
            self.goaway(ErrorCodes.FLOW_CONTROL_ERROR, "connection window stayed at 0")
            return
        for stream in list(self.streams.values()):
            if stream.stalled_since and now - stream.stalled_since > stall:
                self.reset_stream(stream, ErrorCodes.CANCEL)  # its window stayed at 0
            elif stream.body_started and not stream.done and self.body_timeout > 0:
                allowed = self.body_timeout + (
                    len(stream.req.body) / self.body_min_rate if self.body_min_rate > 0 else 1e9
                )
                if now - stream.body_started > allowed:
                    self.guard.body_timeouts += 1
                    self._body_done(stream)
                    self._answer_error(stream, 408, "request body too slow")
        if not self.streams and now - self.last_activity > self.idle_timeout:
            self.shutdown()

    # -- receiving ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        self.in_batch = True
        try:
            self._received(data)
        finally:
            self.in_batch = False
        self.flush()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > OUTBUF_LIMIT:
            # The client makes us write (PING acks, SETTINGS acks, answers) and does not read.
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "not reading what it asks for", abort=True)

    def _received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued the GOAWAY (PROTOCOL_ERROR, or ENHANCE_YOUR_CALM for an
            # oversized header block / CONTINUATION flood).
            self.guard.bad_request(self.peer or None, ValueError(f"h2: {exc}"))
            self.flush(now=True)
            self.closing = True
            for stream in list(self.streams.values()):
                self._mark_reset(stream)
            self.close()
            return
        now = self.loop.time()
        self.last_activity = now
        for event in events:
            if self.gone:
                return
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._request(cast(h2.events.RequestReceived, event), now)
            elif kind is h2.events.DataReceived:
                self._data(cast(h2.events.DataReceived, event), now)
            elif kind is h2.events.StreamEnded:
                ended = self.streams.get(cast(h2.events.StreamEnded, event).stream_id or 0)
                if ended is not None and not ended.done:
                    self._dispatch(ended)
            elif kind is h2.events.WindowUpdated:
                sid = cast(h2.events.WindowUpdated, event).stream_id
                if not sid:
                    self._pump_all()
                else:
                    s = self.streams.get(sid)
                    if s is not None:
                        self._pump(s)
            elif kind is h2.events.StreamReset:
                self._client_reset(cast(h2.events.StreamReset, event), now)
            elif kind in (
                h2.events.PingReceived,
                h2.events.RemoteSettingsChanged,
                h2.events.UnknownFrameReceived,
                h2.events.PriorityUpdated,
            ):
                if not self.control.spend(now):
                    self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many control frames")
                    return
                if kind is h2.events.RemoteSettingsChanged:
                    self._pump_all()  # INITIAL_WINDOW_SIZE may have grown
            elif kind is h2.events.ConnectionTerminated:
                self.flush(now=True)
                self.closing = True
                for stream in list(self.streams.values()):
                    self._mark_reset(stream)
                self.close()
                return

    def _request(self, event: h2.events.RequestReceived, now: float) -> None:
        sid = event.stream_id
        assert sid is not None
        self.preface_deadline = 0.0
        if self.closing:
            self.h2_call(self.h2.reset_stream, sid, ErrorCodes.REFUSED_STREAM)
            return
        if self.running >= self.settings.max_concurrent_streams:
            # Streams reset by the client whose answers are still being computed count too.
            self.h2_call(self.h2.reset_stream, sid, ErrorCodes.REFUSED_STREAM)
            if not self.resets.spend(now):
                self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many streams refused")
            return
        req = TlsRequest(self.peer)
        req.version = "2"
        raw = req.raw_headers
        cookies: list[bytes] = []
        method = path = authority = b""
        fields = cast(list[tuple[bytes, bytes]], event.headers or [])
        too_large = len(fields) > self.max_headers + 4  # + the pseudo-header fields
        for name, value in fields:
            if len(name) + len(value) > self.max_field:
                too_large = True
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"cookie":
                cookies.append(value)  # RFC 9113 section 8.2.3: joined again
                continue
            flag = _FLAGS.get(name)
            if flag is not None:
                req.flags |= flag
            elif name == b"host":
                req.flags |= F_HOST
                if not authority:
                    req.host = value.decode("latin-1")
            raw.append((name, value))
        if cookies:
            raw.append((b"cookie", b"; ".join(cookies)))
        if authority:
            req.host = authority.decode("latin-1")
            if not req.flags & F_HOST:
                raw.append((b"host", authority))
                req.flags |= F_HOST
        req.method = METHODS.get(method) or method.decode("latin-1")
        req.target = path.decode("latin-1") or "/"
        if self.engine.access_log is not None:
            req.started = time.monotonic()
        self.last_accepted = max(self.last_accepted, sid)
        stream = Stream(self, sid, req)
        self.streams[sid] = stream
        if too_large:  # limits.max_headers and max_field_size, as on HTTP/1.1
            self.guard.bad_request(self.peer or None, ValueError("h2: header fields too large"))
            self._body_done(stream)
            self._answer_error(stream, 431, "request header fields too large")
            return
        if req.method == "CONNECT" or req.target[:1] != "/":
            # No extended CONNECT (RFC 8441) and no asterisk-form here.
            self._body_done(stream)
            self._answer_error(stream, 400 if req.method != "CONNECT" else 405, "not supported")
            return
        if event.stream_ended is None:
            stream.body_started = now
            length = req.headers.get("content-length") if req.flags & F_BODY else None
            if length is not None and length.isdigit() and int(length) > self.max_body:
                self._body_done(stream)
                self._answer_error(stream, 413, "request body too large")
        # else: StreamEnded follows in the same batch and dispatches it

    def _data(self, event: h2.events.DataReceived, now: float) -> None:
        sid = event.stream_id or 0
        size = event.flow_controlled_length or 0
        # Acknowledged at once: the stream and connection windows open again (the
        # bounds are max_request_body per stream and `body_budget` per connection).
        if size:
            self.h2_call(self.h2.acknowledge_received_data, size, sid)
        stream = self.streams.get(sid)
        if stream is None or stream.done:
            return
        data = event.data or b""
        body = stream.req.body
        if len(body) + len(data) > self.max_body:
            self._body_done(stream)
            self._answer_error(stream, 413, "request body too large")
            return
        self.body_buffered += len(data)
        if self.body_buffered > self.body_budget:
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too much request body at once")
            return
        body += data

    def _client_reset(self, event: h2.events.StreamReset, now: float) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is None:
            return
        unfinished = stream.running or not stream.ended
        self._mark_reset(stream)
        if unfinished and not self.resets.spend(now):
            # Rapid reset: streams opened and cancelled faster than answers complete.
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many streams reset")

    # -- dispatch ---------------------------------------------------------------------

    def _body_done(self, stream: Stream) -> None:
        """The request body is no longer being received (whole, refused or reset)."""
        if not stream.done:
            stream.done = True
            self.body_buffered -= len(stream.req.body)

    def _dispatch(self, stream: Stream) -> None:
        self._body_done(stream)
        req = stream.req
        req.complete = True
        # A Stream has the responder methods of an Http1Connection (the engine's annotation).
        run = self.engine.serve(req, cast("Http1Connection", stream))
        if run is not None:
            stream.running = True
            self.running += 1
            self.loop.create_task(self._run(stream, run))
        elif not stream.ended and not stream.reset:
            log.error("%s %s: the engine sent no answer", req.method, req.target)
            self.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)

    async def _run(self, stream: Stream, run: Coroutine[Any, Any, None]) -> None:
        req = stream.req
        try:
            await run
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("answering %s %s failed", req.method, req.target)
            if not stream.started:
                self._answer_error(stream, 500, "internal error")
            else:
                self.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
        finally:
            stream.running = False
            self.running -= 1
        if not stream.ended and not stream.reset and not self.gone:
            self.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
        self._forget(stream)

    def _answer_error(self, stream: Stream, status: int, message: str) -> None:
        body = f"{status}: {message}\n".encode()
        fields = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        if not stream.started:
            stream.send(stream.req, Reply(status, fields, body, len(body)))
        if not stream.reset:
            # The rest of the request is not wanted (RFC 9113 section 8.1).
            self.h2_call(self.h2.reset_stream, stream.id, ErrorCodes.NO_ERROR)
            stream.reset = True
        self.flush()
        self._forget(stream)

    # -- sending ----------------------------------------------------------------------

    def send_head(
        self,
        stream: Stream,
        status: int,
        fields: list[tuple[bytes, bytes]],
        length: int | None,
        end: bool,
    ) -> None:
        headers = [(b":status", str(status).encode()), *fields, *self.hsts]
        if (
            length is not None
            and status not in (204, 304)
            and not any(k == b"content-length" for k, _ in fields)
        ):
            headers.append((b"content-length", str(length).encode()))
        stream.started = True
        if not self.h2_call(self.h2.send_headers, stream.id, headers, end_stream=end):
            self._mark_reset(stream)
            return
        if end:
            stream.ended = True
            self._forget(stream)
        self.flush()

    def send_body(self, stream: Stream, data: memoryview, end: bool) -> None:
        if stream.reset or stream.ended:
            return
        if stream.pending is not None:
            stream.pending = memoryview(bytes(stream.pending) + bytes(data))
        elif data:
            stream.pending = data
        if end:
            stream.ended = stream.end_after = True
        self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        """Send what the windows allow of the stream's pending body."""
        if stream.reset or self.gone:
            return
        h2c = self.h2
        sid = stream.id
        pending = stream.pending
        try:
            while pending is not None and len(pending) and not self.write_paused:
                window = h2c.local_flow_control_window(sid)
                if window <= 0:
                    break
                n = min(window, len(pending), MAX_FRAME)
                last = n == len(pending) and stream.end_after
                h2c.send_data(sid, pending[:n].tobytes(), end_stream=last)
                pending = pending[n:]
                if last:
                    stream.end_after = False
            stream.pending = pending if pending is not None and len(pending) else None
            if stream.pending is None and stream.end_after:
                h2c.end_stream(sid)
                stream.end_after = False
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._mark_reset(stream)
            return
        now = self.loop.time()
        if stream.pending is not None and not self.write_paused:
            if h2c.outbound_flow_control_window <= 0:
                self.conn_stalled_since = self.conn_stalled_since or now
            else:
                stream.stalled_since = stream.stalled_since or now
        else:
            stream.stalled_since = 0.0
        self.flush()
        if stream.pending is None:
            waiter = stream.waiter
            if waiter is not None and not waiter.done() and not self.write_paused:
                waiter.set_result(None)
            if stream.ended and not stream.end_after:
                self._forget(stream)

    def _pump_all(self) -> None:
        if self.h2.outbound_flow_control_window > 0:
            self.conn_stalled_since = 0.0  # (a SETTINGS frame alone does not restart the clock)
        for stream in list(self.streams.values()):
            if stream.pending is not None or stream.end_after:
                self._pump(stream)
            elif stream.waiter is not None and not stream.waiter.done() and not self.write_paused:
                stream.waiter.set_result(None)

    def reset_stream(self, stream: Stream, code: ErrorCodes) -> None:
        if not stream.reset:
            self.h2_call(self.h2.reset_stream, stream.id, code)
            self.flush()
        self._mark_reset(stream)
        self._forget(stream)

    def _mark_reset(self, stream: Stream) -> None:
        stream.reset = True
        stream.pending = None
        stream.stalled_since = 0.0
        waiter = stream.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("stream reset"))
        self._body_done(stream)

    def _forget(self, stream: Stream) -> None:
        """Drop a stream once it is answered (or reset) and the engine is done with it."""
        if stream.running or (stream.pending is not None and not stream.reset):
            return
        if not (stream.ended or stream.reset):
            return
        self._body_done(stream)
        self.streams.pop(stream.id, None)
        self._maybe_close()
