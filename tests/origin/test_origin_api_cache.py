"""`--api-cache`: the lab's in-API Redis cache, against the real Redis."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from tests.origin.conftest import ClientFactory


async def _timed_get(client: object, path: str) -> tuple[str, float]:
    started = time.monotonic()
    resp = await client.get(path)  # type: ignore[attr-defined]
    assert resp.status == 200
    return await resp.text(), time.monotonic() - started


async def test_heavy_is_cached(
    origin_client: ClientFactory, redis_url: str, key_prefix: str, tmp_path: object
) -> None:
    client = await origin_client(
        db=f"sqlite:///{tmp_path}/w.sqlite3",
        heavy_seconds=0.4,
        api_cache=redis_url,
        api_cache_prefix=key_prefix,
    )
    miss, miss_time = await _timed_get(client, "/api/misc/heavy?name=benchmark")
    hit, hit_time = await _timed_get(client, "/api/misc/heavy?name=benchmark")
    assert miss_time >= 0.38
    assert hit_time < 0.2
    assert hit == miss  # the same answer, timestamp included
    other, other_time = await _timed_get(client, "/api/misc/heavy?name=other")
    assert other_time >= 0.38 and "-other-" in other

    r = aioredis.from_url(redis_url)
    try:
        assert await r.get(f"{key_prefix}:heavy:benchmark") == miss.encode()
        ttl = await r.ttl(f"{key_prefix}:heavy:benchmark")
        assert 25 <= ttl <= 30  # heavy is cached 30 s
    finally:
        await r.aclose()


async def test_last_is_cached_and_dropped_on_add(
    origin_client: ClientFactory, redis_url: str, key_prefix: str, tmp_path: object
) -> None:
    client = await origin_client(
        db=f"sqlite:///{tmp_path}/w.sqlite3",
        db_seconds=0.4,
        api_cache=redis_url,
        api_cache_prefix=key_prefix,
    )
    miss, miss_time = await _timed_get(client, "/api/products/last")
    hit, hit_time = await _timed_get(client, "/api/products/last")
    assert miss_time >= 0.38 and hit_time < 0.2
    assert hit == miss and miss.endswith("(last=Joli train)")
    r = aioredis.from_url(redis_url)
    try:
        assert 10 <= await r.ttl(f"{key_prefix}:last") <= 15  # last is cached 15 s
        added, _ = await _timed_get(client, "/api/products?product=Toupie")
        assert added == "Toupie"
        assert await r.exists(f"{key_prefix}:last") == 0
    finally:
        await r.aclose()
    fresh, fresh_time = await _timed_get(client, "/api/products/last")
    assert fresh_time >= 0.38
    assert fresh.endswith(" - 3 products (last=Toupie)")


async def test_entries_expire(
    origin_client: ClientFactory, redis_url: str, key_prefix: str, tmp_path: object
) -> None:
    client = await origin_client(
        db=f"sqlite:///{tmp_path}/w.sqlite3",
        heavy_seconds=0.3,
        api_cache=redis_url,
        api_cache_prefix=key_prefix,
        api_cache_heavy_ttl=0.5,
    )
    first, _ = await _timed_get(client, "/api/misc/heavy?name=x")
    await asyncio.sleep(0.7)
    second, elapsed = await _timed_get(client, "/api/misc/heavy?name=x")
    assert elapsed >= 0.28 and second != first


async def test_redis_down_serves_uncached(origin_client: ClientFactory, tmp_path: object) -> None:
    client = await origin_client(
        db=f"sqlite:///{tmp_path}/w.sqlite3",
        heavy_seconds=0.1,
        api_cache="redis://127.0.0.1:1/0",
    )
    body, _ = await _timed_get(client, "/api/misc/heavy?name=x")
    assert body.endswith("Woody -x- Woody")
