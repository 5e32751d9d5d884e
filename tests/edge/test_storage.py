"""The storage interface and the stack (edge.store.storage, backends, tiers): every registered
backend is built from its config section and is a storage of the kind it says; every backend
purges exactly what the one rule `Purge.selects` selects; the stack serves, stores, purges and
keeps workers coherent without naming a backend. Against the real LMDB and the real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import socket
import time

import pytest

from edge.cache.entry import Entry
from edge.config.settings import EdgeConfig
from edge.store import backends
from edge.store.memory import MemoryTier
from edge.store.node import NodeTier
from edge.store.redis_tier import RedisTier
from edge.store.storage import (
    Coherent,
    LocalStorage,
    Locking,
    Place,
    Purge,
    SharedStorage,
)
from edge.store.tiers import Tiers

LOCAL_METHODS = ("get", "put", "purge", "clear", "touch", "tick", "close", "stats", "health")
SHARED_ASYNC = ("get", "put", "purge", "tick", "close")


def entry(key: str, tags: tuple[str, ...] = (), body: bytes = b"x") -> Entry:
    now = time.time()
    return Entry(key, 200, (), body, now - 0.1, now, tags=tags, meta={"keep": 60.0})


@pytest.fixture
def both(redis_url: str, key_prefix: str) -> EdgeConfig:
    """A configuration that turns every registered backend on."""
    return dataclasses.replace(
        EdgeConfig(), redis_url=redis_url, redis_prefix=key_prefix, node_cache_enabled=True
    )


async def built(cfg: EdgeConfig, path: str) -> Tiers:
    return await backends.build(cfg, Place(path))


def fresh_path() -> str:
    return NodeTier.prepare(None, "edge-test")


async def test_every_backend_is_built_from_its_section_and_is_a_storage(
    both: EdgeConfig,
) -> None:
    path = fresh_path()
    tiers = await built(both, path)
    try:
        assert {s.name for s in tiers.stack} == set(backends.BACKENDS)
        assert tiers.stack == tiers.local + tiers.shared  # local ones first
        for storage in tiers.stack:
            for method in LOCAL_METHODS if storage.local else (*SHARED_ASYNC, "stats", "health"):
                assert callable(getattr(storage, method)), (storage.name, method)
            for method in SHARED_ASYNC:
                is_async = inspect.iscoroutinefunction(getattr(storage, method))
                assert is_async is not storage.local, (storage.name, method)
            assert isinstance(storage, Locking)  # both collapse misses
        assert all(isinstance(s, Coherent) for s in tiers.local)
        assert tiers.health() == {"node_cache": path, "redis": "up"}
        assert tiers.bus is not None  # the Redis backend carries the purge bus
    finally:
        await tiers.close()
        NodeTier.remove(path)


async def test_the_types_conform(redis_url: str) -> None:
    """What mypy checks here: each class is the storage its `local` says."""
    tier = NodeTier(None, 1 << 20)
    memory: LocalStorage = MemoryTier(1 << 20)
    node: LocalStorage = tier
    shared: SharedStorage = RedisTier(redis_url)
    assert memory.local and node.local and not shared.local
    await shared.close()
    node.close()
    NodeTier.remove(tier.path)


async def test_backends_off_say_off() -> None:
    cfg = dataclasses.replace(EdgeConfig(), node_cache_enabled=False, redis_url=None)
    tiers = await built(cfg, "")
    assert tiers.stack == ()
    assert tiers.health() == {"node_cache": "off", "redis": "off"}
    assert tiers.backend_stats() == {"node_cache": {"status": "off"}, "redis": {"status": "off"}}
    assert tiers.shared_status() == "off"
    tiers.store(entry("http://h/a"), time.time() + 60)
    assert [e.body for e in tiers.get_now("http://h/a") or []] == [b"x"]
    assert tiers.get_now("http://h/none") == []  # no shared storage: a miss, not "ask"


KEYS = {
    "http://h/api/misc/a": ("t1",),
    "http://h/api/misc/b?x=1": ("t2",),
    "http://h/img/a.png": ("t1", "img"),
    "http://h/img/b.jpg": ("img",),
    "https://other/api/misc/c": (),
    "/bare/path": ("t3",),
}
PURGES = [
    Purge(urls=["http://h/img/b.jpg", "http://h/none"]),
    Purge(prefixes=["/api/misc/"]),
    Purge(prefixes=["https://other/"]),
    Purge(prefixes=["*.png"]),
    Purge(prefixes=["/img/?.jpg"]),
    Purge(prefixes=["http://h/api/*"]),
    Purge(tags=["t1", "t3"]),
    Purge(tags=["img"], urls=["/bare/path"]),
    Purge(all=True),
    Purge(prefixes=["/api/misc/"], soft=True),
]


async def test_the_shared_status_is_every_shared_storage_s(redis_url: str, key_prefix: str) -> None:
    """`edge_redis_up`'s source: up only when every shared storage is, not the first: a
    Redis that answers beside one nobody listens for."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]  # closed once the block ends: refused
    up = RedisTier(redis_url, prefix=key_prefix, sweep_every=0)
    down = RedisTier(f"redis://127.0.0.1:{nobody}/0", prefix=key_prefix, sweep_every=0)
    await up.start()
    await down.start()
    try:
        await down.tick()  # asked something: it learns nobody answers
        hot = MemoryTier(1 << 20, 1 << 16)
        assert Tiers(hot, []).shared_status() == "off"
        assert Tiers(hot, [up]).shared_status() == "up"
        assert down.health() == "down"
        assert Tiers(hot, [up, down]).shared_status() == "down"
        assert Tiers(hot, [down, up]).shared_status() == "down"
    finally:
        await up.close()
        await down.close()


