"""Reading decrypted TLS data into one buffer per worker.

uvloop's TLS transport hands plaintext to a plain `asyncio.Protocol` by asking OpenSSL for up
to 256 KiB into a new bytes object each time: with the mmap threshold the workers fix at 128 KiB
(`edge.server.keep_large_buffers_out_of_the_heap`), glibc maps it, shrinks it with mremap and
unmaps it, so every read of a small request cost three system calls and page faults (strace of
a worker under wrk: one mmap, mremap and munmap per request; about half the system time of an
HTTPS hit). Given a protocol with `get_buffer` that is not an `asyncio.Protocol` (uvloop's
test), the transport decrypts into the protocol's buffer instead.

The buffer is shared by the worker's connections: the transport fills it and calls
`buffer_updated` at once, on the one thread of the event loop, and the protocols copy out what
they keep (httptools hands its callbacks bytes; the h2 connection gets a bytes copy), so
nothing refers to it once `buffer_updated` returns.
"""

from __future__ import annotations

import asyncio

READ_SIZE = 64 * 1024  # four TLS records of 16 KiB, the most one record holds

_shared = memoryview(bytearray(READ_SIZE))


class SharedReadBuffer(asyncio.BufferedProtocol):
    """Mixed in after a connection class (`class C(Connection, SharedReadBuffer)`): its
    `data_received(bytes)` gets what the TLS transport decrypted."""

    def data_received(self, data: bytes) -> None:  # pragma: no cover - the connection's own
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        return _shared

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_shared[:nbytes].tobytes())
