"""HTTP/2 to clients (RFC 9113), over TLS after ALPN chose "h2": one protocol per connection,
the server side of the protocol written here (frames, stream states, flow control) over
`edge.protocol.h2_frames` (the wire format; the `hpack` package decodes request header blocks).

Each stream is a `Stream`: the engine's `edge.http.answer.Responder` for its request (`send`,
`start` / `write` / `end`, `abort`, `interim`), so `Engine.serve` answers both protocols with
the same `Answer` (Via on an answer names the HTTP/1.1 it came from the origin in; the request
sent to the origin names "2"). A request is built from its HEADERS (`:authority` as Host) and
its DATA, buffered whole as on HTTP/1.1.

The hit path is short: a request header block made of indexed fields only is decoded and
checked once per connection (`h2_frames.RequestDecoder`); an answer's header block is
encoded without the dynamic table, so it is encoded once per answer and kept on it
(`header_block`): a kept hit's fields before Age once per kept answer, its Age and
Cache-Status once per second of its age; and everything a batch of received frames produces
goes out in one write.

Flow control both ways: a response body goes out as the client's stream and connection
windows allow (`write` waits; `send` leaves the rest pending, sent as WINDOW_UPDATEs come);
request bodies are acknowledged as they arrive, each up to `limits.max_request_body`.

Protections (each has a test in tests/edge/test_http2_abuse.py or test_kept_doors.py that
drives it with raw frames):
- SETTINGS_MAX_CONCURRENT_STREAMS and SETTINGS_MAX_HEADER_LIST_SIZE (`tls.http2.*`); a stream
  over the limit is refused (RST_STREAM REFUSED_STREAM, RFC 9113 section 5.1.2); streams
  whose answer is still being computed count against the limit even after the client reset
  them, so resetting does not let a client run more work than the limit (rapid reset,
  CVE-2023-44487); more than `max_resets` client resets, refused or malformed streams in
  10 s: GOAWAY ENHANCE_YOUR_CALM.
- CONTINUATION floods (CVE-2024-27316 and kin): a header block is at most 64 CONTINUATION
  frames of at most 16 KB (past that, GOAWAY PROTOCOL_ERROR); its encoded bytes at most
  SETTINGS_MAX_HEADER_LIST_SIZE, checked as each frame arrives (an encoded block is never
  larger than the list it decodes to: `_check_block_size`), and its decoded fields too
  (past either, GOAWAY ENHANCE_YOUR_CALM). A block being assembled is charged to the
  worker's memory ledger (`header_blocks`, every connection together, `limits.kept`; over
  it, GOAWAY ENHANCE_YOUR_CALM) until it ends or the connection does, and must end within
  `limits.header_timeout` (else GOAWAY ENHANCE_YOUR_CALM and closed).
- Request bodies being received are charged to the ledger's `bodies` (every connection
  together) as their DATA arrives, given back once the stream is answered or gone; a body
  that does not fit is answered 503 with Retry-After on its stream (the connection goes
  on); `body_budget` bounds one connection's (past it, GOAWAY ENHANCE_YOUR_CALM).
- SETTINGS, PING, PRIORITY, unknown-frame and small-WINDOW_UPDATE floods (increments under
  1 KB: the "data dribble" of CVE-2019-9511): more than `max_control_frames` in 10 s:
  GOAWAY ENHANCE_YOUR_CALM; and a client that does not read what they make us write (the
  socket's buffer over `OUTBUF_LIMIT`) is closed.
- Zero-window stalls: a stream whose window stays 0 (or a connection whose window or socket
  stays full) longer than `stall_timeout` is reset (or closed); a stalled stream holds at
  most a reference to its body, never a copy.
- Malformed frames and requests: a connection error (GOAWAY) for what breaks the
  connection's state (frame sizes, stream ids, windows, HPACK), a stream error (RST_STREAM
  PROTOCOL_ERROR) for a malformed request (RFC 9113 section 8.1.1: fields, pseudo-header
  fields, Content-Length against the DATA).
- Slow request heads and bodies, idle connections: `limits.header_timeout` (the preface,
  the first request, any header block in CONTINUATION frames), `limits.body_timeout` with
  `body_min_rate`,
  `limits.keepalive_timeout`.
Graceful stop (`shutdown`, from `EdgeServer.stop`): GOAWAY NO_ERROR naming the last stream
accepted; the streams in flight finish, then the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, cast

from edge.base.ledger import ITEM_OVERHEAD
from edge.cache.respond import refusal
from edge.config.tls import Http2Settings
from edge.http.answer import Answer, Fields
from edge.http.fields import FieldList, read_field_list
from edge.http.request import Refused, TlsRequest, status_without_body, without_body
from edge.protocol import h2_frames as wire
from edge.protocol.h2_frames import ErrorCode, H2Error

if TYPE_CHECKING:
    from edge.http.request import Request
    from edge.protocol.handler import Handler

log = logging.getLogger("edge.protocol.http2")

# Connection-specific fields HTTP/2 forbids (RFC 9113 section 8.2.2), the same list a request
# is checked against, and TE (a request field); never sent.
NOT_SENT = wire.CONNECTION_SPECIFIC | {b"te"}
WINDOW_SECONDS = 10.0  # the period the reset and control-frame budgets count over
OUTBUF_LIMIT = 4 << 20  # bytes queued to a client that is not reading: close it
MAX_FRAME = wire.MIN_FRAME  # what we accept and what we send
MAX_CONTINUATIONS = 64
SMALL_INCREMENT = 1024  # a WINDOW_UPDATE below this counts as a control frame
H2 = "h2"  # the key of this protocol's serializations on an Answer (`Answer.wire`)


class Stream:
    """One request and its answer: the engine's responder for this stream."""

    __slots__ = (
        "body_started",
        "conn",
        "done",
        "end_after",
        "ended",
        "expect",
        "id",
        "kept",
        "pending",
        "received",
        "recv_window",
        "remote_closed",
        "req",
        "reset",
        "running",
        "stalled_since",
        "started",
        "waiter",
        "window",
    )

    def __init__(
        self, conn: Http2Connection, stream_id: int, req: Request, window: int, recv: int
    ) -> None:
        self.conn = conn
        self.id = stream_id
        self.req = req
        self.started = False  # the final head was sent
        self.ended = False  # END_STREAM sent (or scheduled after `pending`)
        self.end_after = False
        self.reset = False  # reset by either side: nothing more is sent
        self.running = False  # the engine is still computing the answer
        self.done = False  # the request body is no longer received (whole, refused, reset)
        self.remote_closed = False  # the client sent END_STREAM
        self.pending: memoryview | None = None  # body bytes waiting for window
        self.waiter: asyncio.Future[None] | None = None
        self.stalled_since = 0.0
        self.body_started = 0.0
        self.window = window  # what we may send (the client's window for this stream)
        self.recv_window = recv  # what the client may send
        self.expect: int | None = None  # the request's Content-Length
        self.received = 0
        self.kept = 0  # body bytes charged to the ledger's `bodies` (given back at the end)

    # -- the engine's side (edge.http.answer.Responder) ----------------------------------

    def send(self, req: Request, answer: Answer) -> None:
        if self.reset or self.started:
            return
        body = answer.body
        no_body = without_body(req.method, answer.status) or not body
        conn = self.conn
        conn.send_head(self, header_block(answer), no_body)
        if not no_body:
            conn.send_body(self, memoryview(body), end=True)

    def start(self, req: Request, answer: Answer) -> None:
        if self.reset:
            raise ConnectionResetError("stream reset")
        no_body = without_body(req.method, answer.status)
        self.conn.send_head(self, header_block(answer), no_body)

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
        self.conn.reset_stream(self, ErrorCode.INTERNAL_ERROR)

    def interim(self, status: int, fields: Fields) -> None:
        """A 1xx answer before the final one (103 Early Hints)."""
        if not self.reset and not self.started:
            conn = self.conn
            block = wire.encode_status(status) + fields_block(fields)
            conn.out.append(wire.headers(self.id, conn.table_prefix() + block, False))
            conn.flush()


