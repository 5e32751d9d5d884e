"""Redis faults: down, slow, restarted. The edge serves from memory and the origin with no 5xx,
says so once in the log, in /_edge/health and in the metrics, and reconnects by itself.
Each test runs its own redis-server (never the machine's)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.resilience.conftest import EdgeFactory, OriginFactory
from tests.resilience.helpers import RedisServer


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


async def _get(s: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with s.get(url) as r:
        return r.status, r.headers.get("X-Cache", ""), await r.read()


async def _health(s: aiohttp.ClientSession, base: str) -> str:
    async with s.get(base + "/_edge/health") as r:
        return str(json.loads(await r.read())["redis"])


async def test_redis_down_then_back(
    own_redis: RedisServer,
    make_origin: OriginFactory,
    make_edge: EdgeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin, so = await make_origin()
    for i in range(40):
        origin.set(f"/p{i}", body=f"page {i}".encode(), Cache_Control="max-age=600")
    edge = await make_edge([str(so.make_url("/"))], redis_url=own_redis.url, redis_prefix="res")
    base = str(edge.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as s:
        assert (await _get(s, base + "/p0"))[1] == "MISS"
        assert (await _get(s, base + "/p0"))[1] == "HIT"
        assert await _health(s, base) == "up"
        caplog.set_level(logging.WARNING)
        caplog.clear()
        own_redis.kill()
        t0 = time.monotonic()
        results = [await _get(s, f"{base}/p{i % 20}") for i in range(60)]
        elapsed = time.monotonic() - t0
        assert all(st == 200 for st, _, _ in results), [r[:2] for r in results if r[0] != 200]
        assert all(body == f"page {i % 20}".encode() for i, (_, _, body) in enumerate(results))
        assert elapsed < 20, f"60 requests took {elapsed:.1f} s with Redis down"
        assert await _health(s, base) == "down"
        async with s.get(base + "/_edge/metrics") as r:
            assert 'edge_redis_up{node="edge-1"} 0' in await r.text()
        down_lines = [
            r for r in caplog.records if r.name == "edge.store.redis" and "unavailable" in r.msg
        ]
        assert len(down_lines) == 1, [r.getMessage() for r in caplog.records]
        # Redis comes back (empty): the tier reconnects by itself and stores again.
        own_redis.start()
        for _ in range(100):
            await _get(s, f"{base}/p{20 + _ % 20}")
            if await _health(s, base) == "up":
                break
            await asyncio.sleep(0.1)
        assert await _health(s, base) == "up"
        origin.set("/fresh", body=b"fresh", Cache_Control="max-age=600")
        assert (await _get(s, base + "/fresh"))[0] == 200
    client = redis.Redis.from_url(own_redis.url)
    for _ in range(50):
        if list(client.scan_iter("res:obj:*")):
            break
        await asyncio.sleep(0.1)
    assert list(client.scan_iter("res:obj:*")), "nothing stored in Redis after it came back"
    client.close()


async def test_slow_redis_never_slows_or_fails_requests(
    own_redis: RedisServer, make_origin: OriginFactory, make_edge: EdgeFactory
) -> None:
    origin, so = await make_origin()
    for i in range(30):
        origin.set(f"/s{i}", body=f"slow {i}".encode(), Cache_Control="max-age=600")
    edge = await make_edge([str(so.make_url("/"))], redis_url=own_redis.url, redis_prefix="slow")
    base = str(edge.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as s:
        assert (await _get(s, base + "/s0"))[0] == 200

        def stall() -> None:  # Redis answers nothing for 3 s
            c = redis.Redis.from_url(own_redis.url)
            c.execute_command("DEBUG", "SLEEP", "3")
            c.close()

        thread = threading.Thread(target=stall)
        thread.start()
        await asyncio.sleep(0.2)
        worst = 0.0
        statuses: list[int] = []
        for i in range(1, 30):
            t0 = time.monotonic()
            st, _, body = await _get(s, f"{base}/s{i}")
            worst = max(worst, time.monotonic() - t0)
            statuses.append(st)
            assert body == f"slow {i}".encode()
        thread.join()
    assert statuses == [200] * 29
    # redis.timeout is 250 ms (x4 per call at most): never the 3 s of the stall.
    assert worst < 2.5, f"a request waited {worst:.2f} s on a stalled Redis"


async def test_edge_starts_with_redis_down(
    tmp_path: Path, make_origin: OriginFactory, make_edge: EdgeFactory
) -> None:
    dead = RedisServer(tmp_path)  # never started: connections refused
    origin, so = await make_origin()
    origin.set("/a", body=b"a", Cache_Control="max-age=600")
    edge: Any = await make_edge([str(so.make_url("/"))], redis_url=dead.url)
    base = str(edge.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as s:
        assert [(await _get(s, base + "/a"))[0] for _ in range(5)] == [200] * 5
        assert await _health(s, base) == "down"
        dead.start()
        try:
            for _ in range(100):
                await _get(s, base + "/a")
                origin.set("/b", body=b"b", Cache_Control="max-age=600")
                await _get(s, base + "/b")
                if await _health(s, base) == "up":
                    break
                await asyncio.sleep(0.1)
            assert await _health(s, base) == "up"
        finally:
            dead.stop()
