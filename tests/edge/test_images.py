"""Images at the edge, end to end against the real shop origin (its 5 MB photo, sliced as
config/edge.yaml says) and scripted origins (a 50-megapixel image, a truncated JPEG):
AVIF and WebP by Accept, widths by Client Hints and ?w=, the original byte for byte to
clients that never asked for another format, Vary and Cache-Status, purge, collapsing,
refusals, and the same answers over HTTP/1.1 and h2."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from PIL import Image

from edge.config.images import ImageRule, ImageSettings
from edge.config.settings import Rule
from edge.config.terms import RuleTerms
from edge.engine import images as images_module
from edge.engine.engine import Engine
from origin.assets import ensure_image
from tests.edge.conftest import TOKEN, EdgeFactory, node_of, origin_hits, url
from tests.edge.test_fast_paths import comparable, gate_shut
from tests.edge.test_request_check import Sent, _h1, _h2
from tests.edge.tls_helpers import start_tls_edge


@functools.cache
def photo() -> bytes:
    """The lab's photo, as the origin serves it (rendered on a fresh clone)."""
    return ensure_image()[0].read_bytes()


CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SCREEN = {"Sec-CH-Viewport-Width": "1280", "Sec-CH-DPR": "1"}
WAIT = 60.0  # seconds a conversion may take on a loaded machine


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def conversions(engine: Engine, fmt: str, outcome: str) -> int:
    return engine.images.conversions[f"{fmt} {outcome}"]


async def get(
    s: aiohttp.ClientSession, edge: Any, path: str, **headers: str
) -> tuple[int, Any, bytes]:
    async with s.get(url(edge, path), headers=headers, skip_auto_headers=["Accept"]) as r:
        return r.status, r.headers, await r.read()