@pytest.mark.parametrize("purge", PURGES, ids=lambda p: repr(p)[:60])
async def test_every_backend_purges_what_the_rule_selects(
    purge: Purge, redis_url: str, key_prefix: str
) -> None:
    expected = {k for k, tags in KEYS.items() if purge.selects(k, tags)}
    node = NodeTier(None, 1 << 22)
    redis = RedisTier(redis_url, prefix=key_prefix, sweep_every=0)
    await redis.start()
    memory = MemoryTier(1 << 22)
    try:
        until = time.time() + 60
        for key, tags in KEYS.items():
            memory.put(entry(key, tags), until)
            node.put(entry(key, tags), until)
            assert await redis.put(entry(key, tags), until)
        counts = [memory.purge(purge), node.purge(purge), await redis.purge(purge)]
        assert counts == [len(expected)] * 3, purge
        for key in KEYS:
            found = [memory.get(key), node.get(key), await redis.get(key)]
            if key not in expected:
                assert all(len(f) == 1 and not f[0].invalidated for f in found), key
            elif purge.soft:
                assert all(len(f) == 1 and f[0].invalidated for f in found), key
            else:
                assert found == [[], [], []], key
    finally:
        await redis.close()
        node.close()
        NodeTier.remove(node.path)


def test_a_malformed_prefix_is_refused_before_any_storage_sees_it() -> None:
    with pytest.raises(ValueError, match="api/misc"):
        Purge(urls=["http://h/a"], prefixes=["api/misc"])


def test_a_bus_message_is_the_purge_it_announces() -> None:
    purge = Purge(urls=["http://h/a"], prefixes=["/x/*"], tags=["t"], soft=True)
    again = Purge.from_message(purge.message(123.0))
    assert (again.urls, again.prefixes, again.tags, again.soft, again.at) == (
        purge.urls,
        purge.prefixes,
        purge.tags,
        True,
        123.0,
    )


async def test_the_stack_stores_shares_and_purges_through_every_storage(
    both: EdgeConfig,
) -> None:
    """Two workers of one node (their own hot copies, one node tier: here one process, so
    one instance of it) and a worker of another node (no node tier, the same Redis): what
    one stores the others serve; a purge in one worker is seen by the other's hot copy
    through the node tier's generation."""
    path = fresh_path()
    one = await built(both, path)
    two = Tiers(MemoryTier(1 << 22), one.stack, None, backends.BACKENDS)
    far = await built(dataclasses.replace(both, node="edge-2", node_cache_enabled=False), "")
    try:
        key = "http://h/obj"
        one.store(entry(key, ("t",), b"stored"), time.time() + 60)
        await asyncio.sleep(0)  # the local storages are written on the next loop turn
        await one.drain()  # the shared ones in the background
        assert [e.body for e in two.get_now(key) or []] == [b"stored"]  # from the node tier
        assert far.get_now(key) is None  # only a shared storage can tell
        assert [e.body for e in await far.get(key)] == [b"stored"]
        assert [e.body for e in far.hot.get(key) or []] == [b"stored"]  # now a hot copy
        assert two.hot.get(key)  # the second worker's hot copy
        assert one.purge_here(Purge(tags=["t"])) == 1
        assert two.get_now(key) is None  # its hot copy was checked against the node tier
        assert not two.hot.get(key)
        done = await one.purge_shared(Purge(tags=["t"]))
        assert done is not None and done[0] == 1 and done[1] is not None
        assert await one.get_shared(key) == []
        assert [lock.outside_node for lock in one.locking()] == [False, True]
    finally:
        for tiers in (one, far):
            await tiers.close()
        NodeTier.remove(path)


# In a fresh interpreter: a worker's tiers with the node tier on and Redis off.
WITHOUT_REDIS = """
import asyncio, dataclasses, sys
from edge.config.settings import EdgeConfig
from edge.store import backends
from edge.store.node import NodeTier
from edge.store.storage import Place

path = NodeTier.prepare(None, "edge-test")
cfg = dataclasses.replace(EdgeConfig(), redis_url=None, node_cache_enabled=True)
tiers = asyncio.run(backends.build(cfg, Place(path)))
print(",".join(s.name for s in tiers.stack), "redis" in sys.modules)
asyncio.run(tiers.close())
NodeTier.remove(path)
"""


def test_a_backend_that_is_off_never_imports_its_client_library() -> None:
    """A node without Redis does not load the Redis client (9 MiB in each worker)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_REDIS], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["node_cache", "False"]
