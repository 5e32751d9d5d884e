"""Running the origin: one process on uvloop, or N replicas sharing a port (SO_REUSEPORT)."""

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
from multiprocessing.process import BaseProcess
from types import FrameType

import uvloop
from aiohttp import web

from origin.app import create_app
from origin.assets import ensure_image
from origin.db import DatabaseError, open_database
from origin.settings import STATIC_DIR, OriginSettings

log = logging.getLogger("origin")

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
SHUTDOWN_TIMEOUT = 2.0


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        force=True,
    )


def prepare(settings: OriginSettings) -> None:
    """What a serving process needs before it listens: the image and the database schema."""
    if settings.static_dir == STATIC_DIR:
        path, written = ensure_image()
        if written:
            log.info("generated %s", path)
    open_database(settings.db_url).init_sync()


async def _serve(settings: OriginSettings, reuse_port: bool, label: str) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, reuse_port=reuse_port or None, backlog=1024
        )
        try:
            await site.start()
        except OSError as exc:
            raise SystemExit(
                f"origin: cannot listen on {settings.host}:{settings.port}: {_reason(exc)}"
            ) from None
        log.info(
            "%sserving the Woodytoys shop on http://%s:%d (db %s, heavy %gs, db %gs, "
            "static %s, api cache %s)",
            label,
            settings.host,
            settings.port,
            settings.db_url.describe(),
            settings.heavy_seconds,
            settings.db_seconds,
            f"{settings.static_rate} B/s" if settings.static_rate else "unthrottled",
            settings.api_cache or "off",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("%sstopping", label)
    finally:
        await runner.cleanup()


def run_single(settings: OriginSettings, reuse_port: bool = False, label: str = "") -> int:
    """Serve in this process until SIGINT/SIGTERM; the exit status."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, reuse_port, label))
    except DatabaseError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _replica_main(settings: OriginSettings, index: int) -> None:
    setup_logging()
    sys.exit(run_single(settings, reuse_port=True, label=f"replica {index}: "))


def _check_port(settings: OriginSettings) -> None:
    """Fail early, in the parent, when the port is taken by a socket we cannot share."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise SystemExit(
                f"origin: cannot listen on {settings.host}:{settings.port}: {_reason(exc)}"
            ) from None


def supervise(settings: OriginSettings) -> int:
    """Run `settings.replicas` serving processes on one port; restart one that dies; stop them
    all on SIGINT/SIGTERM."""
    if settings.port == 0:
        raise SystemExit("origin: --replicas needs a fixed --port (not 0)")
    _check_port(settings)
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def start(index: int) -> tuple[BaseProcess, float]:
        proc = ctx.Process(
            target=_replica_main, args=(settings, index), name=f"woody-origin-{index}"
        )
        proc.start()
        return proc, time.monotonic()

    children = {i: start(i) for i in range(1, settings.replicas + 1)}
    log.info("supervising %d replicas on port %d", settings.replicas, settings.port)
    quick_deaths = 0
    status = 0
    while not stopping:
        time.sleep(0.2)
        for index, (proc, started) in list(children.items()):
            if proc.is_alive() or stopping:
                continue
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < 3 else 0
            log.warning("replica %d (pid %s) exited with %s", index, proc.pid, proc.exitcode)
            if quick_deaths >= 3:
                log.error("replicas keep dying at start: giving up")
                stopping, status = True, 1
                break
            children[index] = start(index)
    log.info("stopping %d replicas", len(children))
    for proc, _ in children.values():
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT + 3
    for proc, _ in children.values():
        proc.join(max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            log.warning("replica pid %s did not stop: killing it", proc.pid)
            proc.kill()
            proc.join(1)
    return status


def serve(settings: OriginSettings) -> int:
    try:
        prepare(settings)
    except DatabaseError as exc:
        log.error("%s", exc)
        return 2
    if settings.replicas > 1:
        return supervise(settings)
    return run_single(settings)