async def until_converted(
    s: aiohttp.ClientSession, edge: Any, path: str, cls: str, **headers: str
) -> tuple[Any, bytes]:
    """Ask until the answer is the variant `cls` (the first asks have the original)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        status, h, body = await get(s, edge, path, **headers)
        assert status == 200
        if f"detail={cls}" in h.get("Cache-Status", "") and "converting" not in h["Cache-Status"]:
            return h, body
        assert asyncio.get_running_loop().time() < deadline, h.get("Cache-Status")
        await asyncio.sleep(0.1)


@pytest.fixture
async def shop(origin: Any, make_edge: EdgeFactory) -> Any:
    """The shop behind config/edge.yaml (images on), its photo sliced."""
    return await make_edge(url(origin, "/"))


async def test_clients_without_accept_get_the_original_byte_for_byte(shop: Any) -> None:
    async with aiohttp.ClientSession() as s:
        for accept in (None, "*/*", "image/*"):  # nothing (wget), curl's */*, a wildcard
            for _ in range(3):  # cold (slices), assembled, hit
                headers = {"Accept": accept} if accept else {}
                status, h, body = await get(s, shop, "/5mo.jpg", **headers)
                assert status == 200 and sha(body) == sha(photo())
                assert h["Content-Type"] == "image/jpeg"
        # Once the original is whole in the worker, its answers name what they depend on.
        status, h, body = await get(s, shop, "/5mo.jpg")
        assert "Accept" in h["Vary"] and "Sec-CH-Viewport-Width" in h["Vary"]
    assert conversions(node_of(shop), "avif", "converted") == 0


async def test_a_browser_gets_avif_sized_to_its_screen(shop: Any) -> None:
    engine = node_of(shop)
    async with aiohttp.ClientSession() as s:
        await get(s, shop, "/5mo.jpg", Accept=CHROME, **SCREEN)  # cold: slices, the original
        status, h, body = await get(s, shop, "/5mo.jpg", Accept=CHROME, **SCREEN)
        # The first ask of a class gets the original while the variant is made.
        assert sha(body) == sha(photo())
        assert "detail=converting-avif-1280" in h["Cache-Status"]
        h, body = await until_converted(s, shop, "/5mo.jpg", "avif-1280", Accept=CHROME, **SCREEN)
        assert h["Content-Type"] == "image/avif" and h["X-Cache"] == "HIT"
        assert h["ETag"].endswith('-avif-1280"')
        vary = [v.strip() for v in h["Vary"].split(",")]
        assert {"Accept", "Sec-CH-Viewport-Width", "Sec-CH-DPR"} <= set(vary)
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "AVIF" and im.size == (1280, 800)
        assert len(body) < len(photo()) // 20
        # Another browser, other values, the same class: the same stored variant.
        _, body2 = await until_converted(
            s,
            shop,
            "/5mo.jpg",
            "avif-1280",
            Accept="image/avif,image/webp,*/*",
            **{"Sec-CH-Viewport-Width": "1100"},
        )
        assert body2 == body
        # A WebP-only browser on a 2x screen: 1000 x 2 rounds up to 2560.
        hints = {"Sec-CH-Viewport-Width": "1000", "Sec-CH-DPR": "2"}
        h, body = await until_converted(
            s, shop, "/5mo.jpg", "webp-2560", Accept="image/webp,*/*", **hints
        )
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "WEBP" and im.width == 2560
        # No hints: the original's width, as AVIF.
        h, body = await until_converted(s, shop, "/5mo.jpg", "avif", Accept=CHROME)
        with Image.open(io.BytesIO(body)) as im:
            assert im.size == (3200, 2000)
        # And wget still gets the original.
        status, _, body = await get(s, shop, "/5mo.jpg")
        assert status == 200 and sha(body) == sha(photo())
    assert conversions(engine, "avif", "converted") == 2
    assert conversions(engine, "webp", "converted") == 1
    assert engine.images.bytes_saved > 2 * len(photo())


async def test_many_and_long_accept_values_keep_memory_bounded(shop: Any) -> None:
    """Accept and hint values are chosen by the client: the kept hits never take a long one
    as a key, and what the image maker remembers is counted (ledger "images")."""
    engine = node_of(shop)
    async with aiohttp.ClientSession() as s:
        await get(s, shop, "/5mo.jpg", Accept=CHROME, **SCREEN)
        _, body = await until_converted(s, shop, "/5mo.jpg", "avif-1280", Accept=CHROME, **SCREEN)
        long_accept = "image/avif," + ",".join(f"x-{i}/y;q=0.1" for i in range(100))
        for i in range(300):
            accept = long_accept if i % 2 else f"image/avif,image/x-{i};q=0.5"
            status, h, got = await get(s, shop, "/5mo.jpg", Accept=accept, **SCREEN)
            assert status == 200 and got == body and "detail=avif-1280" in h["Cache-Status"]
    kept = engine.kept_hits.kept
    assert all(len(k[1]) <= 1024 for k in kept if isinstance(k, tuple) and k[1])
    assert not any(long_accept.encode() in (k[1] or b"") for k in kept if isinstance(k, tuple))
    hits, images = engine.ledger.account("hits"), engine.ledger.account("images")
    assert 0 < hits.used <= hits.limit and 0 < images.used <= images.limit


async def test_the_width_param_is_a_variant_of_the_one_object(shop: Any, origin: Any) -> None:
    async with aiohttp.ClientSession() as s:
        await get(s, shop, "/5mo.jpg")
        await get(s, shop, "/5mo.jpg")  # whole in the worker
        fetched = origin_hits(origin, "/5mo.jpg")
        _, body = await until_converted(s, shop, "/5mo.jpg?w=640", "jpeg-640")
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "JPEG" and im.size == (640, 400)
        _, body = await until_converted(s, shop, "/5mo.jpg?w=700", "avif-960", Accept=CHROME)
        with Image.open(io.BytesIO(body)) as im:
            assert im.size == (960, 600)
        # ?w= wins over the hints; wider than the photo: never upscaled.
        _, body = await until_converted(s, shop, "/5mo.jpg?w=9000", "avif", Accept=CHROME, **SCREEN)
        with Image.open(io.BytesIO(body)) as im:
            assert im.size == (3200, 2000)
        assert origin_hits(origin, "/5mo.jpg") == fetched  # never fetched again
        status, _, body = await get(s, shop, "/5mo.jpg?w=big")
        assert status == 400 and b"w must be a width" in body
        status, _, body = await get(s, shop, "/5mo.jpg")
        assert status == 200 and sha(body) == sha(photo())


async def test_a_purge_of_the_url_removes_every_variant(shop: Any) -> None:
    engine = node_of(shop)
    async with aiohttp.ClientSession() as s:
        await get(s, shop, "/5mo.jpg")
        await get(s, shop, "/5mo.jpg")
        await until_converted(s, shop, "/5mo.jpg", "avif-1280", Accept=CHROME, **SCREEN)
        await until_converted(s, shop, "/5mo.jpg?w=640", "webp-640", Accept="image/webp")
        assert len(engine.tiers.get_now("/5mo.jpg") or []) >= 2
        async with s.post(
            url(shop, "/_edge/purge"),
            json={"urls": ["/5mo.jpg"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
        assert not engine.tiers.get_now("/5mo.jpg")
        status, h, body = await get(s, shop, "/5mo.jpg", Accept=CHROME, **SCREEN)
        assert status == 200 and h["X-Cache"] == "MISS" and sha(body) == sha(photo())
        status, h, body = await get(s, shop, "/5mo.jpg?w=640", Accept="image/webp")
        assert "image/webp" not in h["Content-Type"]


async def test_concurrent_requests_make_one_conversion(shop: Any) -> None:
    engine = node_of(shop)
    async with aiohttp.ClientSession() as s:
        await get(s, shop, "/5mo.jpg")
        await get(s, shop, "/5mo.jpg")
        answers = await asyncio.gather(
            *(get(s, shop, "/5mo.jpg", Accept=CHROME, **SCREEN) for _ in range(12))
        )
        assert all(status == 200 for status, _, _ in answers)
        await until_converted(s, shop, "/5mo.jpg", "avif-1280", Accept=CHROME, **SCREEN)
        await asyncio.gather(
            *(get(s, shop, "/5mo.jpg", Accept=CHROME, **SCREEN) for _ in range(12))
        )
        async with s.get(url(shop, "/_edge/metrics")) as r:
            metrics = await r.text()
    assert conversions(engine, "avif", "converted") == 1
    assert 'edge_image_conversions_total{node="edge-1",format="avif",outcome="converted"} 1' in (
        metrics
    )
    assert "edge_image_bytes_saved_total" in metrics


async def test_pages_ask_for_client_hints(shop: Any) -> None:
    async with aiohttp.ClientSession() as s:
        for x_cache in ("MISS", "HIT"):
            status, h, _ = await get(s, shop, "/")
            assert status == 200 and h["X-Cache"] == x_cache
            assert "Sec-CH-Viewport-Width" in h["Accept-CH"] and "Sec-CH-DPR" in h["Accept-CH"]
        status, h, _ = await get(s, shop, "/woody.css")
        assert "Accept-CH" not in h


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "JPEG", quality=50)
    return buf.getvalue()


@pytest.fixture
async def odd_images(aiohttp_server: Any) -> Any:
    """An origin with a 50-megapixel JPEG, a truncated one and the lab's photo."""
    bomb = jpeg(8000, 6250)
    truncated = photo()[: len(photo()) * 2 // 3]
    bodies = {"/bomb.jpg": bomb, "/truncated.jpg": truncated, "/photo.jpg": photo()}

    async def handle(request: web.Request) -> web.Response:
        headers = {"Content-Type": "image/jpeg", "Cache-Control": "max-age=600"}
        return web.Response(body=bodies[request.path], headers=headers)

    app = web.Application()
    app.router.add_get("/{name}", handle)
    server = await aiohttp_server(app)
    server.bodies = bodies
    return server


@pytest.mark.parametrize(
    ("path", "reason", "settings"),
    [
        ("/bomb.jpg", "too-many-pixels", {}),
        ("/truncated.jpg", "unreadable", {}),
        # Past max_pixels' guard, the process's address space is the bound.
        ("/bomb.jpg", "memory", {"max_pixels": 100_000_000, "worker_memory": 160 * 2**20}),
        # A conversion past its time limit: its process is ended, the pool made again.
        ("/photo.jpg", "time-limit", {"time_limit": 0.1}),
    ],
)
async def test_what_cannot_be_converted_is_served_as_it_is(
    odd_images: Any, make_edge: EdgeFactory, path: str, reason: str, settings: dict[str, Any]
) -> None:
    images = replace(ImageSettings(enabled=True, rules=(ImageRule(),)), **settings)
    edge = await make_edge(url(odd_images, "/"), images=images)
    engine = node_of(edge)
    original = odd_images.bodies[path]
    async with aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            status, h, body = await get(s, edge, path, Accept=CHROME)  # at full size
            assert status == 200 and sha(body) == sha(original)
            if f"detail=not-converted-{reason}" in h.get("Cache-Status", ""):
                break
            assert loop.time() < deadline, (h.get("Cache-Status"), engine.images.conversions)
            await asyncio.sleep(0.1)
        if reason == "memory":
            # Refused for that variant alone: a smaller one (JPEG decoded at 1/8) is made.
            _, body = await until_converted(s, edge, path, "avif-640", Accept=CHROME, Width="600")
            with Image.open(io.BytesIO(body)) as im:
                assert im.width == 640
        status, h, body = await get(s, edge, "/_edge/health")
        assert status == 200  # the edge is up
    refused = sum(n for label, n in engine.images.conversions.items() if label.endswith(reason))
    assert refused >= 1
    assert conversions(engine, "avif", "converted") == (reason == "memory")


DOOR_REQUESTS = [
    ((b"accept", CHROME.encode()), (b"sec-ch-viewport-width", b"1280"), (b"sec-ch-dpr", b"1")),
    ((b"accept", b"image/webp"),),
    ((b"accept", b"*/*"),),
    (),
]


async def test_http1_and_h2_give_the_same_answer(origin: Any, tmp_path: Path) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    images = ImageSettings(enabled=True, rules=(ImageRule(),))
    # Fresh for an hour, whatever the photo file's age (a fresh clone's was just written).
    rules = (Rule(match="/5mo.jpg", terms=RuleTerms(ttl=3600, rule_wins=True)),)
    limits = {"images": images, "rules": rules}
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca, limits=limits)
    try:
        engine = server.node

        async def ask(door: str, fields: tuple[tuple[bytes, bytes], ...]) -> Any:
            sent = Sent(b"GET", b"/5mo.jpg", b"localhost", fields, b"")
            if door == "h1":
                return await _h1(server.port, sent, None)
            return await _h2(server.tls_port, ca, sent)

        await ask("h1", ())
        for fields in DOOR_REQUESTS:
            await ask("h1", fields)  # asks for the variant
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while engine.images.making or engine.images._tasks:
            assert loop.time() < deadline
            await asyncio.sleep(0.1)
        for fields in DOOR_REQUESTS:
            one, two = await ask("h1", fields), await ask("h2", fields)
            assert one.status == two.status == 200
            assert sha(one.body) == sha(two.body)
            for name in ("content-type", "etag", "vary", "content-length"):
                assert one.fields.get(name) == two.fields.get(name), name
            assert (
                one.fields["cache-status"].split("ttl=")[0]
                == (two.fields["cache-status"].split("ttl=")[0])
            )
        # The kept hits in front answer as the engine's general path, byte for byte.
        for door in ("h1", "h2"):
            for fields in DOOR_REQUESTS:
                with gate_shut(engine):
                    general = comparable(await ask(door, fields))
                for _ in range(3):
                    assert comparable(await ask(door, fields)) == general, (door, fields)
        assert any(
            isinstance(key, tuple) and (key[1] or b"").startswith(b"\x00image")
            for key in engine.kept_hits.kept
        )
        assert conversions(engine, "avif", "converted") == 1
        assert conversions(engine, "webp", "converted") == 1
    finally:
        await server.stop()


