"""The shop's API (the lab's Flask app), one request at a time per process.

All GET, plain-text bodies. The lab's werkzeug ran with `threaded=False`: an asyncio.Lock
around every handler here gives the same one-at-a-time behaviour per process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

from origin.api_cache import LAST_KEY, ApiCache, heavy_key
from origin.db import NAME_MAX, Database, DatabaseError
from origin.settings import OriginSettings

DB_KEY = web.AppKey("origin_db", Database)
SETTINGS_KEY = web.AppKey("origin_settings", OriginSettings)
API_LOCK_KEY = web.AppKey("origin_api_lock", asyncio.Lock)
API_CACHE_KEY = web.AppKey("origin_api_cache", ApiCache)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ORDER_STATUS_OK = "Success"


def text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain", charset="utf-8")


def now() -> str:
    return str(datetime.now())


def _param(request: web.Request, name: str, *, non_empty: bool = False) -> str:
    value = request.query.get(name)
    if value is None:
        raise web.HTTPBadRequest(text=f"missing query parameter {name!r}\n")
    if non_empty and not value.strip():
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must not be empty\n")
    if non_empty and len(value) > NAME_MAX:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} is over {NAME_MAX} characters\n")
    return value


def one_at_a_time(handler: Handler) -> Handler:
    """Serialize the API handlers of one application (the lab's single-threaded server)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        async with request.app[API_LOCK_KEY]:
            try:
                response = await handler(request)
            except DatabaseError as exc:
                request.app.logger.error("database error: %s", exc)
                return text(f"database error: {exc}\n", status=503)
        response.headers["Access-Control-Allow-Origin"] = "*"  # the lab's flask_cors
        return response

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _cache(request: web.Request) -> ApiCache | None:
    return request.app.get(API_CACHE_KEY)


async def ping(request: web.Request) -> web.StreamResponse:
    return text("ping")


async def misc_time(request: web.Request) -> web.StreamResponse:
    return text(f"misc: {now()}")


async def heavy_computation(request: web.Request) -> web.StreamResponse:
    name = _param(request, "name")
    cache = _cache(request)
    if cache is not None and (hit := await cache.get(heavy_key(name))) is not None:
        return text(hit)
    await asyncio.sleep(request.app[SETTINGS_KEY].heavy_seconds)
    body = f"{now()}: Woody -{name}- Woody"
    if cache is not None:
        await cache.set(heavy_key(name), body, cache.heavy_ttl)
    return text(body)


async def add_product(request: web.Request) -> web.StreamResponse:
    name = _param(request, "product", non_empty=True)
    await request.app[DB_KEY].add_product(name)
    cache = _cache(request)
    if cache is not None:
        await cache.delete(LAST_KEY)
    return text(name)


async def get_product(request: web.Request) -> web.StreamResponse:
    product_id = int(request.match_info["id"])
    name = None
    if product_id < 2**31:  # larger ids cannot exist (INT column) and overflow SQLite
        name = await request.app[DB_KEY].get_product(product_id)
    if name is None:
        return text(f"product {product_id} not found", status=404)
    return text(name)


async def last_product(request: web.Request) -> web.StreamResponse:
    cache = _cache(request)
    if cache is not None and (hit := await cache.get(LAST_KEY)) is not None:
        return text(hit)
    count, name = await request.app[DB_KEY].last_product(request.app[SETTINGS_KEY].db_seconds)
    body = "No product found" if name is None else f"db: {now()} - {count} products (last={name})"
    if cache is not None:
        await cache.set(LAST_KEY, body, cache.last_ttl)
    return text(body)


async def do_order(request: web.Request) -> web.StreamResponse:
    product = _param(request, "order", non_empty=True)
    order_id = str(uuid.uuid4())
    await asyncio.sleep(request.app[SETTINGS_KEY].heavy_seconds)  # the heavy validation
    await request.app[DB_KEY].save_order(order_id, ORDER_STATUS_OK, product)
    return text(f"order {order_id} created for product: {product}")


async def get_order(request: web.Request) -> web.StreamResponse:
    order_id = _param(request, "order_id")
    status = await request.app[DB_KEY].get_order(order_id)
    if status is None:
        return text(f'order "{order_id}": not found', status=404)
    return text(f'order "{order_id}": {status}')


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, Handler]] = [
        ("/api/ping", ping),
        ("/api/misc/time", misc_time),
        ("/api/misc/heavy", heavy_computation),
        ("/api/products", add_product),
        ("/api/products/last", last_product),
        (r"/api/products/{id:\d+}", get_product),
        ("/api/orders/do", do_order),
        ("/api/orders/", get_order),
        ("/api/orders", get_order),
    ]
    for path, handler in routes:
        app.router.add_get(path, one_at_a_time(handler))
