"""The aiohttp application of one edge process: routes, and the resources it opens and closes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from edge import admin, purge_api
from edge.config import EdgeConfig
from edge.proxy import EdgeNode
from edge.store_memory import MemoryTier
from edge.tiers import Tiers
from edge.upstream import Upstream

log = logging.getLogger("edge.app")

NODE = web.AppKey("edge_node", EdgeNode)
ADMIN_PREFIX = "/_edge/"


def create_app(cfg: EdgeConfig) -> web.Application:
    app = web.Application(client_max_size=cfg.max_request_body)
    app.cleanup_ctx.append(_lifecycle(cfg))

    async def route(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE]
        path = request.rel_url.raw_path
        if path.startswith(ADMIN_PREFIX):
            return await _admin(request, node, path)
        if request.method == "PURGE":
            return await purge_api.purge_method(request, node)
        length = request.content_length
        if length is not None and length > cfg.max_request_body:
            return web.Response(status=413, text="413: request body too large\n")
        return await node.handle(request)

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
        memory = MemoryTier(cfg.memory_max_bytes, cfg.memory_max_object_bytes)
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
            )
            await redis.start()
            bus = PurgeBus(
                cfg.redis_url,
                prefix=cfg.redis_prefix,
                node=cfg.node,
                bound=cfg.purge_staleness_bound,
                timeout=cfg.redis_timeout,
            )
        upstream = Upstream(cfg.origins, cfg.connect_timeout, cfg.read_timeout)
        await upstream.start()
        node = EdgeNode(cfg, Tiers(memory, redis, bus), upstream)
        app[NODE] = node
        if bus is not None:
            bus.start(lambda message: _applied(node, apply_to_memory(memory, message)))
        log.info(
            "edge %s ready: origins %s, redis %s",
            cfg.node,
            ", ".join(cfg.origins),
            cfg.redis_url or "off",
        )
        try:
            yield
        finally:
            await node.drain()
            await upstream.close()
            if bus is not None:
                await bus.close()
            if redis is not None:
                await redis.close()

    return ctx


def _applied(node: EdgeNode, count: int) -> None:
    node.stats.purged_entries += count