def fields_block(fields: Sequence[tuple[str, str]]) -> bytes:
    """Fields encoded (RFC 7541 section 6.2.2, no Huffman), their names lower-cased (RFC 9113
    section 8.2.1), without the connection-specific ones (section 8.2.2)."""
    out = []
    for k, v in fields:
        name = k.lower().encode("latin-1")
        if name not in NOT_SENT:
            out.append(wire.encode_field(name, v.encode("latin-1", "replace")))
    return b"".join(out)


def header_block(answer: Answer) -> bytes:
    """An answer's header block but for what the connection adds (`send_head`): :status, the
    fields, content-length (when the length is known, the status has content and no field
    gives it), the stamp. Encoded once per answer, and the part before the stamp once per
    kept answer (`Answer.fixed`)."""
    block = answer.wire.get(H2)
    if block is None:
        fixed = answer.fixed.get(H2)
        if fixed is None:
            status, fields, length = answer.status, answer.fields, answer.length
            fixed = wire.encode_status(status) + fields_block(fields)
            if (
                length is not None
                and not status_without_body(status)
                and not any(k.lower() == "content-length" for k, _ in fields)
            ):
                fixed += wire.encode_field(b"content-length", b"%d" % length)
            answer.fixed[H2] = fixed
        stamp = answer.stamp
        block = answer.wire[H2] = fixed + fields_block(stamp) if stamp else fixed
    return block


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
    """One client connection speaking HTTP/2 (the server side)."""

    def __init__(
        self, engine: Handler, settings: Http2Settings, answer_fields: Sequence[tuple[str, str]]
    ) -> None:
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
        # What every answer of the connection ends with (HSTS: TlsSettings.answer_fields).
        self.tail = fields_block(answer_fields)
        self.loop = asyncio.get_running_loop()
        self.max_headers = cfg.max_headers
        self.max_field = cfg.max_field_size
        self.decoder = wire.RequestDecoder(
            settings.max_header_list_size, engine.ledger.account("heads")
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.running = 0  # streams whose answer the engine is still computing
        self.peer = ""
        self.closing = False  # GOAWAY sent: no new streams
        self.dead = False  # a connection error: nothing more is read
        self.last_accepted = 0
        self.highest = 0  # the highest stream id the client opened
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
        self.out: list[bytes] = []
        self.buf = b""
        self.preface = False  # the client's preface arrived
        self.got_settings = False  # and its first SETTINGS
        self.acked = False  # the client acknowledged our SETTINGS
        self.send_window = wire.DEFAULT_WINDOW  # the client's connection window
        self.recv_window = wire.DEFAULT_WINDOW + settings.initial_window
        self.peer_initial = wire.DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self.table_update = False  # the client changed its table size: say ours is 0
        self.block_sid = 0  # a header block in CONTINUATION frames: its stream
        self.block_flags = 0
        self.block_parts: list[bytes] = []
        self.block_size = 0  # its bytes so far
        self.block_kept = 0  # what it is charged in the ledger's `header_blocks`
        self.block_started = 0.0
        self.header_blocks = engine.ledger.account("header_blocks")
        self.bodies = engine.ledger.account("bodies")

    # -- connection ---------------------------------------------------------------------

    def _our_settings(self) -> bytes:
        s = self.settings
        return wire.settings_frame(
            {
                wire.S_MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                wire.S_MAX_HEADER_LIST_SIZE: s.max_header_list_size,
                wire.S_INITIAL_WINDOW_SIZE: s.initial_window,
                wire.S_MAX_FRAME_SIZE: MAX_FRAME,
            }
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.guard.accept(self, transport)
        if peer is None:  # limits.max_connections
            self.transport.write(
                self._our_settings()
                + wire.goaway(0, ErrorCode.REFUSED_STREAM, b"too many connections")
            )
            self.dead = True
            self.transport.close()
            return
        self.peer = peer
        now = self.loop.time()
        self.last_activity = now
        self.preface_deadline = now + self.header_timeout
        # Our SETTINGS, and the connection window for request bodies of several streams.
        self.out.append(self._our_settings())
        self.out.append(wire.window_update(0, self.settings.initial_window))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.guard.open.discard(self)
        self._drop_block()
        self.decoder.cache.clear()  # the blocks kept (their charge in the ledger's `heads`)
        for stream in list(self.streams.values()):
            if stream.running:
                self.guard.client_gone += 1
            self._mark_reset(stream)
            if not stream.running:  # else when its answer ends (`_run`)
                self._give_body(stream)
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.paused_since = self.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.paused_since = 0.0
        self._pump_all()

    def flush(self, now: bool = False) -> None:
        """Write what is queued. Inside `data_received` this waits for the end of the
        batch: one TLS record and one send for all the answers the batch produced."""
        if (self.in_batch and not now) or not self.out:
            return
        data = b"".join(self.out)
        self.out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush(now=True)  # what the batch produced (a GOAWAY) goes out first
            self.transport.close()

    def goaway(self, code: ErrorCode, reason: str, abort: bool = False, bad: bool = True) -> None:
        """A connection error: GOAWAY and close (nothing more is answered). `abort`: the
        client reads nothing, so nothing queued can be flushed: drop the connection. `bad`:
        counted as a malformed request (a timeout is counted as one instead)."""
        if self.gone or self.dead:
            return
        if bad:
            self.guard.bad_request(self.peer or None, ValueError(f"h2: {reason}"))
        self.dead = True
        self._drop_block()
        self.closing = True
        self.out.append(wire.goaway(self.highest, code, reason.encode()))
        for stream in list(self.streams.values()):
            self._mark_reset(stream)
        if abort and self.transport is not None:
            self.out.clear()
            self.transport.abort()
        else:
            self.close()

    def shutdown(self) -> None:
        """Graceful stop: GOAWAY NO_ERROR with the last stream accepted; streams in flight
        finish, then the connection closes once no answer is in progress."""
        if self.closing or self.gone:
            self.close()
            return
        self.closing = True
        self.out.append(wire.goaway(self.last_accepted, ErrorCode.NO_ERROR))
        self.flush(now=True)
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.closing and not self.streams:
            self.close()

    # -- timeouts (edge.protocol.http1.tick_forever calls this about once a second) -----------

    def tick(self, now: float) -> None:
        if self.gone:
            return
        if self.preface_deadline and now > self.preface_deadline:
            self.guard.header_timeouts += 1
            self.close()  # no preface, or no first request, in time
            return
        if self.block_sid and now - self.block_started > self.header_timeout:
            # A header block in progress is a request head being sent: the slowloris rule.
            self.guard.header_timeouts += 1
            self.goaway(ErrorCode.ENHANCE_YOUR_CALM, "header block too slow", bad=False)
            return
        stall = self.settings.stall_timeout
        if self.paused_since and now - self.paused_since > stall:
            # The socket stayed full too long: the client reads nothing.
            self.goaway(ErrorCode.ENHANCE_YOUR_CALM, "not reading", abort=True)
            return
        if self.conn_stalled_since and now - self.conn_stalled_since > stall:
            self.goaway(ErrorCode.FLOW_CONTROL_ERROR, "connection window stayed at 0")
            return
        for stream in list(self.streams.values()):
            if stream.stalled_since and now - stream.stalled_since > stall:
                self.reset_stream(stream, ErrorCode.CANCEL)  # its window stayed at 0
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
        if self.gone or self.dead:
            return
        self.in_batch = True
        try:
            self._received(data)
        except H2Error as exc:
            self.in_batch = False
            self.goaway(exc.code, exc.reason)
            return
        except Exception:  # a bug of ours: this connection ends, the worker goes on
            log.exception("h2: handling the client's frames failed")
            self.in_batch = False
            self.goaway(ErrorCode.INTERNAL_ERROR, "internal error")
            return
        finally:
            self.in_batch = False
        self.flush()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > OUTBUF_LIMIT:
            # The client makes us write (PING acks, SETTINGS acks, answers) and does not read.
            self.goaway(ErrorCode.ENHANCE_YOUR_CALM, "not reading what it asks for", abort=True)

    def _received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.preface:
            if len(data) < len(wire.PREFACE):
                if not wire.PREFACE.startswith(data):
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "no connection preface")
                self.buf = data
                return
            if not data.startswith(wire.PREFACE):
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "no connection preface")
            self.preface = True
            data = data[len(wire.PREFACE) :]
        now = self.loop.time()
        self.last_activity = now
        pos = 0
        n = len(data)
        parse = wire.parse_head
        while n - pos >= 9:
            length, kind, flags, sid = parse(data, pos)
            if length > MAX_FRAME:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "frame over SETTINGS_MAX_FRAME_SIZE")
            end = pos + 9 + length
            if end > n:
                break
            payload = data[pos + 9 : end]
            pos = end
            self._frame(kind, flags, sid, payload, now)
            if self.dead or self.gone:
                return
        if pos < n:
            self.buf = data[pos:]

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes, now: float) -> None:
        if self.block_sid and kind != wire.CONTINUATION:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted")
        if not self.got_settings and kind != wire.SETTINGS:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "the preface's SETTINGS frame is missing")
        if kind == wire.HEADERS:
            self._headers(flags, sid, payload, now)
        elif kind == wire.DATA:
            self._data(flags, sid, payload, now)
        elif kind == wire.WINDOW_UPDATE:
            self._window_update(sid, payload, now)
        elif kind == wire.CONTINUATION:
            if not self.block_sid or sid != self.block_sid:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            parts = self.block_parts
            if len(parts) > MAX_CONTINUATIONS:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "too many CONTINUATION frames")
            self._block_grows(len(payload))
            parts.append(payload)
            if flags & wire.END_HEADERS:
                self._drop_block()
                self._header_block(self.block_flags, sid, b"".join(parts), now)
        elif kind == wire.SETTINGS:
            self._settings(flags, sid, payload, now)
        elif kind == wire.RST_STREAM:
            if len(payload) != 4:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
            self._check_stream_id(sid, "RST_STREAM")
            stream = self.streams.get(sid)
            if stream is not None:
                self._client_reset(stream, now)
        elif kind == wire.PING:
            if len(payload) != 8:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "PING of the wrong size")
            if sid:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            self._control(now)
            if not flags & wire.ACK:
                self.out.append(wire.ping_ack(payload))
        elif kind == wire.GOAWAY:
            if sid:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
            # The client leaves: nothing more is answered.
            self.dead = self.closing = True
            for stream in list(self.streams.values()):
                self._mark_reset(stream)
            self.close()
        elif kind == wire.PRIORITY:
            if len(payload) != 5:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
            if not sid:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            self._control(now)
        elif kind == wire.PUSH_PROMISE:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:
            self._control(now)  # an unknown frame type: ignored (RFC 9113 section 4.1)

    def _control(self, now: float) -> None:
        if not self.control.spend(now):
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames")

    def _check_stream_id(self, sid: int, what: str) -> None:
        if not sid:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"{what} on stream 0")
        if sid > self.highest:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"{what} on an idle stream")

    def _settings(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if sid:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & wire.ACK:
            if payload:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._control(now)
            self.acked = True
            return
        if len(payload) % 6:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        if self.got_settings:
            self._control(now)
        self.got_settings = True
        for key, value in wire.parse_settings(payload):
            if key == wire.S_INITIAL_WINDOW_SIZE:
                if value > wire.MAX_WINDOW:
                    raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                delta = value - self.peer_initial
                self.peer_initial = value
                for stream in self.streams.values():  # RFC 9113 section 6.9.2
                    stream.window += delta
                    if stream.window > wire.MAX_WINDOW:
                        raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "a window over 2^31-1")
            elif key == wire.S_HEADER_TABLE_SIZE:
                self.table_update = True
            elif key == wire.S_ENABLE_PUSH:
                if value > 1:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH over 1")
            elif key == wire.S_MAX_FRAME_SIZE and not MAX_FRAME <= value < 1 << 24:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
        self.out.append(wire.SETTINGS_ACK)
        self._pump_all()  # INITIAL_WINDOW_SIZE may have grown

    def _window_update(self, sid: int, payload: bytes, now: float) -> None:
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = wire.U32.unpack(payload)[0] & 0x7FFFFFFF
        if increment < SMALL_INCREMENT:
            # Windows opened a few bytes at a time make us send a frame per few bytes (the
            # "data dribble", CVE-2019-9511): such updates spend the control-frame budget.
            self._control(now)
        if not sid:
            if not increment:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "a zero window increment")
            self.send_window += increment
            if self.send_window > wire.MAX_WINDOW:
                raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "the window over 2^31-1")
            self._pump_all()
            return
        self._check_stream_id(sid, "WINDOW_UPDATE")
        stream = self.streams.get(sid)
        if stream is None or stream.reset:
            return  # closed meanwhile
        if not increment:
            self.reset_stream(stream, ErrorCode.PROTOCOL_ERROR)
            return
        stream.window += increment
        if stream.window > wire.MAX_WINDOW:
            self.reset_stream(stream, ErrorCode.FLOW_CONTROL_ERROR)
            return
        self._pump(stream)

    def _headers(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if not sid:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        payload = wire.strip_padding(flags, payload)
        if flags & wire.PRIORITY_FLAG:
            if len(payload) < 5:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if wire.U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "a stream depending on itself")
            payload = payload[5:]
        if flags & wire.END_HEADERS:
            self._check_block_size(len(payload))
            self._header_block(flags, sid, payload, now)
        else:
            self.block_sid = sid
            self.block_flags = flags
            self.block_started = now
            self._block_grows(len(payload))
            self.block_parts = [payload]

    def _check_block_size(self, size: int) -> None:
        """An encoded header block is never larger than the header list it decodes to (the
        list counts 32 bytes per field beyond its name and value, more than any field's
        HPACK prefix and lengths; an encoder uses Huffman only where it is shorter), so a
        block over SETTINGS_MAX_HEADER_LIST_SIZE is refused as it arrives, not buffered
        whole and decoded first (RFC 9113 section 10.5.1: a larger field block than we are
        willing to handle; the connection closes, as its HPACK state is lost)."""
        if size > self.settings.max_header_list_size:
            raise H2Error(
                ErrorCode.ENHANCE_YOUR_CALM, "header block over SETTINGS_MAX_HEADER_LIST_SIZE"
            )

    def _block_grows(self, n: int) -> None:
        """A part of a header block in CONTINUATION frames arrived: within the bound of one
        block and within the ledger's `header_blocks` (every connection of the worker), or
        the connection is closed before it is kept."""
        self._check_block_size(self.block_size + n)
        kept = n + ITEM_OVERHEAD
        if not self.header_blocks.take(kept):
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "header blocks in progress over limits.kept")
        self.block_size += n
        self.block_kept += kept

    def _drop_block(self) -> None:
        """The header block in progress is done with (whole, or the connection ends)."""
        self.block_sid = 0
        self.block_parts = []
        self.block_size = 0
        if self.block_kept:
            self.header_blocks.give(self.block_kept)
            self.block_kept = 0

    def _header_block(self, flags: int, sid: int, block: bytes, now: float) -> None:
        end_stream = bool(flags & wire.END_STREAM)
        if sid <= self.highest:
            fields = self.decoder.decode(block)  # the HPACK state moves on in any case
            stream = self.streams.get(sid)
            if stream is None or stream.reset:
                return  # a stream we closed (or reset) meanwhile
            if stream.remote_closed:
                self.reset_stream(stream, ErrorCode.STREAM_CLOSED)
            elif not end_stream or wire.check_request(fields, trailers=True):
                self._malformed(stream, "malformed trailers", now)
            else:  # trailers: the request is whole
                self._end_of_request(stream, now)
            return
        if not sid & 1:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "a stream id the client may not open")
        self.highest = sid
        self._request(sid, self.decoder.request(block), end_stream, now)

    def _request(self, sid: int, decoded: wire.Decoded, end_stream: bool, now: float) -> None:
        self.preface_deadline = 0.0
        if self.closing:
            self.out.append(wire.rst_stream(sid, ErrorCode.REFUSED_STREAM))
            return
        if len(self.streams) >= self.settings.max_concurrent_streams:
            # RFC 9113 section 5.1.2: refused. Streams reset by the client whose answers are
            # still being computed count too; refusing often is an abuse pattern.
            self.out.append(wire.rst_stream(sid, ErrorCode.REFUSED_STREAM))
            if not self.resets.spend(now):
                raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many streams refused")
            return
        recv = self.settings.initial_window
        if not self.acked:
            recv = max(recv, wire.DEFAULT_WINDOW)  # our SETTINGS may not be in force yet
        req = TlsRequest(self.peer)
        stream = Stream(self, sid, req, self.peer_initial, recv)
        stream.remote_closed = end_stream
        self.streams[sid] = stream
        if decoded.problem is not None:
            self._malformed(stream, decoded.problem, now)
            return
        parsed = cast("FieldList | Refused | None", decoded.parsed)
        if parsed is None:
            try:
                parsed = read_field_list(decoded.fields, self.max_headers, self.max_field)
            except Refused as refused:
                parsed = refused
            decoded.parsed = parsed
        if type(parsed) is Refused:
            # The request check every door shares (edge.http.request): the same refusal as on
            # HTTP/1.1, as an answer on this stream (without a body after a HEAD).
            if (b":method", b"HEAD") in decoded.fields:
                req.method = "HEAD"
            self.guard.bad_request(self.peer or None, parsed)
            self._body_done(stream)
            self._answer_error(stream, parsed.status, parsed.message)
            return
        assert type(parsed) is tuple
        method, target, host, raw, flags, special, too_large, length = parsed
        req.version = "2"
        req.method = method
        req.target = target
        req.host = host
        req.raw_headers = list(raw)
        req.flags = flags
        req.special = special
        if self.engine.access_log is not None:
            req.started = time.monotonic()
        self.last_accepted = max(self.last_accepted, sid)
        stream.expect = length
        if too_large:  # limits.max_headers and max_field_size, as on HTTP/1.1
            self.guard.bad_request(self.peer or None, ValueError("h2: header fields too large"))
            self._body_done(stream)
            self._answer_error(stream, 431, "request header fields too large")
            return
        if end_stream:
            self._end_of_request(stream, now)
            return
        if req.method == "CONNECT":
            # No tunnels (no extended CONNECT, RFC 8441): answered at once by the flow
            # core's refusal, whatever DATA would follow.
            self._dispatch(stream)
            self._answer_error(stream, 405, "CONNECT is not supported")
            return
        stream.body_started = now
        if stream.expect is not None and stream.expect > self.max_body:
            self._body_done(stream)
            self._answer_error(stream, 413, "request body too large")

    def _malformed(self, stream: Stream, problem: str, now: float) -> None:
        """RFC 9113 section 8.1.1: a malformed request is a stream error."""
        self.guard.bad_request(self.peer or None, ValueError(f"h2: {problem}"))
        self.reset_stream(stream, ErrorCode.PROTOCOL_ERROR)
        if not self.resets.spend(now):
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many malformed streams")

    def _end_of_request(self, stream: Stream, now: float) -> None:
        stream.remote_closed = True
        if stream.expect is not None and stream.received != stream.expect and not stream.done:
            self._malformed(stream, "a body shorter than its content-length", now)
            return
        if not stream.done:
            self._dispatch(stream)

    def _data(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if not sid:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        if sid > self.highest:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
        size = len(payload)  # flow-controlled: padding included
        if size > self.recv_window:
            raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA over the connection window")
        data = wire.strip_padding(flags, payload)
        if size:
            # Acknowledged at once: the connection window opens again (the bounds are
            # max_request_body per stream and `body_budget` per connection).
            self.out.append(wire.window_update(0, size))
        stream = self.streams.get(sid)
        if stream is None or stream.reset:
            return  # closed meanwhile: its frames in flight are dropped
        if stream.remote_closed:
            self.reset_stream(stream, ErrorCode.STREAM_CLOSED)
            return
        if size > stream.recv_window:
            self.reset_stream(stream, ErrorCode.FLOW_CONTROL_ERROR)
            return
        end = bool(flags & wire.END_STREAM)
        if size and not end:
            self.out.append(wire.window_update(sid, size))
        stream.received += len(data)
        if stream.expect is not None and stream.received > stream.expect:
            self._malformed(stream, "a body longer than its content-length", now)
            return
        if not stream.done:
            body = stream.req.body
            if len(body) + len(data) > self.max_body:
                self._body_done(stream)
                self._answer_error(stream, 413, "request body too large")
                return
            self.body_buffered += len(data)
            if self.body_buffered > self.body_budget:
                raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too much request body at once")
            if not self.bodies.take(len(data)):
                # limits.kept.bodies: the bodies every connection of the worker is receiving.
                self._body_done(stream)
                self._answer_error(
                    stream, 503, "too many request bodies being received; retry later"
                )
                return
            stream.kept += len(data)
            body += data
        if end:
            self._end_of_request(stream, now)

    def _client_reset(self, stream: Stream, now: float) -> None:
        unfinished = stream.running or not stream.ended
        self._mark_reset(stream)
        self._forget(stream)
        if unfinished and not self.resets.spend(now):
            # Rapid reset: streams opened and cancelled faster than answers complete.
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset")

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
        run = self.engine.serve(req, stream)
        if run is not None:
            stream.running = True
            self.running += 1
            self.loop.create_task(self._run(stream, run))
        elif not stream.ended and not stream.reset:
            log.error("%s %s: the engine sent no answer", req.method, req.target)
            self.reset_stream(stream, ErrorCode.INTERNAL_ERROR)

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
                self.reset_stream(stream, ErrorCode.INTERNAL_ERROR)
        finally:
            stream.running = False
            self.running -= 1
        if not stream.ended and not stream.reset and not self.gone:
            self.reset_stream(stream, ErrorCode.INTERNAL_ERROR)
        self._forget(stream)

    def _answer_error(self, stream: Stream, status: int, message: str) -> None:
        if not stream.started:
            stream.send(stream.req, refusal(status, message))
        if not stream.reset and not stream.remote_closed:
            # The rest of the request is not wanted (RFC 9113 section 8.1).
            self.out.append(wire.rst_stream(stream.id, ErrorCode.NO_ERROR))
            self._mark_reset(stream)
        self.flush()
        self._forget(stream)

    # -- sending ----------------------------------------------------------------------

    def table_prefix(self) -> bytes:
        """RFC 7541 section 4.2: after the client changed SETTINGS_HEADER_TABLE_SIZE, the
        next block says the size our encoder uses (0: it never indexes)."""
        if self.table_update:
            self.table_update = False
            return wire.TABLE_SIZE_ZERO
        return b""

    def send_head(self, stream: Stream, block: bytes, end: bool) -> None:
        """The final HEADERS: `block` is the answer's (`header_block`); the table size
        update and the connection's fields (`tail`) are added here."""
        stream.started = True
        if stream.reset or self.dead:
            return
        self.out.append(wire.headers(stream.id, self.table_prefix() + block + self.tail, end))
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
        if stream.reset or self.gone or self.dead:
            return
        sid = stream.id
        pending = stream.pending
        out = self.out
        while pending is not None and len(pending) and not self.write_paused:
            n = min(stream.window, self.send_window, len(pending), MAX_FRAME)
            if n <= 0:
                break
            last = n == len(pending) and stream.end_after
            out.append(wire.frame(wire.DATA, wire.END_STREAM if last else 0, sid, pending[:n]))
            stream.window -= n
            self.send_window -= n
            pending = pending[n:]
            if last:
                stream.end_after = False
        stream.pending = pending if pending is not None and len(pending) else None
        if stream.pending is None and stream.end_after:
            out.append(wire.frame(wire.DATA, wire.END_STREAM, sid))
            stream.end_after = False
        if stream.pending is not None and not self.write_paused:
            now = self.loop.time()
            if self.send_window <= 0:
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
        if self.send_window > 0:
            self.conn_stalled_since = 0.0  # (a SETTINGS frame alone does not restart the clock)
        for stream in list(self.streams.values()):
            if stream.pending is not None or stream.end_after:
                self._pump(stream)
            elif stream.waiter is not None and not stream.waiter.done() and not self.write_paused:
                stream.waiter.set_result(None)

    def reset_stream(self, stream: Stream, code: ErrorCode) -> None:
        if not stream.reset and not self.dead:
            self.out.append(wire.rst_stream(stream.id, code))
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
        self._give_body(stream)
        self.streams.pop(stream.id, None)
        self._maybe_close()

    def _give_body(self, stream: Stream) -> None:
        """The request was answered (or the stream ended): its body is no longer kept."""
        if stream.kept:
            self.bodies.give(stream.kept)
            stream.kept = 0
