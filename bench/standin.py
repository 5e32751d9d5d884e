"""A small stand-in for the Woodytoys origin, with the same command line and slow spots.

It serves the front page (`/`, which references a stylesheet, a script, an icon and, through
CSS `url(...)`, the ~5 MB background `5mo.jpg`), the API calls the lab timed
(`/api/misc/heavy`, `/api/products/last`, the write `/api/products?product=`), fixed-size
objects for load tests (`/bench/obj/<bytes>`), and `/_origin/stats` with request counts.
Static answers are throttled per response to `--static-rate` bytes/s (nginx's `limit_rate`);
API calls go through `--replicas` single-request slots; the DB call holds the one DB
connection for `--db-seconds`. It is the bench's "fast origin" with `--static-rate 0`.

    python -m bench.standin serve --port 8081 --heavy-seconds 5 --db-seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

IMAGE_BYTES = 5 * 1024 * 1024

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Woody stuff</title>
<link rel="stylesheet" href="/style.css">
<link rel="icon" href="/spinner.svg">
<script src="/htmx.min.js"></script>
</head>
<body>
<table>
<tr><td><button hx-get="/api/misc/time" hx-target="#t">Short computation</button></td>
<td id="t"></td></tr>
<tr><td><button hx-get="/api/misc/heavy?name=bench" hx-target="#h">Heavy computation</button>
</td><td id="h"></td></tr>
<tr><td><button hx-get="/api/products/last" hx-target="#l">Get last product</button></td>
<td id="l"></td></tr>
</table>
<img class="htmx-indicator" src="/spinner.svg" alt="">
</body>
</html>
"""

STYLE_CSS = """body { background: url("5mo.jpg") no-repeat center / cover; }
body { font-family: sans-serif; }
table { margin: 2em auto; background: rgba(255, 255, 255, 0.8); }
"""

SCRIPT_JS = "/* stand-in for htmx */\nwindow.htmx = window.htmx || {};\n"

SPINNER_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
    '<circle cx="8" cy="8" r="6" fill="none" stroke="#333"/></svg>\n'
)


def deterministic_bytes(n: int, seed: bytes = b"woody") -> bytes:
    """n bytes that are the same on every run (a JPEG start marker, then hashed noise)."""
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(2048))
    out = bytearray(b"\xff\xd8\xff\xe0")
    while len(out) < n:
        out += block
    return bytes(out[:n])


@dataclass
class StandinSettings:
    heavy_seconds: float = 5.0
    db_seconds: float = 15.0
    static_rate: int = 300 * 1024
    replicas: int = 1
    api_cache: str | None = None
    api_cache_prefix: str = "woody-standin"
    image_bytes: int = IMAGE_BYTES


class Counters:
    def __init__(self) -> None:
        self.paths: collections.Counter[str] = collections.Counter()
        self.urls: collections.Counter[str] = collections.Counter()
        self.started = time.time()

    def as_json(self) -> dict[str, object]:
        return {
            "requests": dict(self.paths),
            "urls": dict(self.urls),
            "total": sum(self.paths.values()),
            "since": self.started,
        }


COUNTERS = web.AppKey("counters", Counters)
SETTINGS = web.AppKey("settings", StandinSettings)
API_SLOTS = web.AppKey("api_slots", asyncio.Semaphore)
DB_LOCK = web.AppKey("db_lock", asyncio.Lock)
PRODUCTS = web.AppKey("products", list)
IMAGE = web.AppKey("image", bytes)
REDIS = web.AppKey("redis", object)

STATIC_CC = "public, max-age=3600"


