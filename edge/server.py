"""Running edge processes: uvloop, N workers on one port (SO_REUSEPORT), graceful stop.

The supervisor prepares the node tier once (`NodeTier.prepare`: version, corruption and
ownership checks), then forks the workers; each opens the node tier, its Redis and origin
clients, and serves the port with one `Engine` behind `edge.http1`. A worker that dies is
replaced. SIGTERM or Ctrl-C: each worker stops accepting, lets in-flight answers finish
(a 5 MB download in progress completes, within `SHUTDOWN_SECONDS`), then exits.
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
import time
from typing import Any

from edge.access_log import ACCESS
from edge.config import EdgeConfig
from edge.engine import Engine
from edge.http1 import Http1Connection, tick_forever
from edge.store_memory import MemoryTier
from edge.tiers import Tiers
from edge.upstream import Upstream

log = logging.getLogger("edge.server")
SHUTDOWN_SECONDS = 30.0


def prepare_node_tier(cfg: EdgeConfig) -> tuple[str | None, bool]:
    """Create or check the node tier's directory once per node, before any worker opens it.
    Returns (path, whether this process made it and removes it at the end)."""
    if not cfg.node_cache_enabled:
        return None, False
    from edge.store_node import NodeTier

    path = NodeTier.prepare(cfg.node_cache_path, cfg.node)
    return path, cfg.node_cache_path is None


class EdgeServer:
    """One worker's listener and engine. `node_path`: the node tier prepared by the
    supervisor (None: prepare it here, as a single in-process server does)."""

    def __init__(
        self, cfg: EdgeConfig, *, access_log: bool = False, node_path: str | None = None
    ) -> None:
        self.cfg = cfg
        self.access_log = access_log
        self.node_path = node_path
        self.owns_node_path = False
        self.server: asyncio.AbstractServer | None = None
        self.engine: Engine | None = None
        self.port = cfg.port
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self, reuse_port: bool = False) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        node = None
        if cfg.node_cache_enabled:
            from edge.store_node import NodeTier

            if self.node_path is None:
                self.node_path, self.owns_node_path = prepare_node_tier(cfg)
            node = NodeTier(
                self.node_path,
                cfg.node_cache_bytes,
                cfg.memory_max_object_bytes,
                refuse_late=True,
            )
        # refuse_late: a fill that raced a purge (requested before it) is not stored
        hot = MemoryTier(cfg.hot_bytes, cfg.memory_max_object_bytes, refuse_late=True)
        redis = bus = None
        if cfg.redis_url:
            from edge.purge_bus import PurgeBus
            from edge.store_redis import RedisTier

            redis = RedisTier(
                cfg.redis_url,
                prefix=cfg.redis_prefix,
                timeout=cfg.redis_timeout,
                node=cfg.node,
                max_object_bytes=cfg.memory_max_object_bytes,
                refuse_late=True,
            )
            await redis.start()
            bus = PurgeBus(
                cfg.redis_url,
                prefix=cfg.redis_prefix,
                node=cfg.node,
                bound=cfg.purge_staleness_bound,
                timeout=cfg.redis_timeout,
            )
        upstream = Upstream(
            cfg.origins,
            cfg.connect_timeout,
            cfg.read_timeout,
            down_seconds=cfg.origin_down,
            idle_seconds=cfg.origin_idle,
        )
        await upstream.start()
        tiers = Tiers(hot, node, redis, bus)
        engine = Engine(cfg, tiers, upstream)
        engine.access_log = ACCESS if self.access_log else None
        self.engine = engine
        if bus is not None:
            # A node restarted on its disk tier knows the last purge it applied: the bus
            # resyncs at once if Redis has moved on since.
            bus.applied_generation = engine.purger.generation_before_restart()
            bus.on_connected = engine.purger.remember_generation
            bus.start(engine.purger.apply_announced)
        self.server = await loop.create_server(
            lambda: Http1Connection(engine),
            cfg.host,
            cfg.port,
            reuse_port=reuse_port,
            backlog=2048,
        )
        for sock in self.server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.port = sock.getsockname()[1]
        self._tasks = [
            loop.create_task(tick_forever(engine.guard.open)),
            loop.create_task(tiers.watch(), name="tiers-watch"),
        ]

    @property
    def node(self) -> Engine:
        assert self.engine is not None, "EdgeServer.start() was not awaited"
        return self.engine

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish, then close everything."""
        engine = self.engine
        if self.server is not None:
            self.server.close()
        if engine is not None:
            for conn in list(engine.guard.open):
                conn.shutdown()
            deadline = time.monotonic() + SHUTDOWN_SECONDS
            while engine.guard.open and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        if engine is None:
            return
        tiers = engine.tiers
        await engine.collapser.drain()
        await tiers.drain()
        await engine.upstream.close()
        if tiers.bus is not None:
            await tiers.bus.close()
        if tiers.redis is not None:
            await tiers.redis.close()
        if tiers.node is not None:
            tiers.node.close()
            if self.owns_node_path and self.node_path is not None:
                from edge.store_node import NodeTier

                NodeTier.remove(self.node_path)


