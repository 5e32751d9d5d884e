"""TLS on a plain TCP connection: the handshake, decryption and encryption with `ssl.MemoryBIO`,
and the `asyncio.Transport` the HTTP/1.1 or h2 connection above writes to.

    socket --TCP--> TlsTransport (the TCP transport's protocol)
        handshake done: `choose(transport)` gives the connection ALPN asked for
        ciphertext in -> SSLObject.read -> connection.data_received(plaintext)
        connection.write(plaintext) -> SSLObject.write -> TCP transport.write(ciphertext)

Why our own and not uvloop's (`create_server(ssl=...)`): uvloop reads decrypted data until
OpenSSL raises `SSLWantReadError`, so every request costs one exception more: 5.6 of the 12.7
µs the `ssl` calls of a keep-alive request cost (measured in process; `ssl` builds the error
with its formatted message). Here a read stops when both the incoming buffer and OpenSSL's
are empty. The same for handshakes: one object per connection instead of uvloop's protocol,
transport and buffers.

- Ciphertext comes as `data_received` bytes (one Python call per read; a BufferedProtocol
  costs two, `get_buffer` and `buffer_updated`: 1.8 k instructions more per keep-alive
  request, `python -m bench cost`). Plaintext is decrypted into one buffer per worker
  (`_plain`), used synchronously on the event loop's thread, and handed on as bytes.
- Writes are encrypted at once when small; a large one (a 5 MB body) is kept as a view and
  encrypted 256 KiB at a time as the socket drains, so a slow client never makes the worker
  hold the whole body encrypted. The connection above is paused while anything waits.
- Closing sends close_notify, then FIN, without waiting for the client's close_notify (RFC
  8446 section 6.1: the initiator need not); what the client still sends is read and dropped
  until it closes, `LINGER` seconds at most (nginx's lingering close).
- A handshake must finish within `timeout` seconds (`limits.header_timeout`: it is the first
  part of a request head); one that fails (a plain HTTP request, an unknown protocol
  version) is logged at debug level and the connection closed.
- A connection counts against `limits.max_connections` from its accept, its handshake
  included (`ConnectionGuard.admit`: over it, closed at once); a handshake in progress is
  charged `ledger.HANDSHAKE_BYTES` to the worker's `handshakes` account (over
  `limits.kept.handshakes`: closed at once, counted), given back when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.base.ledger import HANDSHAKE_BYTES

if TYPE_CHECKING:
    from edge.base.guard import ConnectionGuard
    from edge.base.ledger import Account

log = logging.getLogger("edge.protocol.tls")

READ_SIZE = 64 * 1024  # more than one TLS record holds (16 KiB): a read never fills it
CHUNK = 256 * 1024  # a large write is encrypted this much at a time
LINGER = 2.0  # seconds a closed connection reads (and drops) what the client still sends

_plain = memoryview(bytearray(READ_SIZE))

WantRead = ssl.SSLWantReadError


class TlsTransport(asyncio.Transport, asyncio.Protocol):
    """One TLS connection: the TCP transport's protocol below, the connection's transport
    above."""

    def __init__(
        self,
        context: ssl.SSLContext,
        choose: Callable[[TlsTransport], asyncio.BaseProtocol],
        timeout: float,
        guard: ConnectionGuard,
        handshakes: Account | None = None,
    ) -> None:
        super().__init__()
        self.context = context
        self.choose = choose
        self.timeout = timeout
        self.guard = guard  # counts how handshakes end
        self.handshakes = handshakes  # the ledger's account of handshakes in progress
        self.shaking = False  # counted in `guard.open` and charged: the handshake goes on
        self.timer: asyncio.TimerHandle | None = None
        self.app: Any = None  # the connection above, once the handshake is done
        self.raw: Any = None  # the TCP transport
        self.closing = False
        self.read_paused = False  # by the connection above
        self.raw_paused = False  # the TCP transport's buffer is full
        self.app_paused = False  # we told the connection above to stop writing
        self.close_after_backlog = False
        self.batching = False  # handling a read: writes are sent at its end
        self.backlog: deque[memoryview] = deque()
        self.linger: asyncio.TimerHandle | None = None

    # -- the TCP side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport
        if not self.guard.admit(self):  # max_connections, handshakes included
            self.closing = True
            self.raw.abort()
            return
        if self.handshakes is not None and not self.handshakes.take(HANDSHAKE_BYTES):
            # limits.kept.handshakes: refused before any TLS state is made (counted).
            self.guard.open.discard(self)
            self.closing = True
            self.raw.abort()
            return
        self.shaking = True
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.timer = loop.call_later(self.timeout, self._handshake_too_slow)

    def data_received(self, data: bytes) -> None:
        if not self.closing:
            self.incoming.write(data)
            self._read_batch()

    def _read_batch(self) -> None:
        # What the handshake and the connection write while a read is handled is sent once,
        # at the end: the handshake's last flight with h2's SETTINGS, the answers of
        # pipelined requests, an answer and the close_notify after it.
        self.batching = True
        try:
            if self.app is not None or self._handshake():
                self._read()
        finally:
            self.batching = False
        if self.outgoing.pending:
            self._flush()

    def eof_received(self) -> bool:
        # The client half-closed TCP (with or without close_notify): we close too.
        if self.app is not None and not self.closing:
            self.app.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._handshake_over()
        self.backlog.clear()
        for timer in (self.timer, self.linger):
            if timer is not None:
                timer.cancel()
        self.timer = self.linger = None
        if self.app is not None:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self.raw_paused = True
        self._pause_app()

    def resume_writing(self) -> None:
        self.raw_paused = False
        self._pump()
        if not self.backlog and self.app_paused and not self.raw_paused:
            self.app_paused = False
            if self.app is not None:
                self.app.resume_writing()

    # -- the handshake and reading -------------------------------------------------------

    def _handshake(self) -> bool:
        """Go on with the handshake; True once done (the connection above is made)."""
        try:
            self.sslobj.do_handshake()
        except WantRead:
            return False
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake failed (%s): %s", self.raw.get_extra_info("peername"), exc)
            self.guard.tls_handshakes["failed"] += 1
            self._handshake_over()
            self._flush()  # the alert that says why
            self.closing = True
            self.raw.close()
            return False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.guard.tls_handshakes["resumed" if self.sslobj.session_reused else "full"] += 1
        self._handshake_over()  # the connection above counts itself from here on
        self.app = self.choose(self)
        self.app.connection_made(self)
        return not self.closing

    def _handshake_too_slow(self) -> None:
        self.timer = None
        if self.app is None and not self.closing:
            self.guard.header_timeouts += 1  # the handshake is the first part of the head
            self.closing = True
            self._handshake_over()
            self.raw.abort()

    def _handshake_over(self) -> None:
        """The handshake ended (done, failed, timed out, or the client left): no longer
        counted here nor charged."""
        if self.shaking:
            self.shaking = False
            self.guard.open.discard(self)
            if self.handshakes is not None:
                self.handshakes.give(HANDSHAKE_BYTES)

    # While the handshake goes on, this transport is in `guard.open`: the server's tick and
    # graceful stop see it like a connection.

    def tick(self, now: float) -> None:
        """The handshake's own timer enforces `timeout` (limits.header_timeout)."""

    def shutdown(self) -> None:
        """Graceful stop: a handshake in progress has no request to finish."""
        if self.app is None and not self.closing:
            self.closing = True
            self._handshake_over()
            self.raw.abort()

    def _read(self) -> None:
        """Decrypt what came and hand it on, until nothing is left (no `SSLWantReadError`
        when both buffers are empty: that exception is the cost this module saves)."""
        sslobj = self.sslobj
        incoming = self.incoming
        while not self.read_paused and not self.closing:
            try:
                n: int = sslobj.read(READ_SIZE, _plain)  # type: ignore[assignment]  # an int given a buffer
            except WantRead:
                return
            except ssl.SSLError as exc:  # a bad record: nothing more can be read
                log.debug("TLS read failed: %s", exc)
                self.abort()
                return
            if not n:  # close_notify from the client
                if not self.app.eof_received():
                    self.close()
                return
            self.app.data_received(_plain[:n].tobytes())
            # A read returns at most one record (16 KiB): when it did not fill the buffer,
            # OpenSSL holds nothing decrypted, and `pending()` (a call) need not be asked.
            if not incoming.pending and (n < READ_SIZE or not sslobj.pending()):
                return

    def _read_later(self) -> None:
        if not self.closing and not self.read_paused:
            self._read_batch()

    def _flush(self) -> None:
        if self.outgoing.pending and not self.raw.is_closing():
            self.raw.write(self.outgoing.read())

    # -- the connection's transport ------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        if self.backlog or len(data) > CHUNK:
            self.backlog.append(memoryview(data).cast("B"))
            self._pump()
            self._pause_app()
            return
        self.sslobj.write(data)
        if not self.batching:
            self.raw.write(self.outgoing.read())

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))  # one record, not one per piece

    def _pump(self) -> None:
        """Encrypt the waiting writes while the TCP transport takes them."""
        backlog = self.backlog
        while backlog and not self.raw_paused and not self.raw.is_closing():
            view = backlog[0]
            self.sslobj.write(view[:CHUNK])
            if len(view) > CHUNK:
                backlog[0] = view[CHUNK:]
            else:
                backlog.popleft()
            self.raw.write(self.outgoing.read())
        if not backlog and self.close_after_backlog:
            self.close_after_backlog = False
            self._shutdown()

    def _pause_app(self) -> None:
        if not self.app_paused and (self.backlog or self.raw_paused) and self.app is not None:
            self.app_paused = True
            self.app.pause_writing()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.backlog:
            self.close_after_backlog = True  # after what is waiting
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            self.sslobj.unwrap()  # raises WantRead: the client's close_notify is not awaited
        self._flush()
        raw = self.raw
        if raw.is_closing() or not raw.can_write_eof():
            raw.close()
            return
        # A lingering close: FIN after what is written, then read (and drop) what the client
        # still sends until it closes too. Closing at once with its data unread would make the
        # kernel answer RST, and the client could lose our last answer or GOAWAY with it.
        raw.write_eof()
        if self.read_paused:
            raw.resume_reading()
        self.linger = self.loop.call_later(LINGER, raw.close)

    def abort(self) -> None:
        self.closing = True
        self.backlog.clear()
        self.raw.abort()

    def is_closing(self) -> bool:
        return self.closing  # set by every close, abort and connection_lost

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.raw.resume_reading()
            if self.incoming.pending or self.sslobj.pending():
                self.loop.call_soon(self._read_later)  # what came before the pause

    def is_reading(self) -> bool:
        return not self.read_paused

    def get_write_buffer_size(self) -> int:
        size = int(self.raw.get_write_buffer_size())
        if self.backlog:  # usually empty: h2 asks after every answer
            size += sum(len(v) for v in self.backlog)
        return size

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.sslobj
        if name == "sslcontext":
            return self.sslobj.context
        if name == "cipher":
            return self.sslobj.cipher()
        if name == "peercert":
            return self.sslobj.getpeercert()
        return self.raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.app
