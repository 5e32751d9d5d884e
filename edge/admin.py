"""Admin endpoints under the reserved prefix /_edge/: health, stats, metrics, purge."""

from __future__ import annotations

from aiohttp import web

from edge import __version__
from edge.proxy import EdgeNode


def health(node: EdgeNode) -> web.Response:
    """No auth: the Swarm health check uses it. 200 while this process can serve."""
    return web.json_response(
        {
            "status": "ok",
            "node": node.cfg.node,
            "version": __version__,
            "redis": node.tiers.redis_status(),
            "origins": node.upstream.status(),
        }
    )


def stats(node: EdgeNode) -> web.Response:
    redis = node.tiers.redis.stats() if node.tiers.redis is not None else {"status": "off"}
    body = node.stats.as_dict(node.tiers.memory.stats(), dict(redis))
    body["node"] = node.cfg.node
    return web.json_response(body)


def metrics(node: EdgeNode) -> web.Response:
    redis_up = 1 if node.tiers.redis_status() == "up" else 0
    text = node.stats.prometheus(node.cfg.node, node.tiers.memory.stats(), redis_up)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")
