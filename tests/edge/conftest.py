"""Fixtures for edge integration tests: the real origin, a scripted origin, edge nodes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from edge.config.settings import load_config
from edge.engine.engine import Engine
from edge.server import EdgeServer
from origin.app import STATS_KEY
from origin.app import create_app as create_origin
from origin.settings import OriginSettings

ROOT = Path(__file__).resolve().parents[2]
EDGE_YAML = ROOT / "config" / "edge.yaml"
STANDARD_YAML = ROOT / "config" / "standard.yaml"
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
async def origin(aiohttp_server: Any, tmp_path: Path) -> TestServer:
    """The real Woodytoys origin, fast: tiny delays, no throttle."""
    settings = OriginSettings(
        db=str(tmp_path / "woody.sqlite3"),
        heavy_seconds=0.3,
        db_seconds=0.2,
        static_rate=0,
        access_log=False,
    )
    return await aiohttp_server(create_origin(settings))


def origin_hits(server: TestServer, path: str) -> int:
    """How many requests the in-process origin received for a path (query excluded)."""
    return server.app[STATS_KEY].paths[path]


@dataclass
class Scripted:
    """An origin whose answers the test writes: path -> (status, headers, body)."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    seen: list[web.Request] = field(default_factory=list)
    handlers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )
    delay: float = 0.0

    def set(self, path: str, status: int = 200, body: bytes = b"ok", **headers: str) -> None:
        self.routes[path] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.seen.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.path in self.handlers:
            return await self.handlers[request.path](request)
        status, headers, body = self.routes.get(request.path, (404, {}, b"no route"))
        return web.Response(status=status, headers=headers, body=body)


@pytest.fixture
async def scripted(aiohttp_server: Any) -> tuple[Scripted, TestServer]:
    script = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    server = await aiohttp_server(app)
    return script, server


class EdgeHandle:
    """An edge node started in this process, as `python -m edge serve` would start it."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server
        self.engine = server.node

    @property
    def port(self) -> int:
        return self.server.port

    def make_url(self, path: str) -> URL:
        return URL(f"http://127.0.0.1:{self.server.port}{path}")


EdgeFactory = Callable[..., Awaitable[EdgeHandle]]


@pytest.fixture
async def make_edge() -> AsyncIterator[EdgeFactory]:
    """Start edge nodes in this process, as `edge serve` runs a worker:
    make_edge(origin_url, config=..., **overrides on EdgeConfig)."""
    started: list[EdgeServer] = []

    async def start(origin_url: str, config: Path = EDGE_YAML, **overrides: Any) -> EdgeHandle:
        cfg = load_config(config)
        overrides.setdefault("purge_token", TOKEN)
        cfg = replace(cfg, origins=(origin_url.rstrip("/"),), port=0, **overrides)
        server = EdgeServer(cfg)
        await server.start()
        started.append(server)
        return EdgeHandle(server)

    yield start
    # Stopped together: a node's stop may wait for its open connections (SHUTDOWN_SECONDS).
    await asyncio.gather(*(server.stop() for server in started))


def node_of(server: EdgeHandle) -> Engine:
    return server.engine


def url(server: EdgeHandle | TestServer, path: str) -> str:
    return str(server.make_url(path))
