"""Running edge processes: uvloop, N workers on one port (SO_REUSEPORT), graceful stop.

SIGTERM or Ctrl-C: each worker stops accepting, lets in-flight responses finish (a 5 MB
download in progress completes, within `shutdown_timeout`), then exits. Swarm rolling
updates with `order: start-first` lose no request.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys

from aiohttp import web

from edge.app import create_app
from edge.config import EdgeConfig

log = logging.getLogger("edge.server")


def run_worker(cfg: EdgeConfig, reuse_port: bool, access_log: bool) -> None:
    """One process: an aiohttp server on uvloop."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {cfg.node}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app = create_app(cfg)
    web.run_app(
        app,
        host=cfg.host,
        port=cfg.port,
        reuse_port=reuse_port,
        access_log=logging.getLogger("edge.access") if access_log else None,
        print=None,
        shutdown_timeout=30.0,
        handler_cancellation=False,
        keepalive_timeout=cfg.keepalive_timeout,
        loop=uvloop.new_event_loop(),
        max_line_size=cfg.max_line_size,
        max_field_size=cfg.max_field_size,
        auto_decompress=False,  # request bodies pass through as the client sent them
    )


def serve(cfg: EdgeConfig, access_log: bool = False) -> int:
    print(
        f"woody-edge {cfg.node}: http://{cfg.host}:{cfg.port}/ -> {', '.join(cfg.origins)}"
        f" ({cfg.workers} worker{'s' if cfg.workers > 1 else ''}, redis "
        f"{cfg.redis_url or 'off'}, purge {'on' if cfg.purge_token else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    if cfg.workers == 1:
        run_worker(cfg, reuse_port=False, access_log=access_log)
        return 0
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=run_worker, args=(cfg, True, access_log), daemon=False)
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
