"""`create_app(settings)`: the whole shop (API, front, database) as one aiohttp application.

Edge tests run it in-process with pytest-aiohttp:

    app = create_app(OriginSettings(db=":memory:", heavy_seconds=0.2, static_rate=0))
    client = await aiohttp_client(app)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from origin import api
from origin.api_cache import ApiCache
from origin.assets import IMAGE_NAME, ensure_image
from origin.db import open_database
from origin.settings import STATIC_DIR, OriginSettings
from origin.static_files import StaticFiles

log = logging.getLogger("origin")

__all__ = ["STATS_KEY", "OriginSettings", "RequestStats", "create_app"]


@dataclass
class RequestStats:
    """Requests received by this process, per path and per path with query string."""

    started: float = field(default_factory=time.time)
    total: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "total": self.total,
            "in_flight": self.in_flight,
            "paths": dict(self.paths),
            "targets": dict(self.targets),
        }

    def reset(self) -> None:
        self.total = 0
        self.paths.clear()
        self.targets.clear()


STATS_KEY = web.AppKey("origin_stats", RequestStats)


@web.middleware
async def count_requests(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    if request.path.startswith("/_origin/"):
        return await handler(request)
    stats = request.app[STATS_KEY]
    stats.total += 1
    stats.paths[request.path] += 1
    stats.targets[request.path_qs] += 1
    stats.in_flight += 1
    try:
        return await handler(request)
    finally:
        stats.in_flight -= 1


async def stats_view(request: web.Request) -> web.StreamResponse:
    """GET: the counters; DELETE: reset them (for tests)."""
    stats = request.app[STATS_KEY]
    if request.method == "DELETE":
        stats.reset()
    return web.json_response(stats.as_json())


def create_app(settings: OriginSettings | None = None) -> web.Application:
    """The origin as an aiohttp application; the database opens in its cleanup context."""
    settings = settings or OriginSettings()
    settings.validate()
    app = web.Application(middlewares=[count_requests])
    app[api.SETTINGS_KEY] = settings
    app[api.API_LOCK_KEY] = asyncio.Lock()
    app[STATS_KEY] = RequestStats()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if settings.static_dir == STATIC_DIR and not (STATIC_DIR / IMAGE_NAME).exists():
            await asyncio.get_running_loop().run_in_executor(None, ensure_image)
        # A writer waits behind a slow `last` for at most this long before giving up.
        db = open_database(settings.db_url, busy_timeout=max(60.0, 4 * settings.db_seconds))
        await db.start()
        app[api.DB_KEY] = db
        cache = None
        if settings.api_cache:
            cache = ApiCache(
                settings.api_cache,
                settings.api_cache_prefix,
                settings.api_cache_heavy_ttl,
                settings.api_cache_last_ttl,
            )
            app[api.API_CACHE_KEY] = cache
            log.info("api cache: %s (prefix %r)", settings.api_cache, settings.api_cache_prefix)
        try:
            yield
        finally:
            if cache is not None:
                await cache.close()
            await db.close()

    app.cleanup_ctx.append(resources)
    api.add_routes(app)
    app.router.add_route("GET", "/_origin/stats", stats_view)
    app.router.add_route("DELETE", "/_origin/stats", stats_view)
    static = StaticFiles(settings.static_dir, settings.static_rate, settings.page_delay)
    app.router.add_get("/", static.handle)
    app.router.add_get("/{name}", static.handle)
    return app
