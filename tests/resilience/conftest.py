"""Fixtures of the resilience tests: scripted origins, a hanging origin, in-process edges."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.config.settings import load_config
from edge.server import EdgeServer
from tests.edge.conftest import EdgeHandle
from tests.resilience.helpers import EDGE_YAML


class Origin:
    """An origin whose answers a test sets: path -> handler or (status, headers, body)."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.methods: list[tuple[str, str]] = []
        self.routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        self.fail_with: int | None = None

    def set(self, path: str, status: int = 200, body: bytes = b"ok", **headers: str) -> None:
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}

        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=body, headers=hdrs)

        self.routes[path] = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.hits[request.path] += 1
        self.methods.append((request.method, request.path_qs))
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text="origin failing\n")
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no route\n")
        return await handler(request)


OriginFactory = Callable[[], Awaitable[tuple[Origin, TestServer]]]


@pytest.fixture
def make_origin(aiohttp_server: Any) -> OriginFactory:
    async def start() -> tuple[Origin, TestServer]:
        origin = Origin()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", origin.handle)
        return origin, await aiohttp_server(app)

    return start


class Hanging:
    """Accepts connections, reads, never answers (or closes at once with `drop`)."""

    def __init__(self, drop: bool = False) -> None:
        self.drop = drop
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            data = await reader.read(65536)
            self.requests.append(data)
            if self.drop:
                writer.close()
                return
            await reader.read()  # until the client gives up
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self) -> Hanging:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in self._writers:
                w.close()


@pytest.fixture
async def hanging() -> AsyncIterator[Callable[..., Awaitable[Hanging]]]:
    made: list[Hanging] = []

    async def start(drop: bool = False) -> Hanging:
        h = await Hanging(drop).start()
        made.append(h)
        return h

    yield start
    for h in made:
        await h.close()


EdgeFactory = Callable[..., Awaitable[EdgeHandle]]


@pytest.fixture
async def make_edge() -> AsyncIterator[EdgeFactory]:
    """An edge node in this process, with config/edge.yaml and `overrides` on EdgeConfig."""
    started: list[EdgeServer] = []

    async def start(origins: list[str], **overrides: Any) -> EdgeHandle:
        cfg = load_config(EDGE_YAML)
        overrides.setdefault("port", 0)
        cfg = replace(cfg, origins=tuple(o.rstrip("/") for o in origins), **overrides)
        server = EdgeServer(cfg)
        await server.start()
        started.append(server)
        return EdgeHandle(server)

    yield start
    for server in started:
        await server.stop()
