"""Admin endpoints under the reserved prefix /_edge/: health, stats, metrics, purge.

Answered by the engine itself (never cached, never proxied, whatever the Host)."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from edge import __version__, respond

if TYPE_CHECKING:
    from edge.engine import Engine
    from edge.http1 import Http1Connection, Request

JSON = "application/json; charset=utf-8"


def json_reply(body: object, status: int = 200, **extra: str) -> respond.Reply:
    return respond.plain(status, json.dumps(body).encode(), JSON, **extra)


def serve(
    engine: Engine, req: Request, conn: Http1Connection, path: str
) -> Coroutine[Any, Any, None] | None:
    method = req.method
    if path == "/_edge/purge":
        from edge import purge_api

        if method != "POST":
            conn.send(req, respond.error(405, "POST a JSON purge body", engine.ident, allow="POST"))
            return None
        return purge_api.purge_post(engine, req, conn)
    if method not in ("GET", "HEAD"):
        conn.send(req, respond.error(405, "method not allowed", engine.ident, allow="GET, HEAD"))
        return None
    if path == "/_edge/health":
        reply = health(engine)
    elif path == "/_edge/stats":
        reply = stats(engine)
    elif path == "/_edge/metrics":
        reply = metrics(engine)
    else:
        reply = respond.error(404, "unknown admin endpoint", engine.ident)
    conn.send(req, reply)
    return None


def health(engine: Engine) -> respond.Reply:
    """No auth: the Swarm health check uses it. 200 while this process can serve."""
    tiers = engine.tiers
    return json_reply(
        {
            "status": "ok",
            "node": engine.cfg.node,
            "version": __version__,
            "redis": tiers.redis_status(),
            "node_cache": "off" if tiers.node is None else str(tiers.node.stats()["path"]),
            "origins": engine.upstream.status(),
        }
    )


def stats(engine: Engine) -> respond.Reply:
    tiers = engine.tiers
    redis = tiers.redis.stats() if tiers.redis is not None else {"status": "off"}
    body = engine.stats.as_dict(tiers.stats(), dict(redis))
    body["node"] = engine.cfg.node
    body["connections"] = engine.guard.as_dict()
    return json_reply(body)


def metrics(engine: Engine) -> respond.Reply:
    tiers = engine.tiers
    redis_up = 1 if tiers.redis_status() == "up" else 0
    text = engine.stats.prometheus(engine.cfg.node, tiers.stats(), redis_up)
    text += engine.guard.prometheus(engine.cfg.node)
    return respond.plain(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
