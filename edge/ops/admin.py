"""Admin endpoints under the reserved prefix /_edge/: health, stats, metrics, purge, and
the operators' views: history, nodes, reload, the dashboard.

Answered by the engine itself (never cached, never proxied, whatever the Host). Stats,
metrics and history are the whole node's (every worker summed, `edge.ops.nodeview`)."""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.base.observe import LATENCY_BUCKETS, quantile
from edge.cache import respond
from edge.cache.respond import json_reply
from edge.http.answer import Answer, Responder
from edge.ops import dashboard, nodeview
from edge.ops import metrics as metrics_text

if TYPE_CHECKING:
    from edge.engine.engine import Engine
    from edge.http.request import Request

log = logging.getLogger("edge.ops.admin")


def serve(
    engine: Engine, req: Request, conn: Responder, path: str
) -> Coroutine[Any, Any, None] | None:
    method = req.method
    if path == "/_edge/purge":
        from edge.ops import purge_api

        if method != "POST":
            conn.send(req, respond.error(405, "POST a JSON purge body", engine.ident, allow="POST"))
            return None
        return purge_api.purge_post(engine, req, conn)
    if path == "/_edge/reload":
        if method != "POST":
            conn.send(req, respond.error(405, "POST to reload", engine.ident, allow="POST"))
            return None
        return reload_post(engine, req, conn)
    if method not in ("GET", "HEAD"):
        conn.send(req, respond.error(405, "method not allowed", engine.ident, allow="GET, HEAD"))
        return None
    if path == "/_edge/nodes":
        return nodes(engine, req, conn)
    if path == "/_edge/health":
        reply = health(engine)
    elif path == "/_edge/stats":
        reply = stats(engine, req)
    elif path == "/_edge/metrics":
        reply = metrics(engine)
    elif path == "/_edge/history":
        reply = history(engine)
    elif path in dashboard.PAGES:
        reply = dashboard.page(path, engine, req)
    else:
        reply = respond.error(404, "unknown admin endpoint", engine.ident)
    conn.send(req, reply)
    return None


def health(engine: Engine) -> Answer:
    """No auth: the Swarm health check uses it. 200 while this process can serve."""
    return json_reply(
        {
            "status": "ok",
            "node": engine.cfg.node,
            "version": __version__,
            **engine.tiers.health(),  # each storage backend by name: "node_cache", "redis"
            "origins": engine.upstream.status(),
        }
    )


def node_numbers(engine: Engine) -> tuple[nodeview.Snapshot, list[nodeview.Snapshot]]:
    """The whole node's numbers and each worker's snapshot (this one's taken now)."""
    if engine.view is not None:
        return engine.view.node()
    own = nodeview.local_snapshot(engine)
    return nodeview.merge([own]), [own]


def latency_summary(latency: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path, h in latency.items():
        counts = h["counts"]
        n = sum(counts)
        out[path] = {
            "count": n,
            "mean": round(h["sum"] / n, 6) if n else None,
            **{
                f"p{int(q * 100)}": (None if (v := quantile(counts, q)) is None else round(v, 6))
                for q in (0.5, 0.9, 0.99)
            },
        }
    return out


def redacted(rows: list[list[Any]]) -> list[list[Any]]:
    """Top targets without their query strings (which may carry a client's tokens), those of
    one path summed: what `/_edge/stats` shows a client without the purge token."""
    sums: Counter[str] = Counter()
    for target, count in rows:
        path, mark, _ = str(target).partition("?")
        sums[path + ("?…" if mark else "")] += count
    return [[t, n] for t, n in sums.most_common()]


def stats(engine: Engine, req: Request | None = None) -> Answer:
    tiers = engine.tiers
    merged, snaps = node_numbers(engine)
    body: dict[str, Any] = dict(merged["counters"])
    body["memory"] = tiers.stats()
    body.update(tiers.backend_stats())  # each storage backend by name: "redis", ...
    body["node"] = engine.cfg.node
    body["answered_by"] = os.getpid()
    body["connections"] = merged["connections"]
    body["workers"] = [nodeview.worker_row(s) for s in snaps]
    body["latency"] = latency_summary(merged["latency"])
    body["top_hits"] = merged["top_hits"]
    body["top_bytes"] = merged["top_bytes"]
    from edge.ops.purge_api import authorize

    if req is None or authorize(req.headers, engine.cfg.purge_token) is not None:
        # Query strings only to the holder of the purge token.
        body["top_hits"] = redacted(body["top_hits"])
        body["top_bytes"] = redacted(body["top_bytes"])
    body["origins"] = engine.upstream.status()
    body["purge_bus"] = merged["bus"]
    body["purge_enabled"] = bool(engine.cfg.purge_token)
    body["config"] = {
        "source": engine.cfg.source,
        "rules": len(engine.cfg.rules),
        "reload": engine.reloader.status() if engine.reloader is not None else None,
    }
    return json_reply(body)


def metrics(engine: Engine) -> Answer:
    tiers = engine.tiers
    redis_up = 1 if tiers.shared_status() == "up" else 0
    merged, _ = node_numbers(engine)
    failovers = sum(int(s.get("failovers", 0)) for s in tiers.backend_stats().values())
    text = metrics_text.render(
        engine.cfg.node, merged, tiers.stats(), redis_up, LATENCY_BUCKETS, failovers
    )
    return respond.plain(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")


def history(engine: Engine) -> Answer:
    """Per-second rates of the last minutes, the node's (`edge.ops.nodeview.History`)."""
    rows = engine.view.history.rates() if engine.view is not None else []
    return json_reply(
        {
            "node": engine.cfg.node,
            "interval_seconds": nodeview.PUBLISH_SECONDS,
            "series": [*nodeview.SERIES, "hit_ratio"],
            "samples": rows,
        }
    )


async def nodes(engine: Engine, req: Request, conn: Responder) -> None:
    """The nodes sharing this node's Redis, and the last purge with its acknowledgements."""
    if engine.view is None:
        conn.send(req, json_reply({"redis": "off", "nodes": [], "last_purge": None}))
        return
    conn.send(req, json_reply(await engine.view.nodes()))


async def reload_post(engine: Engine, req: Request, conn: Responder) -> None:
    conn.send(req, await _reload(engine, req))


async def _reload(engine: Engine, req: Request) -> Answer:
    """`POST /_edge/reload` (purge token): re-read the configuration file (edge.ops.reload).
    400 with the configuration error when the file is refused; 200 with what changed.
    With several workers, the supervisor is signalled and every worker reloads."""
    from edge.ops.purge_api import authorize

    denied = authorize(req.headers, engine.cfg.purge_token)
    if denied is not None:
        return denied
    reloader = engine.reloader
    if reloader is None:
        return json_reply({"ok": False, "error": "this node was not started from a file"}, 409)
    if reloader.supervisor is None:
        result = await reloader.reload()
        return json_reply(result, 200 if result["ok"] else 400)
    _, result = reloader.check()
    if not result["ok"]:
        log.error("reload refused: %s; the running configuration stays", result["error"])
        return json_reply(result, 400)
    os.kill(reloader.supervisor, signal.SIGHUP)
    result["applied_by"] = f"supervisor {reloader.supervisor}: SIGHUP to every worker"
    return json_reply(result)
