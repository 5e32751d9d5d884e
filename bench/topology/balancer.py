"""The routing-mesh stand-in: a round-robin TCP balancer in front of the edge nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from bench.topology.config import LOOPBACK


class RoundRobinBalancer:
    """A TCP balancer: each new connection goes to the next backend that accepts it.

    Like the Swarm routing mesh it balances connections, not requests: a keep-alive client stays
    on one node. A backend that refuses the connection is skipped, so a stopped node is routed
    around.
    """

    def __init__(
        self, backends: Sequence[tuple[str, int]], host: str = LOOPBACK, port: int = 0
    ) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = list(backends)
        self.host = host
        self.port = port
        self.counts = [0] * len(self.backends)
        """Connections handed to each backend so far."""
        self._next = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            index = self._next
            self._next = (self._next + 1) % len(self.backends)
            host, port = self.backends[index]
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                continue
            self.counts[index] += 1
            return index, reader, writer
        return None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        backend_w: asyncio.StreamWriter | None = None
        try:
            picked = await self._connect()
            if picked is None:
                return
            _, backend_r, backend_w = picked
            self._writers.add(backend_w)
            await asyncio.gather(
                _pipe(client_r, backend_w), _pipe(backend_r, client_w), return_exceptions=True
            )
        finally:
            for writer in (client_w, backend_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()