@pytest.mark.redis
async def test_a_variant_made_on_one_node_is_served_by_another_and_purged_from_all(
    origin: Any, make_edge: EdgeFactory, redis_url: str, key_prefix: str
) -> None:
    a = await make_edge(
        url(origin, "/"), node="edge-a", redis_url=redis_url, redis_prefix=key_prefix
    )
    b = await make_edge(
        url(origin, "/"), node="edge-b", redis_url=redis_url, redis_prefix=key_prefix
    )
    async with aiohttp.ClientSession() as s:
        await get(s, a, "/5mo.jpg")
        await get(s, a, "/5mo.jpg")
        _, variant = await until_converted(s, a, "/5mo.jpg", "avif-1280", Accept=CHROME, **SCREEN)
        await node_of(a).tiers.drain()  # the Redis writes
        # edge-b: the original from the slices in Redis, then the variant edge-a made.
        status, h, body = await get(s, b, "/5mo.jpg", Accept=CHROME, **SCREEN)
        assert status == 200 and sha(body) == sha(photo())
        h, body = await until_converted(s, b, "/5mo.jpg", "avif-1280", Accept=CHROME, **SCREEN)
        assert body == variant and h["X-Served-By"] == "edge-b"
        assert conversions(node_of(b), "avif", "converted") == 0
        async with s.post(
            url(b, "/_edge/purge"),
            json={"urls": ["/5mo.jpg"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
        for edge in (a, b):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:  # each node applies the purge from the bus
                status, h, body = await get(s, edge, "/5mo.jpg", Accept=CHROME, **SCREEN)
                if h["Content-Type"] == "image/jpeg":
                    break
                assert loop.time() < deadline, h.get("Cache-Status")
                await asyncio.sleep(0.2)
            assert sha(body) == sha(photo())
    assert origin_hits(origin, "/5mo.jpg") > 39  # fetched again after the purge


async def test_the_conversion_processes_end_when_idle(
    shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images_module, "POOL_IDLE", 0.5)
    engine = node_of(shop)
    async with aiohttp.ClientSession() as s:
        await get(s, shop, "/5mo.jpg")
        await get(s, shop, "/5mo.jpg")
        await until_converted(s, shop, "/5mo.jpg", "webp-640", Accept="image/webp", Width="600")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while engine.images.pool is not None:
            assert loop.time() < deadline
            await asyncio.sleep(0.1)
        # A new demand makes a new pool.
        await until_converted(s, shop, "/5mo.jpg", "avif-640", Accept=CHROME, Width="600")
    assert conversions(engine, "avif", "converted") == 1