async def _throttled(
    request: web.Request, body: bytes, content_type: str, rate: int
) -> web.StreamResponse:
    etag = f'"{len(body):x}-{zlib.crc32(body):08x}"'
    headers = {"Cache-Control": STATIC_CC, "Content-Type": content_type, "ETag": etag}
    if rate <= 0 or len(body) <= 4096:
        return web.Response(body=body, headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    chunk = max(1024, rate // 20)
    start = time.monotonic()
    sent = 0
    view = memoryview(body)
    while sent < len(body):
        part = view[sent : sent + chunk]
        await resp.write(part)
        sent += len(part)
        lag = sent / rate - (time.monotonic() - start)
        if lag > 0:
            await asyncio.sleep(lag)
    await resp.write_eof()
    return resp


@web.middleware
async def count_requests(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    if request.path != "/_origin/stats":
        counters = request.app[COUNTERS]
        counters.paths[request.path] += 1
        counters.urls[request.path_qs] += 1
    return await handler(request)


def _static(body_of: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    texts = {
        "/": (INDEX_HTML, "text/html"),
        "/style.css": (STYLE_CSS, "text/css"),
        "/htmx.min.js": (SCRIPT_JS, "application/javascript"),
        "/spinner.svg": (SPINNER_SVG, "image/svg+xml"),
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        settings = request.app[SETTINGS]
        if body_of == "/5mo.jpg":
            body, ctype = request.app[IMAGE], "image/jpeg"
        else:
            text, ctype = texts[body_of]
            body = text.encode()
        return await _throttled(request, body, ctype, settings.static_rate)

    return handler


async def bench_object(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    if size > 64 * 1024 * 1024:
        raise web.HTTPBadRequest(text="too large\n")
    image = request.app[IMAGE]
    body = image[:size] if size <= len(image) else deterministic_bytes(size)
    return await _throttled(
        request, body, "application/octet-stream", request.app[SETTINGS].static_rate
    )


async def bench_text(request: web.Request) -> web.Response:
    """Compressible text of the size asked (bench chaos --hostile: Accept-Encoding)."""
    size = min(int(request.match_info["size"]), 16 * 1024 * 1024)
    line = b"wooden toys, carved and painted by hand, one at a time.\n"
    body = (line * (size // len(line) + 1))[:size]
    return web.Response(
        body=body, headers={"Cache-Control": STATIC_CC, "Content-Type": "text/plain"}
    )


async def bench_vary(request: web.Request) -> web.Response:
    """An answer that varies on X-Variant and says which it was made for (bench chaos
    --hostile: many Vary values; a client can check it got its own)."""
    variant = request.headers.get("X-Variant", "")
    return web.Response(
        text=f"variant {variant}\n",
        headers={"Cache-Control": STATIC_CC, "Vary": "X-Variant"},
    )


async def _cached(request: web.Request, key: str) -> str | None:
    client = request.app.get(REDIS)
    if client is None:
        return None
    value = await client.get(key)  # type: ignore[attr-defined]
    return value.decode() if value is not None else None


async def _store(request: web.Request, key: str, value: str, ttl: int) -> None:
    client = request.app.get(REDIS)
    if client is not None:
        await client.set(key, value.encode(), ex=ttl)  # type: ignore[attr-defined]


def _api(text: str, max_age: int, cache: str = "MISS") -> web.Response:
    return web.Response(
        text=text,
        headers={"Cache-Control": f"public, max-age={max_age}", "X-Api-Cache": cache},
    )


async def heavy(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = request.query.get("name")
    if not name:
        raise web.HTTPBadRequest(text="missing name\n")
    key = f"{settings.api_cache_prefix}:heavy:{name}"
    hit = await _cached(request, key)
    if hit is not None:
        return _api(hit, 30, "HIT")
    async with request.app[API_SLOTS]:
        await asyncio.sleep(settings.heavy_seconds)
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: Woody -{name}- Woody"
    await _store(request, key, text, 30)
    return _api(text, 30)


async def products_last(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    key = f"{settings.api_cache_prefix}:last"
    hit = await _cached(request, key)
    if hit is not None:
        return _api(hit, 15, "HIT")
    products: list[str] = request.app[PRODUCTS]
    async with request.app[API_SLOTS], request.app[DB_LOCK]:
        await asyncio.sleep(settings.db_seconds)
        text = (
            f"db: {time.strftime('%Y-%m-%d %H:%M:%S')} - {len(products)} products "
            f"(last={products[-1]})"
        )
    await _store(request, key, text, 15)
    return _api(text, 15)


async def products_add(request: web.Request) -> web.Response:
    product = request.query.get("product")
    if not product:
        raise web.HTTPBadRequest(text="missing product\n")
    async with request.app[API_SLOTS], request.app[DB_LOCK]:
        request.app[PRODUCTS].append(product)
    client = request.app.get(REDIS)
    if client is not None:
        await client.delete(f"{request.app[SETTINGS].api_cache_prefix}:last")  # type: ignore[attr-defined]
    return web.Response(text=product, headers={"Cache-Control": "no-store"})


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="ping", headers={"Cache-Control": "no-store"})


async def misc_time(request: web.Request) -> web.Response:
    return web.Response(text=f"misc: {time.time()}", headers={"Cache-Control": "no-store"})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[COUNTERS].as_json())


def create_app(settings: StandinSettings | None = None) -> web.Application:
    settings = settings or StandinSettings()
    app = web.Application(middlewares=[count_requests])
    app[SETTINGS] = settings
    app[COUNTERS] = Counters()
    app[API_SLOTS] = asyncio.Semaphore(max(1, settings.replicas))
    app[DB_LOCK] = asyncio.Lock()
    app[PRODUCTS] = ["Yoyo", "Joli train"]
    app[IMAGE] = deterministic_bytes(settings.image_bytes)

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.api_cache:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(settings.api_cache)
            app[REDIS] = client
            yield
            keys = [k async for k in client.scan_iter(match=f"{settings.api_cache_prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        else:
            yield

    app.cleanup_ctx.append(redis_ctx)
    for path in ("/", "/style.css", "/htmx.min.js", "/spinner.svg", "/5mo.jpg"):
        app.router.add_get(path, _static(path))
    app.router.add_get("/index.html", _static("/"))
    app.router.add_get(r"/bench/obj/{size:\d+}", bench_object)
    app.router.add_get("/bench/vary", bench_vary)
    app.router.add_get(r"/bench/text/{size:\d+}", bench_text)
    app.router.add_get("/api/ping", ping)
    app.router.add_get("/api/misc/time", misc_time)
    app.router.add_get("/api/misc/heavy", heavy)
    app.router.add_get("/api/products/last", products_last)
    app.router.add_get("/api/products", products_add)
    app.router.add_get("/_origin/stats", stats)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.standin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the stand-in origin")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081)
    serve.add_argument("--heavy-seconds", type=float, default=5.0)
    serve.add_argument("--db-seconds", type=float, default=15.0)
    serve.add_argument("--static-rate", type=int, default=300 * 1024, help="bytes/s, 0 = no limit")
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--api-cache", default=None, metavar="REDIS_URL")
    serve.add_argument("--api-cache-prefix", default="woody-standin")
    serve.add_argument("--image-bytes", type=int, default=IMAGE_BYTES)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = StandinSettings(
        heavy_seconds=args.heavy_seconds,
        db_seconds=args.db_seconds,
        static_rate=args.static_rate,
        replicas=args.replicas,
        api_cache=args.api_cache,
        api_cache_prefix=args.api_cache_prefix,
        image_bytes=args.image_bytes,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(create_app(settings), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
