"""Running edge processes: uvloop, N workers on one port (SO_REUSEPORT), graceful stop.

The supervisor prepares the node tier once (`NodeTier.prepare`: version, corruption and
ownership checks), then forks the workers; each opens the node tier, its Redis and origin
clients, and serves the port with one `Engine` behind `edge.protocol.http1`. A worker that dies is
replaced. SIGTERM or Ctrl-C: each worker stops accepting, lets in-flight answers finish
(a 5 MB download in progress completes, within `SHUTDOWN_SECONDS`), then exits.

SIGHUP: reload the configuration without a restart (`edge.ops.reload`): the supervisor reads
the file first (a bad one is refused and logged, and nothing is signalled), then passes
SIGHUP to every worker, and each applies it to its next requests (`EdgeServer.reload`).
Every worker publishes its counters once a second for the whole node's numbers
(`edge.ops.nodeview`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

from edge.base.shutdown import close_within
from edge.config.redis_url import redacted
from edge.config.settings import EdgeConfig
from edge.engine.access_log import ACCESS
from edge.engine.engine import Engine
from edge.ops import admin, purge_api
from edge.ops.nodeview import NodeView, WorkerBoard
from edge.ops.reload import ConfigSource, Reloader, reloadable
from edge.protocol.http1 import tick_forever
from edge.protocol.tls import CertStore, TlsError, plain_factory, start_listener
from edge.store import backends
from edge.store.storage import Place
from edge.upstream.client import Upstream

log = logging.getLogger("edge.server")
SHUTDOWN_SECONDS = 30.0


def prepare_node_tier(cfg: EdgeConfig) -> tuple[str | None, bool]:
    """Create or check the node tier's directory once per node, before any worker opens it.
    Returns (path, whether this process made it and removes it at the end)."""
    if not cfg.node_cache_enabled:
        return None, False
    from edge.store.node import NodeTier

    path = NodeTier.prepare(cfg.node_cache_path, cfg.node)
    return path, cfg.node_cache_path is None


class EdgeServer:
    """One worker's listener and engine. `node_path`: the node tier prepared by the
    supervisor (None: prepare it here, as a single in-process server does)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        *,
        access_log: bool | str = False,
        node_path: str | None = None,
        source: ConfigSource | None = None,
        supervisor: int | None = None,
        certs: CertStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.access_log = bool(access_log)
        self.access_format = access_log if isinstance(access_log, str) else "text"
        self.node_path = node_path
        self.source = source
        """Where the configuration came from, to read it again on reload (None: this
        server was built from a config object alone, and cannot reload)."""
        self.supervisor = supervisor
        """The supervisor's pid when this is one of its workers (a reload asked over HTTP
        is passed to it, so that every worker reloads)."""
        self.reloader: Reloader | None = None
        self.view: NodeView | None = None
        self.owns_node_path = False
        self.server: asyncio.AbstractServer | None = None
        self.engine: Engine | None = None
        self.port = cfg.port
        self._tasks: list[asyncio.Task[Any]] = []
        self.certs = certs
        """The TLS certificates; given by `serve` when built before the workers fork, so
        that every worker shares the listener context's session-ticket keys."""
        self.tls_server: asyncio.Server | None = None
        self.tls_port: int | None = None

    async def start(self, reuse_port: bool = False) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        if cfg.node_cache_enabled and self.node_path is None:
            self.node_path, self.owns_node_path = prepare_node_tier(cfg)
        # The hot copy and every storage backend the configuration turns on (edge.store.backends)
        tiers = await backends.build(cfg, Place(self.node_path))
        bus = tiers.bus
        upstream = Upstream.configured(cfg)
        await upstream.start()
        engine = Engine(cfg, tiers, upstream)
        engine.admin = admin.serve  # the engine's door to edge.ops
        engine.purge_method = purge_api.purge_method
        engine.access_log = ACCESS if self.access_log else None
        # Every answer is timed for the access log; without it, only those that wait (a
        # fresh hit is answered in the turn it was parsed in: the first latency bucket).
        engine.timed = engine.access_log is not None
        engine.access_format = self.access_format
        self.engine = engine
        view_redis = None
        if cfg.redis_url:
            from edge.store.purge_bus import make_client

            view_redis = make_client(cfg.redis_url, 1.0, f"{cfg.redis_prefix}/{cfg.node}/view")
        self.view = engine.view = NodeView(
            engine,
            WorkerBoard.for_node_tier(self.node_path if cfg.node_cache_enabled else None),
            view_redis,
            cfg.redis_prefix,
        )
        if self.source is not None:
            self.reloader = engine.reloader = Reloader(self.source, engine, self.supervisor)
        if bus is not None:
            # A node restarted on its disk tier knows the last purge it applied: the bus
            # resyncs at once if Redis has moved on since.
            bus.applied_generation = engine.purger.generation_before_restart()
            await bus.baseline()  # a fresh node: the generation before it serves anything
            bus.on_connected = engine.purger.remember_generation
            bus.start(engine.purger.apply_announced)
        self.server = await loop.create_server(
            plain_factory(engine),  # Http1Connection (redirecting: edge.protocol.tls)
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
            loop.create_task(tiers.watch(each_tick=engine.collect_hits), name="tiers-watch"),
        ]
        if cfg.tls is not None:  # HTTPS beside it (edge.protocol.tls): HTTP/1.1 and h2
            self.certs = self.certs or CertStore(cfg.tls)
            self.tls_server = await start_listener(engine, self.certs, cfg.host, reuse_port)
            self.tls_port = self.tls_server.sockets[0].getsockname()[1]
            self._tasks.append(loop.create_task(self.certs.watch(), name="tls-watch"))
            if self.reloader is not None:
                self.reloader.hooks.append(self._tls_reloaded)

        self.view.start()

    async def _tls_reloaded(self, cfg: EdgeConfig) -> None:
        """A reload's `tls:` section (what `edge.ops.reload` lets change): its certificates."""
        if self.certs is not None and cfg.tls is not None:
            self.certs.reconfigure(cfg.tls)

    def reload_certificates(self) -> None:
        """SIGHUP: read the TLS certificates again (new handshakes use them)."""
        if self.certs is not None:
            self.certs.reload("SIGHUP")

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration and apply it to the next requests (SIGHUP; see
        `edge.ops.reload`). The one place a reload runs in a worker; SIGHUP also reads the TLS
        certificates again (`reload_certificates`); anything else a reload must renew goes
        into `self.reloader.hooks`, called with the new configuration once it is applied."""
        if self.reloader is None:
            return {"ok": False, "error": "this server was not started from a file"}
        result = await self.reloader.reload()
        self.cfg = self.node.cfg
        return result

    @property
    def node(self) -> Engine:
        assert self.engine is not None, "EdgeServer.start() was not awaited"
        return self.engine

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish, then close everything."""
        engine = self.engine
        if self.server is not None:
            self.server.close()
        if self.tls_server is not None:
            self.tls_server.close()
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
        if self.view is not None:
            await self.view.stop()
            if self.view.redis is not None:
                await close_within(self.view.redis.aclose(), "node view: Redis client")
        if self.reloader is not None:
            await self.reloader.close()
        tiers = engine.tiers
        await engine.collapser.drain()
        await engine.images.close()  # the conversion processes
        await tiers.drain()
        await engine.upstream.close()
        await tiers.close()
        if self.owns_node_path and self.node_path is not None:
            from edge.store.node import NodeTier

            WorkerBoard.remove(self.node_path)
            NodeTier.remove(self.node_path)


