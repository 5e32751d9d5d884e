"""The aiohttp application of one edge process: routes, and the resources it opens and closes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from edge import admin, purge_api
from edge.config import EdgeConfig
from edge.proxy import EdgeNode
from edge.store_memory import MemoryTier
from edge.tiers import Tiers
from edge.upstream import Upstream

log = logging.getLogger("edge.app")

NODE = web.AppKey("edge_node", EdgeNode)
ADMIN_PREFIX = "/_edge/"


@dataclass
class ConnectionGuard:
    """Limits on client connections that aiohttp does not enforce by itself, and their counts.

    - `header_timeout`: a new connection, or a request whose first bytes arrived, must deliver
      its whole head (request line and headers) within this many seconds, else the connection
      is closed (after a 408 if part of a head came). aiohttp's own keep-alive timer does not
      restart on partial data, but it is long (idle keep-alive); this one is short (slowloris).
    - `max_connections`: open client connections per process; one more is answered 503 and
      closed at once, before anything is parsed.
    - malformed requests (aiohttp answers 400/431 and closes) are counted and logged at most
      once a minute, not with a traceback each (a fuzzer or scanner must not fill the logs).
    """

    header_timeout: float = 10.0
    max_connections: int = 8192
    open: int = 0
    accepted: int = 0
    header_timeouts: int = 0
    over_limit: int = 0
    bad_requests: int = 0
    client_gone: int = 0
    _logged_bad: int = 0
    _log_at: float = 0.0

    def bad_request(self, remote: str | None, exc: BaseException | None) -> None:
        self.bad_requests += 1
        now = time.monotonic()
        if now >= self._log_at:
            text = str(getattr(exc, "message", None) or exc or "?").strip()
            log.warning(
                "rejected %d malformed request(s) since the last report; latest from %s: %s",
                self.bad_requests - self._logged_bad,
                remote,
                text.splitlines()[0] if text else "?",
            )
            self._logged_bad = self.bad_requests
            self._log_at = now + 60.0

    def prometheus(self, node: str) -> str:
        label = f'node="{node}"'
        rows = [
            ("edge_client_connections", "gauge", "Open client connections.", self.open),
            (
                "edge_client_connections_total",
                "counter",
                "Client connections accepted.",
                self.accepted,
            ),
            (
                "edge_header_timeouts_total",
                "counter",
                "Connections closed for not sending a request head in time.",
                self.header_timeouts,
            ),
            (
                "edge_connections_refused_total",
                "counter",
                "Connections refused over limits.max_connections.",
                self.over_limit,
            ),
            (
                "edge_clients_gone_total",
                "counter",
                "Responses abandoned because the client closed its connection first.",
                self.client_gone,
            ),
            (
                "edge_bad_requests_total",
                "counter",
                "Malformed requests answered 400/431 by the HTTP parser.",
                self.bad_requests,
            ),
        ]
        out = []
        for name, kind, text, value in rows:
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{{{label}}} {value}"]
        return "\n".join(out) + "\n"


GUARD = web.AppKey("edge_guard", ConnectionGuard)
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 29\r\nConnection: close\r\n\r\n503: too many connections\r\n\r\n"
)
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 28\r\nConnection: close\r\n\r\n408: request head too slow\r\n"
)


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol with a request-head timer and a connection limit (see
    ConnectionGuard)."""

    __slots__ = ("_armed_at_count", "_got_bytes", "_guard", "_head_timer", "_refused")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._armed_at_count = 0
        self._got_bytes = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.open >= guard.max_connections:
            guard.over_limit += 1
            self._refused = True
            assert isinstance(transport, asyncio.Transport)
            transport.write(_REFUSED)
            transport.close()
            return
        guard.open += 1
        guard.accepted += 1
        super().connection_made(transport)
        self._arm(got_bytes=False)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._guard.open -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and data and self._idle():
            self._arm(got_bytes=True)
        elif data:
            self._got_bytes = True
        super().data_received(data)
        if self._head_timer is not None and self._request_count != self._armed_at_count:
            self._disarm()  # a whole head arrived

    def _idle(self) -> bool:
        """Waiting for the next request (not handling one, none queued)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm(self, got_bytes: bool) -> None:
        if self._guard.header_timeout <= 0:
            return
        self._disarm()
        self._armed_at_count = self._request_count
        self._got_bytes = got_bytes
        self._head_timer = self._loop.call_later(self._guard.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if self._request_count != self._armed_at_count or not self._idle():
            return
        self._guard.header_timeouts += 1
        if self._got_bytes and self.transport is not None:
            self.transport.write(_TIMEOUT)
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) and 400 <= status < 500:
            # The parser's rejection (400, 431...): count it, log it rarely, no traceback.
            self._guard.bad_request(request.remote, exc)
            resp = web.Response(status=status, text=f"{status}: {exc.message}\n")
            resp.force_close()
            return resp
        return super().handle_error(request, status, exc, message)


class _GuardedServer(web.Server):
    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


def _install_guard(app: web.Application, cfg: EdgeConfig, guard: ConnectionGuard) -> None:
    """Serve `app` with `_GuardedHandler`, wherever it runs (`web.run_app`, `AppRunner`,
    pytest-aiohttp): aiohttp builds its low-level server through `Application._make_handler`,
    which is wrapped here. The parser limits come from the configuration unless the runner
    passes its own."""
    make = app._make_handler

    def make_handler(*, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("max_line_size", cfg.max_line_size)
        kwargs.setdefault("max_field_size", cfg.max_field_size)
        kwargs.setdefault("max_headers", cfg.max_headers)
        kwargs.setdefault("keepalive_timeout", cfg.keepalive_timeout)
        plain = make(loop=loop, **kwargs)
        return _GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            guard=guard,
            **plain._kwargs,
        )

    app._make_handler = make_handler  # type: ignore[method-assign]


def create_app(cfg: EdgeConfig) -> web.Application:
    app = web.Application(client_max_size=cfg.max_request_body)
    app.cleanup_ctx.append(_lifecycle(cfg))
    guard = ConnectionGuard(cfg.header_timeout, cfg.max_connections)
    app[GUARD] = guard
    _install_guard(app, cfg, guard)

    async def route(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE]
        path = request.rel_url.raw_path
        if path.startswith(ADMIN_PREFIX):
            if path == "/_edge/metrics" and request.method in ("GET", "HEAD"):
                resp = admin.metrics(node)
                resp.text = (resp.text or "") + guard.prometheus(cfg.node)
                return resp
            return await _admin(request, node, path)
        if request.version < (1, 1) and "Transfer-Encoding" in request.headers:
            # RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing; nothing ambiguous goes to the origin.
            guard.bad_request(request.remote, None)
            raise web.HTTPBadRequest(
                text="400: Transfer-Encoding in an HTTP/1.0 request\n",
                headers={"Connection": "close"},
            )
        if request.method == "PURGE":
            return await purge_api.purge_method(request, node)
        length = request.content_length
        if length is not None and length > cfg.max_request_body:
            return web.Response(status=413, text="413: request body too large\n")
        try:
            return await node.handle(request)
        except ConnectionResetError:
            if request.transport is not None and not request.transport.is_closing():
                raise  # not the client's connection
            # The client went away while we answered: nothing to send, nothing to log (aiohttp
            # would log a 500 with a traceback). The placeholder below fails to prepare on the
            # closed transport, which aiohttp treats as a quiet disconnect.
            guard.client_gone += 1
            return web.Response(status=499)

    app.router.add_route("*", "/{tail:.*}", route)
    return app


async def _admin(request: web.Request, node: EdgeNode, path: str) -> web.StreamResponse:
    method = request.method
    if path == "/_edge/purge":
        if method != "POST":
            return web.Response(status=405, text="405: POST a JSON purge body\n")
        return await purge_api.purge_post(request, node)
    if method not in ("GET", "HEAD"):
        return web.Response(status=405, text="405: method not allowed\n")
    if path == "/_edge/health":
        return admin.health(node)
    if path == "/_edge/stats":
        return admin.stats(node)
    if path == "/_edge/metrics":
        return admin.metrics(node)
    return web.Response(status=404, text="404: unknown admin endpoint\n")


def _lifecycle(cfg: EdgeConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        # refuse_late: a fill that raced a purge (requested before it) is not stored
        memory = MemoryTier(cfg.memory_max_bytes, cfg.memory_max_object_bytes, refuse_late=True)
        redis = bus = None
        if cfg.redis_url:
            from edge.purge_bus import PurgeBus, apply_to_memory
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
            cfg.origins, cfg.connect_timeout, cfg.read_timeout, down_seconds=cfg.origin_down
        )
        await upstream.start()
        tiers = Tiers(memory, redis, bus)
        node = EdgeNode(cfg, tiers, upstream)
        app[NODE] = node
        watch = asyncio.create_task(tiers.watch_redis(), name="redis-watch") if redis else None
        if bus is not None:
            bus.start(lambda message: _applied(node, message, apply_to_memory(memory, message)))
        log.info(
            "edge %s ready: origins %s, redis %s",
            cfg.node,
            ", ".join(cfg.origins),
            cfg.redis_url or "off",
        )
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
            await node.drain()
            await upstream.close()
            if bus is not None:
                await bus.close()
            if redis is not None:
                await redis.close()

    return ctx


def _applied(node: EdgeNode, message: dict[str, Any], count: int) -> int:
    """Count a bus message applied to this node's memory; the count is acknowledged."""
    from edge.purge_bus import is_own

    stats = node.stats
    stats.purged_entries += count
    kind = str(message.get("type"))
    if kind == "purge":
        if is_own(message, node.cfg.node):
            return count  # our own purge coming back: counted when it was taken
        kind = purge_api.purge_kind(message)
    stats.bus_purges[kind] += 1
    stats.bus_purged_entries += count
    return count
