"""Running edge processes: uvloop, N workers on one port (SO_REUSEPORT), graceful stop.

Each worker runs the aiohttp application on a private Unix socket and, on the public
port, the front door (`edge.front`) that answers plain hits itself and relays the rest.
`--no-front` serves the aiohttp application on the public port directly instead.

SIGTERM or Ctrl-C: each worker stops accepting, lets in-flight responses finish (a 5 MB
download in progress completes, within `SHUTDOWN_SECONDS`), then exits. Swarm rolling
updates with `order: start-first` lose no request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from edge.access_log import ACCESS, EdgeAccessLogger
from edge.app import GUARD, NODE, create_app
from edge.config import EdgeConfig
from edge.front import FrontProtocol, HeadCache, make_limits, tick_forever
from edge.proxy import EdgeNode

log = logging.getLogger("edge.server")
SHUTDOWN_SECONDS = 30.0


def _runner(cfg: EdgeConfig, access_log: bool) -> web.AppRunner:
    return web.AppRunner(
        create_app(cfg),
        handle_signals=False,
        access_log=ACCESS if access_log else None,
        access_log_class=EdgeAccessLogger,
        keepalive_timeout=cfg.keepalive_timeout,
        max_line_size=cfg.max_line_size,
        max_field_size=cfg.max_field_size,
        auto_decompress=False,  # request bodies pass through as the client sent them
        handler_cancellation=False,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )


class EdgeServer:
    """One edge process's listeners: the front door on the public port, the aiohttp
    application behind it (or on the public port itself with `front=False`)."""

    def __init__(self, cfg: EdgeConfig, *, front: bool = True, access_log: bool = False) -> None:
        self.cfg = cfg
        self.access_log = access_log
        self.front = front
        self.runner = _runner(cfg, access_log)
        self.connections: set[FrontProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self.relay_dir = Path(tempfile.mkdtemp(prefix="woody-edge-"))
        self.relay_path = str(self.relay_dir / "app.sock")
        self.port = cfg.port
        self._ticker: asyncio.Task[None] | None = None

    @property
    def node(self) -> EdgeNode:
        return self.runner.app[NODE]

    async def start(self, reuse_port: bool = False) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        await self.runner.setup()
        if not self.front:
            site = web.TCPSite(
                self.runner,
                cfg.host,
                cfg.port,
                reuse_port=reuse_port,
                backlog=2048,
            )
            await site.start()
            self.port = _bound_port(self.runner.addresses) or cfg.port
            return
        await web.UnixSite(self.runner, self.relay_path, backlog=2048).start()
        node = self.node
        heads = HeadCache(node)
        limits = make_limits(node)
        guard = self.runner.app[GUARD]
        self.server = await loop.create_server(
            lambda: FrontProtocol(
                node,
                heads,
                self.relay_path,
                self.connections,
                limits,
                guard,
                ACCESS if self.access_log else None,
            ),
            cfg.host,
            cfg.port,
            reuse_port=reuse_port,
            backlog=2048,
        )
        for sock in self.server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.port = sock.getsockname()[1]
        self._ticker = loop.create_task(tick_forever(self.connections))

    async def stop(self) -> None:
        """Stop accepting, let responses in flight finish, then close everything."""
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn.shutdown()
            for _ in range(int(SHUTDOWN_SECONDS / 0.05)):
                if not self.connections:
                    break
                await asyncio.sleep(0.05)
        if self._ticker is not None:
            self._ticker.cancel()
        await self.runner.cleanup()
        with contextlib.suppress(OSError):
            os.unlink(self.relay_path)
        with contextlib.suppress(OSError):
            os.rmdir(self.relay_dir)


def _bound_port(addresses: list[object]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


async def run_worker_async(
    cfg: EdgeConfig, reuse_port: bool, access_log: bool, front: bool
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = EdgeServer(cfg, front=front, access_log=access_log)
    try:
        await server.start(reuse_port)
        log.info("listening on %s:%s (front door %s)", cfg.host, cfg.port, "on" if front else "off")
        await stop.wait()
        log.info("stopping: no new connections; finishing responses in flight")
    finally:
        await server.stop()


def run_worker(cfg: EdgeConfig, reuse_port: bool, access_log: bool, front: bool = True) -> None:
    """One process: the edge on uvloop."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {cfg.node}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    uvloop.run(run_worker_async(cfg, reuse_port, access_log, front))


def serve(cfg: EdgeConfig, access_log: bool = False, front: bool = True) -> int:
    print(
        f"woody-edge {cfg.node}: http://{cfg.host}:{cfg.port}/ -> {', '.join(cfg.origins)}"
        f" ({cfg.workers} worker{'s' if cfg.workers > 1 else ''}, redis "
        f"{cfg.redis_url or 'off'}, purge {'on' if cfg.purge_token else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    if cfg.workers == 1:
        run_worker(cfg, reuse_port=False, access_log=access_log, front=front)
        return 0
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=run_worker, args=(cfg, True, access_log, front), daemon=False)
        for _ in range(cfg.workers)
    ]
    for w in workers:
        w.start()

    def forward(signum: int, _frame: object) -> None:
        for w in workers:
            if w.pid is not None and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for w in workers:
        w.join()
        code = code or (w.exitcode or 0)
    return code