async def run_worker_async(
    cfg: EdgeConfig, reuse_port: bool, access_log: bool, node_path: str | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = EdgeServer(cfg, access_log=access_log, node_path=node_path)
    try:
        await server.start(reuse_port)
        log.info("listening on %s:%s", cfg.host, cfg.port)
        await stop.wait()
        log.info("stopping: no new connections; finishing answers in flight")
    finally:
        await server.stop()


def run_worker(
    cfg: EdgeConfig, reuse_port: bool, access_log: bool, node_path: str | None = None
) -> None:
    """One process: the edge on uvloop."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {cfg.node}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    uvloop.run(run_worker_async(cfg, reuse_port, access_log, node_path))


def serve(cfg: EdgeConfig, access_log: bool = False) -> int:
    try:
        node_path, owned = prepare_node_tier(cfg)
    except RuntimeError as exc:  # NodeTierError: the tier cannot be used as configured
        print(f"woody-edge: {exc}", file=sys.stderr)
        return 2
    where = "off"
    if node_path is not None:
        where = f"{node_path}{' (memory)' if owned else ' (disk)'}"
    print(
        f"woody-edge {cfg.node}: http://{cfg.host}:{cfg.port}/ -> {', '.join(cfg.origins)}"
        f" ({cfg.workers} worker{'s' if cfg.workers > 1 else ''}, node cache {where}, redis "
        f"{cfg.redis_url or 'off'}, purge {'on' if cfg.purge_token else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    try:
        if cfg.workers == 1:
            run_worker(cfg, reuse_port=False, access_log=access_log, node_path=node_path)
            return 0
        return _supervise(cfg, access_log, node_path)
    finally:
        if owned and node_path is not None:
            from edge.store_node import NodeTier

            NodeTier.remove(node_path)


QUICK_EXIT_SECONDS = 5.0
MAX_QUICK_EXITS = 5


def _supervise(cfg: EdgeConfig, access_log: bool, node_path: str | None) -> int:
    """Run `cfg.workers` worker processes; replace one that dies; stop them all on a signal.
    A worker that dies within QUICK_EXIT_SECONDS of its start is replaced after a growing
    pause; MAX_QUICK_EXITS such deaths in a row (the port is taken, say) stop the node."""
    ctx = multiprocessing.get_context("fork")
    stopping = False
    quick_exits = 0

    def spawn() -> tuple[Any, float]:
        w = ctx.Process(target=run_worker, args=(cfg, True, access_log, node_path), daemon=False)
        w.start()
        return w, time.monotonic()

    workers = [spawn() for _ in range(cfg.workers)]

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w, _ in workers:
            if w.pid is not None and w.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while workers:
        for i, (w, started) in enumerate(list(workers)):
            w.join(0.2)
            if w.is_alive():
                continue
            if stopping:
                workers.remove((w, started))
                code = code or (w.exitcode or 0)
                continue
            quick = time.monotonic() - started < QUICK_EXIT_SECONDS
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= MAX_QUICK_EXITS:
                print(
                    f"woody-edge: workers keep exiting at start (last exit code {w.exitcode});"
                    " stopping the node",
                    file=sys.stderr,
                    flush=True,
                )
                forward(signal.SIGTERM, None)
                code = 1
                continue
            log.warning("worker %s exited with %s: starting another", w.pid, w.exitcode)
            if quick:
                time.sleep(min(5.0, 0.25 * 2**quick_exits))
            workers[i] = spawn()
    return code