async def run_worker_async(
    cfg: EdgeConfig,
    reuse_port: bool,
    access_log: bool | str,
    node_path: str | None,
    source: ConfigSource | None = None,
    supervisor: int | None = None,
    certs: CertStore | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = EdgeServer(
        cfg,
        access_log=access_log,
        node_path=node_path,
        source=source,
        supervisor=supervisor,
        certs=certs,
    )
    reloads: set[asyncio.Task[Any]] = set()

    def hangup() -> None:
        server.reload_certificates()
        task = loop.create_task(server.reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await server.start(reuse_port)
        # What start-up made (config, tables, module objects) lives as long as the worker:
        # out of the collector's scans, which every new TLS connection's garbage triggers.
        gc.freeze()
        trimmer = loop.create_task(give_back_freed_heap(), name="malloc-trim")
        log.info("listening on %s:%s", cfg.host, cfg.port)
        await stop.wait()
        log.info("stopping: no new connections; finishing answers in flight")
        trimmer.cancel()
    finally:
        await server.stop()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)


def keep_large_buffers_out_of_the_heap() -> None:
    """glibc raises its mmap threshold after each large free (up to 32 MB): past that, the
    bodies of 1 MB answers come from the heap, whose fragments stay resident after they are
    freed. A fixed threshold keeps every buffer over 128 KB in its own mapping, returned to
    the system when freed (measured: 10,000 distinct 1 MB objects through a 64 MB node)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own policy applies
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)


TRIM_SECONDS = 10.0


def give_back_free_heap_pages() -> bool:
    """glibc returns the heap's free pages to the system only from its top: what was freed
    below a chunk still in use stays resident. malloc_trim(0) gives back every free page.
    False when the C library is not glibc (nothing was given back)."""
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    trim(0)
    return True


async def give_back_freed_heap(every: float = TRIM_SECONDS) -> None:
    """A worker's heap, trimmed every `every` seconds: after a burst of large requests (800
    KB heads: their field values are heap chunks), what was freed stays resident until then
    (measured: 200 such requests left a worker 12.7 MiB larger; after the trim, 0.6 MiB; the
    trim took 2.6 ms, 0.1 ms with nothing to give back)."""
    if not give_back_free_heap_pages():
        return
    while True:
        await asyncio.sleep(every)
        give_back_free_heap_pages()


def run_worker(
    cfg: EdgeConfig,
    reuse_port: bool,
    access_log: bool | str,
    node_path: str | None = None,
    source: ConfigSource | None = None,
    supervisor: int | None = None,
    certs: CertStore | None = None,
) -> None:
    """One process: the edge on uvloop."""
    import uvloop

    keep_large_buffers_out_of_the_heap()
    # Until the loop's handler is installed, a SIGHUP (reload) must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {cfg.node}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    uvloop.run(run_worker_async(cfg, reuse_port, access_log, node_path, source, supervisor, certs))


def serve(
    cfg: EdgeConfig,
    access_log: bool | str = False,
    source: ConfigSource | None = None,
    pid_file: str | None = None,
) -> int:
    """Run the node in the foreground. `access_log`: False, True or "text" (the text
    format), "json"; `source`: how to read the configuration again on SIGHUP;
    `pid_file`: where to write this process's pid (for `woody-edge reload`)."""
    certs = None
    if cfg.tls is not None:
        # Built before the workers fork (a missing file or a key that does not match is said
        # now): they inherit one listener context, so a session ticket one worker issued is
        # good on the others (RFC 8446 section 4.6.1; nginx makes its keys in the master too).
        try:
            certs = CertStore(cfg.tls)
        except TlsError as exc:
            print(f"woody-edge: tls.certificates: {exc}", file=sys.stderr)
            return 2
    try:
        node_path, owned = prepare_node_tier(cfg)
    except RuntimeError as exc:  # NodeTierError: the tier cannot be used as configured
        print(f"woody-edge: {exc}", file=sys.stderr)
        return 2
    where = "off"
    if node_path is not None:
        where = f"{node_path}{' (memory)' if owned else ' (disk)'}"
    print(
        f"woody-edge {cfg.node}: http://{cfg.host}:{cfg.port}/"
        + (f" https://{cfg.host}:{cfg.tls.port}/" if cfg.tls else "")
        + f" -> {', '.join(cfg.origins)}"
        f" ({cfg.workers} worker{'s' if cfg.workers > 1 else ''}, node cache {where}, redis "
        f"{redacted(cfg.redis_url) if cfg.redis_url else 'off'}, "
        f"purge {'on' if cfg.purge_token else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        if cfg.workers == 1:
            run_worker(cfg, False, access_log, node_path, source, certs=certs)
            return 0
        return _supervise(cfg, access_log, node_path, source, certs)
    finally:
        if pid_file:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
        if node_path is not None:
            from edge.store.node import NodeTier

            WorkerBoard.remove(node_path)
            if owned:
                NodeTier.remove(node_path)
            else:
                NodeTier.release(node_path, cfg.node)


QUICK_EXIT_SECONDS = 5.0
MAX_QUICK_EXITS = 5


def _supervise(
    cfg: EdgeConfig,
    access_log: bool | str,
    node_path: str | None,
    source: ConfigSource | None,
    certs: CertStore | None = None,
) -> int:
    """Run `cfg.workers` worker processes; replace one that dies; stop them all on a signal;
    on SIGHUP, check the configuration and have every worker reload it (and its TLS
    certificates). A worker that dies within QUICK_EXIT_SECONDS of its start is replaced
    after a growing pause; MAX_QUICK_EXITS such deaths in a row (the port is taken, say)
    stop the node."""
    ctx = multiprocessing.get_context("fork")
    stopping = False
    quick_exits = 0
    me = os.getpid()

    def spawn() -> tuple[Any, float]:
        w = ctx.Process(
            target=run_worker,
            args=(cfg, True, access_log, node_path, source, me, certs),
            daemon=False,
        )
        # The free chunks of the supervisor's heap (what importing and reading the
        # configuration freed) are where a worker's first allocations go: left resident,
        # each worker copies those pages on its first write and the supervisor keeps the
        # originals it never uses again. Given back before the fork, a worker starts them
        # from zero pages (measured on a 2-worker node: its PSS 63 -> 60 MiB idle, the
        # supervisor's 17-18 -> 14-15).
        give_back_free_heap_pages()
        w.start()
        return w, time.monotonic()

    # What the supervisor made so far is shared with the workers page by page: kept out of
    # the cyclic collector, their collections do not write to (and so copy) those pages.
    gc.freeze()
    workers = [spawn() for _ in range(cfg.workers)]

    def signal_workers(signum: int) -> None:
        for w, _ in workers:
            if w.pid is not None and w.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signum)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        signal_workers(signal.SIGTERM)

    def hangup(signum: int, _frame: object) -> None:
        nonlocal cfg
        from edge.config.settings import ConfigError

        say = f"woody-edge {cfg.node}: reload"
        if certs is not None:  # what a worker started from now on begins with
            certs.reload("SIGHUP")
        if source is None:
            print(f"{say}: not started from a file; TLS certificates only", file=sys.stderr)
            signal_workers(signal.SIGHUP)
            return
        try:
            new = source.load()
        except ConfigError as exc:
            print(
                f"{say} refused: {exc}; the running configuration stays",
                file=sys.stderr,
                flush=True,
            )
            return
        print(f"{say}: {new.source} is valid; passing SIGHUP to the workers", file=sys.stderr)
        cfg = reloadable(cfg, new)[0]  # workers started from now on start with it
        signal_workers(signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, hangup)
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
