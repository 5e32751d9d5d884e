"""An HTTP/1.1 answer whose body lies in a memfd (`edge.base.memfile`), written on plain TCP
with `os.sendfile`: the kernel references the file's pages instead of copying the body from
the worker's memory (the system time of a big hit is that copy: bench scenario o).

Why beneath the transport, and not `loop.sendfile`: the edge runs on uvloop, whose loop does
not implement `sendfile` (it raises NotImplementedError: uvloop 0.23), and asyncio's own
`loop.sendfile` does the same as here (waits for the transport's buffer to empty, then
`os.sendfile` on its socket). The rules that keep the transport's bytes in order:

- the head and the body go to the socket here, only once the transport has nothing buffered
  (what it buffered is older: it goes first); the connection writes nothing else until the
  body is out (`Http1Connection.body_out`: a pipelined request waits behind it);
- when the socket is full, `loop.add_writer` on a duplicate of its fd says when it drains (a
  loop refuses a reader or writer on a transport's own fd); level-triggered, so a wait for
  the transport's buffer to drain is a few turns of the loop, no timer;
- its end is a callback (`on_end`), made from the loop's writer callback: the connection
  answers what waits behind it in the same turn, as after an ordinary write;
- a client gone (EPIPE, ECONNRESET) or the connection lost (`cancel`) ends it as broken off,
  the duplicate fd unregistered then closed; the MemFile is held until then, so its fd is open
  for the whole send (`edge.base.memfile`: closed with its last user);
- without an fd to wait on (out of fds), the rest is an ordinary write on the transport.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from edge.base.memfile import MemFile

MIN_BYTES = 64 * 1024
"""Bodies this long or longer are sent from their file, shorter ones written: a guess that a
short copy costs less than a send's own steps (a dup, the writer's registration), not
measured: on this project's VM the spread between runs hid any difference at 64 KiB to 1 MiB
(docs/performance.md)."""


def socket_fd(transport: asyncio.BaseTransport) -> int:
    """The fd of a plain TCP transport's socket, or -1 (TLS encrypts in this process: its body
    is written; a transport without a socket)."""
    if transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1


class FileOut:
    """One answer's head and file body, written to the socket `fd` beneath `transport`;
    `on_end(True)` once it is all out, `on_end(False)` when it broke off (a client gone,
    `cancel`), unless `start` said it was out at once."""

    __slots__ = (
        "count",
        "dup",
        "ended",
        "fd",
        "file",
        "head",
        "loop",
        "offset",
        "on_end",
        "transport",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        fd: int,
        head: bytes,
        file: MemFile,
        offset: int,
        count: int,
        on_end: Callable[[bool], None],
    ) -> None:
        self.loop = loop
        self.transport = transport
        self.fd = fd
        self.head = memoryview(head)
        self.file = file  # held: its fd stays open until the body is out
        self.offset = offset
        self.count = count
        self.on_end = on_end
        self.dup = -1
        self.ended = False

    def start(self) -> bool:
        """Write what the socket takes now; True when the answer is out, else it goes on as
        the socket drains, and `on_end` says how it ended."""
        try:
            if self._push():
                self.ended = True
                return True
        except OSError:
            self.loop.call_soon(self._end, False)  # after the caller knows it goes on
            return False
        try:
            self.dup = os.dup(self.fd)
        except OSError:
            # No fd to wait on (out of fds): the rest is an ordinary write, after what the
            # transport holds, and nothing is written beneath it any more.
            rest = memoryview(self.file)[self.offset : self.offset + self.count]
            self.transport.writelines((self.head, rest))
            self.ended = True
            return True
        self.loop.add_writer(self.dup, self._writable)
        return False

    def cancel(self) -> None:
        """The connection is lost: stop sending."""
        self._end(False)

    def _writable(self) -> None:
        try:
            if self._push():
                self._end(True)
        except OSError:
            self._end(False)

    def _push(self) -> bool:
        """The head, then the file, as far as the socket takes them; True when all is out.
        Nothing while the transport still holds bytes written before."""
        if self.transport.get_write_buffer_size():
            return False
        try:
            while self.head:
                sent = os.write(self.fd, self.head)
                self.head = self.head[sent:]
            while self.count:
                sent = os.sendfile(self.fd, self.file.fd, self.offset, self.count)
                if sent == 0:
                    raise ConnectionResetError("the socket took nothing")
                self.offset += sent
                self.count -= sent
        except BlockingIOError:
            return False
        return True

    def _end(self, ok: bool) -> None:
        if self.dup >= 0:
            # Unregistered before it is closed: the loop must not poll a closed fd.
            self.loop.remove_writer(self.dup)
            os.close(self.dup)
            self.dup = -1
        if not self.ended:
            self.ended = True
            self.on_end(ok)
