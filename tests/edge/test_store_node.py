"""Tests of the node tier (LMDB, shared by the worker processes of a node).

The MemoryTier contract runs against both tiers; then what sharing adds, with real
processes (multiprocessing with fork: each child opens its own NodeTier, as a worker does):
sharing, purge visibility, refuse_late, fill locks and their dead holders, the LRU bound,
large objects and a full map, restart, corrupt and older files, and two owners.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.cache.entry import Entry
from edge.store.memory import MemoryTier, MiB
from edge.store.node import (
    DATA_FILE,
    OWNER_STALE_SECONDS,
    NodeTier,
    NodeTierError,
    _dump_slot,
    _on_tmpfs,
    _slot,
)
from edge.store.storage import Purge
from edge.store.tiers import Tiers
from tests.edge.test_store_memory import OVERHEAD, Clock, make, sized

Tier = MemoryTier | NodeTier
Factory = Callable[..., Any]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node_path(tmp_path: Path) -> str:
    return str(tmp_path / "node")


@pytest.fixture
def opened() -> Iterator[list[NodeTier]]:
    tiers: list[NodeTier] = []
    yield tiers
    for tier in tiers:
        tier.close()


@pytest.fixture(params=["memory", "node"])
def new(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock, opened: list[NodeTier]
) -> Factory:
    """A factory of the tier under test, with the test's clock."""
    count = 0

    def factory(**kw: Any) -> Tier:
        nonlocal count
        kw.setdefault("clock", clock)
        if request.param == "memory":
            return MemoryTier(**kw)
        count += 1
        tier = NodeTier(tmp_path / f"t{count}", **kw)
        opened.append(tier)
        return tier

    return factory


def keys_of(tier: Tier) -> list[str]:
    if isinstance(tier, MemoryTier):
        return [k for k, _ in tier._slots()]
    return [k for k, _ in tier._slot_records()]


def settle(tier: Tier) -> None:
    """A node tier's get never writes: expired variants go on the next flush."""
    if isinstance(tier, NodeTier):
        tier.touch_flush()


def check(tier: Tier) -> None:
    """The counters and the indexes agree with what is stored."""
    if isinstance(tier, NodeTier):
        assert tier._audit() == []
        return
    slots = tier._slots()
    stats = tier.stats()
    assert stats["entries"] == sum(len(s.variants) for _, s in slots)
    assert stats["bytes"] == sum(s.size for _, s in slots)
    tags: dict[str, set[str]] = {}
    for key, slot in slots:
        for tag in slot.tags():
            tags.setdefault(tag, set()).add(key)
    assert tier._tag_index() == tags


# -- the MemoryTier contract, on both tiers ---------------------------------------------------


def test_put_get_roundtrip_and_miss(new: Factory, clock: Clock) -> None:
    tier = new()
    e = make(tags=("t",))
    assert tier.get(e.key) == []
    assert tier.put(e, clock.now + 60)
    assert tier.get(e.key) == [e]
    assert e.key in tier and "http://shop.example/b" not in tier
    assert len(tier) == 1
    s = tier.stats()
    assert (s["keys"], s["entries"], s["bytes"], s["tags"]) == (1, 1, e.size, 1)


def test_byte_bound_and_lru_keeps_hot_objects(new: Factory, clock: Clock) -> None:
    tier = new(max_bytes=10_000, max_object_bytes=5_000)
    hot = sized("http://h/hot", 1_000)
    assert tier.put(hot, clock.now + 60)
    for i in range(50):
        assert tier.put(sized(f"http://h/cold{i}", 1_000), clock.now + 60)
        assert tier.get(hot.key) == [hot]  # touched: most recent
        assert tier.stats()["bytes"] <= 10_000
        check(tier)
    stats = tier.stats()
    assert (stats["entries"], stats["bytes"], stats["evictions"]) == (10, 10_000, 41)
    assert tier.get("http://h/cold0") == []
    assert tier.get("http://h/cold49") != []


def test_lru_evicts_by_recency_and_size(new: Factory, clock: Clock) -> None:
    tier = new(max_bytes=3_000, max_object_bytes=3_000)
    for name in "abc":
        tier.put(sized(f"http://h/{name}", 1_000), clock.now + 60)
    tier.get("http://h/a")  # b is now the least recently used
    tier.put(sized("http://h/big", 2_000), clock.now + 60)  # needs two slots' room
    assert [k for k in ("a", "b", "c", "big") if tier.get(f"http://h/{k}")] == ["a", "big"]


def test_per_object_limit(new: Factory, clock: Clock) -> None:
    tier = new()  # defaults: 256 MiB, 16 MiB per object
    image = make("http://h/img.jpg", b"\xff" * (5 * MiB))
    assert tier.fits(image.size)
    assert tier.put(image, clock.now + 60)
    assert tier.get(image.key) == [image]
    huge = make("http://h/video.mp4", b"\0" * (17 * MiB))
    assert not tier.fits(huge.size)
    assert not tier.put(huge, clock.now + 60)
    assert tier.get(huge.key) == []
    small = new(max_bytes=1_000, max_object_bytes=10_000)
    assert not small.fits(1_001)  # never more than the whole tier


def test_variants_replace_and_order(new: Factory, clock: Clock) -> None:
    tier = new()
    key = "http://h/page"
    gz = make(key, b"gz", vary=(("accept-encoding", "gzip"),), rt=clock.now - 10)
    br = make(key, b"br", vary=(("accept-encoding", "br"),), rt=clock.now - 5)
    tier.put(gz, clock.now + 60)
    tier.put(br, clock.now + 60)
    assert tier.get(key) == [br, gz]  # most recent response first
    gz2 = make(key, b"gz2", vary=(("accept-encoding", "gzip"),), rt=clock.now)
    tier.put(gz2, clock.now + 60)
    assert tier.get(key) == [gz2, br]
    assert tier.stats()["entries"] == 2
    assert tier.stats()["bytes"] == gz2.size + br.size
    assert tier.delete(key) == 2
    assert tier.get(key) == []
    assert tier.stats()["bytes"] == 0
    check(tier)


def test_max_variants_drops_oldest(new: Factory, clock: Clock) -> None:
    tier = new(max_variants=3)
    key = "http://h/v"
    for i in range(5):
        tier.put(make(key, vary=(("x-v", str(i)),)), clock.now + 60)
    assert sorted(e.vary[0][1] for e in tier.get(key)) == ["2", "3", "4"]
    check(tier)


def test_keep_until_expiry(new: Factory, clock: Clock) -> None:
    tier = new()
    key = "http://h/p"
    short = make(key, vary=(("a", "1"),))
    long = make(key, vary=(("a", "2"),))
    other = make("http://h/other", tags=("t",))
    assert not tier.put(make("http://h/past"), clock.now)  # already dead: refused
    tier.put(short, clock.now + 10)
    tier.put(long, clock.now + 100)
    tier.put(other, clock.now + 10)
    clock.now += 10  # keep-until is exclusive
    assert tier.get(key) == [long]
    assert tier.get(other.key) == []
    settle(tier)
    check(tier)
    assert tier.stats()["bytes"] == long.size
    assert tier._tag_index() == {}
    clock.now += 100
    tier.put(make("http://h/new"), clock.now + 5)  # put sweeps dead keys
    assert tier.stats()["keys"] == 1
    assert tier.stats()["expirations"] == 3
    check(tier)


def test_expire_drops_every_dead_key(new: Factory, clock: Clock) -> None:
    tier = new()
    for i in range(30):
        tier.put(make(f"http://h/{i}", tags=("x",)), clock.now + 1 + i % 3)
    assert tier.expire(clock.now + 2) == 20
    assert tier.stats()["keys"] == 10
    check(tier)


def _fill(tier: Tier, clock: Clock) -> None:
    entries = [
        make("http://shop.example/api/misc/a?x=1", tags=("misc",)),
        make("http://shop.example/api/misc/b", tags=("misc", "b")),
        make("http://cdn.example/api/misc/c"),
        make("http://shop.example/api/items/1", tags=("item-1",)),
        make("http://shop.example/api/items/1", vary=(("accept", "json"),), tags=("item-1",)),
        make("http://shop.example/img/ab.png", tags=("img",)),
        make("http://shop.example/img/abc.png", tags=("img",)),
    ]
    for e in entries:
        tier.put(e, clock.now + 60)


ALL = {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c", "/api/items/1", "/img/ab.png"}


@pytest.mark.parametrize(
    ("kwargs", "count", "gone"),
    [
        ({"urls": ["http://shop.example/api/items/1"]}, 2, {"/api/items/1"}),
        ({"urls": ["http://shop.example/nope"]}, 0, set()),
        ({"prefixes": ["/api/misc/"]}, 3, {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c"}),
        ({"prefixes": ["http://shop.example/api/misc/"]}, 2, {"/api/misc/a?x=1", "/api/misc/b"}),
        ({"prefixes": ["/api/misc/*"]}, 3, {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c"}),
        ({"prefixes": ["/api/misc/*=1"]}, 1, {"/api/misc/a?x=1"}),
        ({"prefixes": ["/img/??.png"]}, 1, {"/img/ab.png"}),
        ({"prefixes": ["http://cdn.example/*"]}, 1, {"/api/misc/c"}),
        ({"prefixes": ["http://shop.example/img/a*"]}, 2, {"/img/ab.png", "/img/abc.png"}),
        ({"tags": ["misc"]}, 2, {"/api/misc/a?x=1", "/api/misc/b"}),
        ({"tags": ["item-1", "img"]}, 4, {"/api/items/1", "/img/ab.png", "/img/abc.png"}),
        ({"tags": ["b"], "urls": ["http://shop.example/api/misc/b"]}, 1, {"/api/misc/b"}),
        ({"all": True}, 7, ALL | {"/img/abc.png"}),
    ],
)
@pytest.mark.parametrize("soft", [False, True])
def test_purge(
    new: Factory,
    clock: Clock,
    kwargs: dict[str, Any],
    count: int,
    gone: set[str],
    soft: bool,
) -> None:
    from edge.store.storage import key_path

    tier = new()
    _fill(tier, clock)
    keys = keys_of(tier)
    assert tier.purge(Purge(**kwargs, soft=soft)) == count
    for key in keys:
        entries = tier.get(key)
        if key_path(key) in gone:
            if soft:
                assert entries and all(e.invalidated for e in entries)
            else:
                assert entries == []
        else:
            assert entries and not any(e.invalidated for e in entries)
    if not soft:
        assert all(key_path(k) not in gone for ks in tier._tag_index().values() for k in ks)
    check(tier)


def test_soft_purge_copies_entries(new: Factory, clock: Clock) -> None:
    tier = new()
    e = make(tags=("t",))
    tier.put(e, clock.now + 60)
    assert tier.purge(Purge(tags=["t"], soft=True)) == 1
    assert not e.invalidated  # the object handed out earlier is not changed
    (again,) = tier.get(e.key)
    assert again.invalidated and again.body == e.body
    assert tier.stats()["bytes"] == e.size
    fresh = make(tags=("t",))
    tier.put(fresh, clock.now + 60)  # a new response replaces the invalidated one
    assert tier.get(e.key) == [fresh]


def test_bad_prefix_is_refused_before_anything(new: Factory, clock: Clock) -> None:
    tier = new()
    _fill(tier, clock)
    with pytest.raises(ValueError):
        tier.purge(Purge(urls=["http://shop.example/api/misc/b"], prefixes=["api/misc"]))
    assert tier.stats()["entries"] == 7


def test_purge_keys_without_host(new: Factory, clock: Clock) -> None:
    tier = new()
    for key in ("/api/misc/a?x=1", "/api/misc/b", "/img/a.png"):
        tier.put(make(key), clock.now + 60)
    assert tier.purge(Purge(prefixes=["/api/misc/"])) == 2
    assert tier.purge(Purge(prefixes=["*.png"])) == 1
    assert tier.stats()["keys"] == 0


def test_indexes_consistent_after_eviction(new: Factory, clock: Clock) -> None:
    tier = new(max_bytes=5_000, max_object_bytes=5_000)
    for i in range(40):
        tier.put(sized(f"http://h/{i}", 1_000, tags=(f"t{i % 3}", "all")), clock.now + 60)
    check(tier)
    index = tier._tag_index()
    held = set(keys_of(tier))
    assert len(held) == 5
    assert set().union(*index.values()) == held
    assert index["all"] == held
    assert tier.purge(Purge(tags=["all"])) == 5
    assert tier._tag_index() == {}
    stats = {k: v for k, v in tier.stats().items() if k not in ("path", "persistent")}
    assert stats | {"evictions": 0, "expirations": 0} == {
        "keys": 0,
        "entries": 0,
        "bytes": 0,
        "max_bytes": 5_000,
        "max_object_bytes": 5_000,
        "evictions": 0,
        "expirations": 0,
        "tags": 0,
    }


def test_replacing_variant_retags(new: Factory, clock: Clock) -> None:
    tier = new()
    tier.put(make(tags=("old",)), clock.now + 60)
    tier.put(make(tags=("new",)), clock.now + 60)
    assert tier._tag_index() == {"new": {"http://shop.example/a"}}
    assert tier.purge(Purge(tags=["old"])) == 0
    assert tier.purge(Purge(tags=["new"])) == 1


def test_refuse_late_in_one_process(new: Factory, clock: Clock) -> None:
    tier = new(refuse_late=True)
    old = make("http://h/p", tags=("t",), rt=clock.now - 1)  # requested before the purge
    tier.purge(Purge(urls=["http://h/p"]))
    assert not tier.put(old, clock.now + 60)
    tier.purge(Purge(tags=["u"], at=clock.now))
    assert not tier.put(make("http://h/q", tags=("u",), rt=clock.now - 1), clock.now + 60)
    tier.purge(Purge(prefixes=["/z/*"]))
    assert not tier.put(make("http://h/z/1", rt=clock.now - 1), clock.now + 60)
    assert tier.put(make("http://h/y", rt=clock.now - 1), clock.now + 60)
    tier.purge(Purge(urls=["http://h/r"], soft=True))  # soft purges are not remembered
    assert tier.put(make("http://h/r", rt=clock.now - 1), clock.now + 60)
    clock.now += 1
    assert tier.put(make("http://h/p", rt=clock.now), clock.now + 60)  # requested after
    assert tier.refused_late == 3


def test_random_operations_keep_counters_and_indexes_consistent(new: Factory, clock: Clock) -> None:
    rng = random.Random(7)
    tier = new(max_bytes=8_000, max_object_bytes=3_000, max_variants=3)
    for step in range(1_500):
        op = rng.random()
        key = f"http://h/{rng.randrange(12)}"
        if op < 0.5:
            e = sized(
                key,
                rng.randrange(OVERHEAD, 3_500),
                vary=(("v", str(rng.randrange(4))),),
                tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(3))),
            )
            keep = clock.now + rng.uniform(-1, 20)
            if tier.put(e, keep):
                assert e in tier.get(key)
            else:
                assert not tier.fits(e.size) or keep <= clock.now
        elif op < 0.7:
            tier.get(key)
        elif op < 0.8:
            clock.now += rng.uniform(0, 3)
        elif op < 0.9:
            tier.purge(Purge(tags=[rng.choice("abc")], soft=rng.random() < 0.5))
        elif op < 0.95:
            tier.purge(Purge(prefixes=["/1*"]))
        else:
            tier.delete(key)
        assert tier.stats()["bytes"] <= 8_000
        if step % 10 == 0 or isinstance(tier, MemoryTier):
            check(tier)
    check(tier)


# -- node tier: one process -------------------------------------------------------------------


def test_generation_moves_on_purges_not_on_puts(node_path: str, clock: Clock) -> None:
    with NodeTier(node_path, clock=clock, max_bytes=3_000) as tier:
        g = tier.generation
        for i in range(10):
            tier.put(sized(f"http://h/{i}", 1_000), clock.now + 1)  # puts, evictions
        clock.now += 2
        tier.expire()
        assert tier.generation == g
        tier.put(make(tags=("t",)), clock.now + 60)
        assert tier.purge(Purge(urls=["http://h/none"])) == 0  # nothing matched: still moves
        assert tier.generation == g + 1
        tier.purge(Purge(tags=["t"], soft=True))
        tier.delete("http://h/x")
        tier.clear()
        tier.purge(Purge(all=True))
        assert tier.generation == g + 5
        read = tier.generation_reader()
        assert read() == tier.generation


def test_generation_read_is_well_under_a_microsecond(node_path: str) -> None:
    with NodeTier(node_path) as tier:
        best = min(timeit.repeat(lambda: tier.generation, number=20_000, repeat=5)) / 20_000
        assert best < 1e-6, f"{best * 1e9:.0f} ns"


def test_valid_tracks_the_exact_stored_variant(node_path: str, clock: Clock) -> None:
    with NodeTier(node_path, clock=clock) as tier:
        e = make(tags=("t",))
        assert not tier.valid(e)
        tier.put(e, clock.now + 60)
        (copy,) = tier.get(e.key)
        assert tier.valid(copy) and tier.valid(e)
        newer = make(rt=clock.now + 1)
        tier.put(newer, clock.now + 60)
        assert not tier.valid(e) and tier.valid(newer)
        tier.purge(Purge(urls=[e.key], soft=True))
        assert not tier.valid(newer)
        tier.put(newer, clock.now + 60)
        assert tier.valid(newer)
        clock.now += 60
        assert not tier.valid(newer)  # past keep-until


def test_long_keys_and_tags(node_path: str, clock: Clock) -> None:
    with NodeTier(node_path, clock=clock) as tier:
        base = "http://h/" + "a" * 600
        one, two = make(base + "?1", tags=("t" * 700,)), make(base + "?2")
        tier.put(one, clock.now + 60)
        tier.put(two, clock.now + 60)
        assert tier.get(one.key) == [one] and tier.get(two.key) == [two]
        assert tier._tag_index() == {"t" * 700: {one.key}}
        assert tier.purge(Purge(prefixes=["http://h/" + "a" * 500])) == 2
        tier.put(one, clock.now + 60)
        assert tier.purge(Purge(prefixes=["/aaa*?1"])) == 1
        tier.put(one, clock.now + 60)
        assert tier.purge(Purge(tags=["t" * 700])) == 1
        check(tier)


def test_lru_bound_with_10000_small_objects(node_path: str) -> None:
    budget = 300_000
    with NodeTier(node_path, max_bytes=budget, max_object_bytes=10_000) as tier:
        now = time.time()
        hot = Entry("http://h/hot", 200, (), b"h" * 1024, now, now)
        tier.put(hot, now + 600)
        for i in range(10_000):
            e = Entry(
                f"http://h/{i}", 200, (("content-type", "text/plain"),), b"x" * 1024, now, now
            )
            assert tier.put(e, now + 600)
            if i % 50 == 0:
                assert tier.get(hot.key)
            if i % 500 == 0:
                assert tier.stats()["bytes"] <= budget
        stats = tier.stats()
        assert stats["bytes"] <= budget
        assert 200 < stats["keys"] < 300 and stats["evictions"] > 9_700
        assert tier.get(hot.key) == [hot]
        assert tier.get("http://h/0") == [] and tier.get("http://h/9999")
        check(tier)
        assert os.path.getsize(os.path.join(node_path, DATA_FILE)) <= tier.map_size


def test_lru_bound_with_200_objects_of_1mb(node_path: str) -> None:
    budget = 64 * MiB
    with NodeTier(node_path, max_bytes=budget, max_object_bytes=4 * MiB) as tier:
        now = time.time()
        for i in range(200):
            body = bytes([i % 256]) * MiB
            assert tier.put(Entry(f"http://h/{i}", 200, (), body, now, now), now + 600)
            assert tier.stats()["bytes"] <= budget
        assert tier.stats()["keys"] == budget // (MiB + 256 + 1)
        (last,) = tier.get("http://h/199")
        assert last.body == bytes([199]) * MiB
        data = os.stat(os.path.join(node_path, DATA_FILE)).st_blocks * 512  # sparse
        assert data <= budget * 1.25, f"data file {data / MiB:.0f} MiB for a 64 MiB budget"
        check(tier)


def test_5mb_writes_never_fail_for_map_reasons(node_path: str) -> None:
    with NodeTier(node_path, max_bytes=16 * MiB, max_object_bytes=6 * MiB) as tier:
        now = time.time()
        for i in range(30):
            body = bytes([i]) * (5 * MiB + i)
            assert tier.put(Entry(f"http://h/{i % 7}", 200, (), body, now, now), now + 600)
        (e,) = tier.get("http://h/1")
        assert e.body == bytes([29]) * (5 * MiB + 29)
        check(tier)


def test_map_full_evicts_and_retries(node_path: str, caplog: pytest.LogCaptureFixture) -> None:
    # A map far smaller than the budget: every write runs into MapFullError.
    with NodeTier(
        node_path, max_bytes=256 * MiB, max_object_bytes=64 * MiB, map_size=24 * MiB
    ) as tier:
        now = time.time()
        for i in range(12):
            e = Entry(f"http://h/{i}", 200, (), bytes([i]) * (5 * MiB), now, now)
            assert tier.put(e, now + 600), i
            assert tier.get(e.key) == [e]
        assert tier.stats()["evictions"] > 0
        check(tier)
        huge = Entry("http://h/huge", 200, (), b"\0" * (30 * MiB), now, now)
        with caplog.at_level(logging.WARNING, "edge.store.node"):
            assert not tier.put(huge, now + 600)  # larger than the map: refused, no crash
        assert "no room" in caplog.text
        assert tier.put(Entry("http://h/after", 200, (), b"ok", now, now), now + 600)
        check(tier)


def test_large_get_copies_once(node_path: str) -> None:
    with NodeTier(node_path, max_bytes=64 * MiB) as tier:
        now = time.time()
        body = os.urandom(5 * MiB)
        tier.put(
            Entry("http://h/big", 200, (("content-type", "image/jpeg"),), body, now, now), now + 60
        )
        (e,) = tier.get("http://h/big")
        assert e.body == body and type(e.body) is bytes
        per_get = min(timeit.repeat(lambda: tier.get("http://h/big"), number=5, repeat=3)) / 5
        assert per_get < 0.02, f"{per_get * 1e3:.1f} ms per 5 MB get"


def test_restart_serves_the_cache(node_path: str) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    now = time.time()
    e = Entry("http://h/page", 200, (("etag", '"1"'),), b"<html>", now - 1, now, tags=("p",))
    with NodeTier(path) as tier:
        assert tier.stats()["persistent"] == (not _on_tmpfs(path))
        tier.put(e, now + 600)
        tier.get(e.key)
        tier.sync()
    assert NodeTier.prepare(path, "edge-1") == path  # the same node restarting
    with NodeTier(path) as again:
        assert again.get(e.key) == [e]
        assert again.stats()["keys"] == 1 and again._tag_index() == {"p": {e.key}}
        check(again)


def test_memory_tier_path_none(opened: list[NodeTier]) -> None:
    tier = NodeTier(None)
    opened.append(tier)
    assert tier.path.startswith("/dev/shm/") or not os.path.isdir("/dev/shm")
    assert tier.stats()["persistent"] is False
    tier.close()
    NodeTier.remove(tier.path)
    assert not os.path.exists(tier.path)
    shared = NodeTier.prepare(None, "edge-1")  # the supervisor's way, for its workers
    assert os.path.isdir(shared)
    NodeTier.remove(shared)
    assert not os.path.exists(shared)


def test_closed_tier_refuses(node_path: str) -> None:
    tier = NodeTier(node_path)
    tier.close()
    tier.close()  # idempotent
    with pytest.raises(NodeTierError):
        tier.get("http://h/a")


# -- lifecycle: corrupt, older, two owners ----------------------------------------------------


def _stored(path: str, n: int = 20, size: int = 50_000) -> int:
    """Fill a tier; returns the bytes of its data file in use (the file is sparse)."""
    now = time.time()
    with NodeTier(path, max_bytes=64 * MiB) as tier:
        for i in range(n):
            tier.put(Entry(f"http://h/{i}", 200, (), b"z" * size, now, now), now + 600)
        info, stat = tier._env.info(), tier._env.stat()
    return (info["last_pgno"] + 1) * stat["psize"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "zeros-in-a-page"])
def test_corrupt_file_starts_empty(
    node_path: str, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    size = _stored(node_path)
    data = os.path.join(node_path, DATA_FILE)
    if damage == "garbage":
        with open(data, "r+b") as f:
            f.write(os.urandom(size))
    elif damage == "truncated":
        os.truncate(data, size // 2)
    elif damage == "empty":
        os.truncate(data, 0)
    else:  # zero the pages after the two meta pages: the trees point at nothing
        with open(data, "r+b") as f:
            f.seek(8192)
            f.write(b"\0" * (size - 8192))
    if damage != "zeros-in-a-page":
        with pytest.raises(NodeTierError, match="prepare"):
            NodeTier(node_path)  # a worker refuses it (no SIGBUS): prepare repairs
    with caplog.at_level(logging.WARNING, "edge.store.node"):
        path = NodeTier.prepare(node_path, "edge-1")
    assert "starting empty" in caplog.text
    assert {
        "garbage": "not an LMDB file",
        "truncated": "truncated",
        "empty": "truncated",
        "zeros-in-a-page": "unreadable",
    }[damage] in caplog.text
    with NodeTier(path) as tier:
        assert tier.get("http://h/1") == [] and len(tier) == 0
        now = time.time()
        assert tier.put(Entry("http://h/1", 200, (), b"x", now, now), now + 60)
        check(tier)


@pytest.mark.parametrize("version", [0, 1])  # 1: slot records in JSON
def test_older_version_starts_empty(
    node_path: str, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    import lmdb

    _stored(node_path)
    env = lmdb.open(node_path, max_dbs=16, map_size=64 * MiB, writemap=True)
    with env.begin(write=True) as txn:
        record = b"woodytoys-edge node tier %d" % version
        txn.put(b"format", record, db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(NodeTierError, match="prepare"):
        NodeTier(node_path)  # a worker does not repair: the supervisor's prepare does
    with caplog.at_level(logging.WARNING, "edge.store.node"):
        NodeTier.prepare(node_path, "edge-1")
    assert "another format version" in caplog.text and "starting empty" in caplog.text
    with NodeTier(node_path) as tier:
        assert len(tier) == 0


def test_a_slot_record_round_trips_and_a_damaged_one_reads_as_none() -> None:
    slot = {
        "k": "http://h/\udc80\u00e9",
        "v": [
            ["-", 5, 1.5, 100, 1.0, 2.0, 0, []],
            ["accept-encoding=gzip\x1fx=y", 7, 9.5, 2**40, 3.25, 4.0, 1, ["t1", "\u00fc", ""]],
        ],
    }
    raw = _dump_slot(slot)
    assert _slot(raw) == slot
    assert [n for n in range(len(raw)) if _slot(raw[:n]) is not None] == []
    assert _slot(raw + b"\0") is None


def test_an_unreadable_slot_is_a_miss_and_dropped(node_path: str, clock: Clock) -> None:
    with NodeTier(node_path, clock=clock) as tier:
        e = make(tags=("t",))
        assert tier.put(e, clock.now + 60)
        with tier._env.begin(write=True) as txn:
            txn.put(e.key.encode(), b"\xff" * 9, db=tier._slots)
        assert tier.get(e.key) == [] and tier.corrupt == 1
        tier.touch_flush()
        assert tier.corrupt_dropped == 1 and keys_of(tier) == []


def test_two_nodes_on_one_path(node_path: str, caplog: pytest.LogCaptureFixture) -> None:
    NodeTier.prepare(node_path, "edge-1")
    with pytest.raises(NodeTierError) as err:
        NodeTier.prepare(node_path, "edge-2")
    message = str(err.value)
    assert "node_cache.path" in message and "'edge-1'" in message and "'edge-2'" in message
    with NodeTier(node_path) as tier:  # edge-1's workers keep the owner alive
        tier.heartbeat()
    later = time.time() + OWNER_STALE_SECONDS - 5
    with pytest.raises(NodeTierError):
        NodeTier.prepare(node_path, "edge-2", clock=lambda: later)
    gone = time.time() + OWNER_STALE_SECONDS + 5
    with caplog.at_level(logging.WARNING, "edge.store.node"):
        NodeTier.prepare(node_path, "edge-2", clock=lambda: gone)  # a stale owner
    assert "taking it over from node 'edge-1'" in caplog.text
    with pytest.raises(NodeTierError, match="'edge-2'"):
        NodeTier.prepare(node_path, "edge-1")  # now edge-2 owns it


# -- node tier: several processes -------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection, path: str, kw: dict[str, Any]) -> None:
    """A worker: opens its own NodeTier and runs the parent's calls on it."""
    tier = NodeTier(path, **kw)
    conn.send((True, os.getpid()))
    while True:
        op, args, kwargs = conn.recv()
        try:
            if op == "exit":
                tier.close()
                conn.send((True, None))
                return
            if op == "generation":
                result: Any = tier.generation
            elif op == "hang":
                conn.send((True, None))
                time.sleep(3600)
                return
            elif op == "wait_for_fill":
                result = asyncio.run(tier.wait_for_fill(*args, **kwargs))
            elif op == "put_forever":
                conn.send((True, None))
                for i in itertools.count():
                    now = time.time()
                    body = bytes([i % 256]) * args[0]
                    tier.put(Entry(f"http://h/w{i % 50}", 200, (), body, now, now), now + 60)
            elif op == "herd":
                result = asyncio.run(_herd(tier, *args, **kwargs))
            else:
                result = getattr(tier, op)(*args, **kwargs)
        except Exception as exc:
            conn.send((False, repr(exc)))
        else:
            conn.send((True, result))


async def _herd(tier: NodeTier, key: str, clients: int, start_at: float) -> list[str]:
    """`clients` concurrent misses on `key` in this worker, collapsed through the node tier
    as the engine would: what each did ("hit", "waited" or "fetched" from the origin)."""
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def client() -> str:
        if tier.get(key):
            return "hit"
        token = tier.try_lock(key, 5.0)
        if token is None:
            if await tier.wait_for_fill(key, 5.0):
                return "waited"
            token = tier.try_lock(key, 5.0)
        await asyncio.sleep(0.2)  # the origin
        now = time.time()
        tier.put(Entry(key, 200, (), b"from the origin", now, now), now + 60)
        if token is not None:
            tier.unlock(key, token)
        return "fetched"

    return list(await asyncio.gather(*(client() for _ in range(clients))))


class Peer:
    """Another worker process of the node."""

    def __init__(self, path: str, **kw: Any) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, path, kw), daemon=True)
        self.proc.start()
        ok, self.pid = self.conn.recv()
        assert ok

    def __call__(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self.conn.send((op, args, kwargs))
        ok, value = self.conn.recv()
        if not ok:
            raise AssertionError(f"peer {op}: {value}")
        return value

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(EOFError, OSError):
                self.conn.send(("exit", (), {}))
                if self.conn.poll(2):  # a hanging peer never answers
                    self.conn.recv()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def test_shared_between_processes(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        peer = Peer(path)
        peers.append(peer)
        now = time.time()
        theirs = Entry("http://h/theirs", 200, (("x", "1"),), b"filled by the peer", now, now)
        assert peer("put", theirs, now + 60)
        assert tier.get(theirs.key) == [theirs]  # a hit here at once
        mine = Entry("http://h/mine", 200, (), os.urandom(5 * MiB), now, now)
        assert tier.put(mine, now + 60)
        assert peer("get", mine.key) == [mine]
        assert peer("stats")["keys"] == tier.stats()["keys"] == 2


def test_purge_seen_by_every_worker_before_it_returns(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        a, b = Peer(path), Peer(path)
        peers += [a, b]
        now = time.time()
        e = Entry("http://h/p", 200, (), b"old", now, now, tags=("p",))
        assert a("put", e, now + 60)
        (held,) = b("get", e.key)  # b's hot copy would hold this
        g = b("generation")
        assert tier.generation == g
        assert a("purge", Purge(tags=["p"])) == 1  # returns only after the publication
        assert b("generation") == g + 1 and tier.generation == g + 1
        assert not b("valid", held)
        assert b("get", e.key) == [] and tier.get(e.key) == []
        # a soft purge: the entry stays, invalidated
        assert a("put", e, now + 60)
        assert tier.purge(Purge(urls=[e.key], soft=True)) == 1
        assert b("generation") == g + 2 and not b("valid", e)
        (again,) = b("get", e.key)
        assert again.invalidated


def test_refuse_late_across_processes(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path, refuse_late=True) as tier:
        peer = Peer(path, refuse_late=True)
        peers.append(peer)
        sent = time.time()
        late = Entry("http://h/x", 200, (), b"fetched before the purge", sent, sent + 0.01)
        time.sleep(0.01)
        assert tier.purge(Purge(urls=[late.key])) == 0
        assert not peer("put", late, time.time() + 60)  # the peer's fill raced the purge
        assert not tier.put(late, time.time() + 60)
        now = time.time()
        fresh = Entry("http://h/x", 200, (), b"fetched after", now, now)
        assert peer("put", fresh, now + 60)
        assert tier.get(late.key) == [fresh]
        # The remembered patterns: each process re-reads them when another one purged.
        tier.purge(Purge(prefixes=["/a*"]))
        sent = time.time()
        assert tier.put(Entry("http://h/b", 200, (), b"b", sent, sent), sent + 60)
        time.sleep(0.01)
        peer("purge", Purge(prefixes=["/c*"]))
        assert not tier.put(Entry("http://h/c", 200, (), b"c", sent, sent), sent + 60)


def test_fill_lock_collapses_across_processes(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        a, b = Peer(path), Peer(path)
        peers += [a, b]
        key = "http://h/herd"
        tokens = [a("try_lock", key, 5.0), b("try_lock", key, 5.0), tier.try_lock(key, 5.0)]
        assert sum(t is not None for t in tokens) == 1
        assert tokens[0] is not None
        assert tier.locked(key)
        assert not tier.unlock(key, "not-the-token")
        assert a("unlock", key, tokens[0])
        assert not tier.locked(key)
        assert tier.try_lock(key, 5.0) is not None


def test_lock_past_its_ttl_is_taken_over(node_path: str, clock: Clock) -> None:
    with NodeTier(node_path, clock=clock) as tier:
        token = tier.try_lock("http://h/k", 2.0)
        assert token is not None and tier.try_lock("http://h/k", 2.0) is None
        clock.now += 2.5
        again = tier.try_lock("http://h/k", 2.0)
        assert again is not None and again != token
        assert not tier.unlock("http://h/k", token)  # the old holder no longer has it
        assert tier.unlock("http://h/k", again)


def test_lock_of_a_killed_worker_is_taken_over(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        peer = Peer(path)
        peers.append(peer)
        key = "http://h/slow"
        assert peer("try_lock", key, 60.0) is not None
        assert tier.try_lock(key, 60.0) is None  # alive: held
        peer("hang")
        peer.kill()  # SIGKILL while holding the lock (not reaped yet: a zombie)
        deadline = time.monotonic() + 5
        token = None
        while token is None and time.monotonic() < deadline:
            token = tier.try_lock(key, 60.0)
            time.sleep(0.01)
        assert token is not None, "the dead worker's lock was not taken over"
        peer.proc.join()


async def test_wait_for_fill_across_processes(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        peer = Peer(path)
        peers.append(peer)
        key = "http://h/fill"
        token = peer("try_lock", key, 10.0)
        assert token is not None
        stale = time.time()
        assert tier.put(Entry(key, 200, (), b"stale", stale - 10, stale - 9), stale + 60)

        async def fill() -> None:
            await asyncio.sleep(0.1)
            now = time.time()
            await asyncio.to_thread(peer, "put", Entry(key, 200, (), b"new", now, now), now + 60)
            await asyncio.to_thread(peer, "unlock", key, token)

        filler = asyncio.create_task(fill())
        waiters = [tier.wait_for_fill(key, 5.0, newer_than=stale - 9) for _ in range(20)]
        results = await asyncio.gather(*waiters)
        await filler
        assert all(r and r[0].body == b"new" for r in results)
        assert len({id(r[0]) for r in results}) == 1  # one poller, one copy of the body
        # The holder gives up with nothing stored: waiters answer [] at once.
        other = "http://h/empty"
        token = peer("try_lock", other, 10.0)
        waiting = asyncio.create_task(tier.wait_for_fill(other, 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = time.monotonic()
        await asyncio.to_thread(peer, "unlock", other, token)
        assert await waiting == []
        assert time.monotonic() - started < 1.0
        # The holder is killed: the waiter notices the dead lock.
        peer("try_lock", "http://h/dead", 10.0)
        peer("hang")
        peer.kill()
        started = time.monotonic()
        assert await tier.wait_for_fill("http://h/dead", 5.0) == []
        assert time.monotonic() - started < 2.0
        assert await tier.wait_for_fill("http://h/nobody", 0.05) == []  # no lock: at once


def test_inherited_tier_is_closed_in_the_child(node_path: str) -> None:
    with NodeTier(node_path) as tier:
        now = time.time()
        tier.put(Entry("http://h/a", 200, (), b"a", now, now), now + 60)
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()

        def run() -> None:
            try:
                tier.get("http://h/a")
                child.send("used the inherited tier")
            except NodeTierError:
                with NodeTier(node_path) as own:
                    child.send(own.get("http://h/a")[0].body.decode())

        proc = ctx.Process(target=run)
        proc.start()
        assert parent.recv() == "a"
        proc.join()
        assert tier.get("http://h/a")  # the parent's tier still works
        tier.put(Entry("http://h/b", 200, (), b"b", now, now), now + 60)


def test_concurrent_purges_keep_the_generation_in_order(node_path: str, peers: list[Peer]) -> None:
    import threading

    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        a, b = Peer(path), Peer(path)
        peers += [a, b]
        start = tier.generation
        seen: list[int] = []
        done = threading.Event()

        def purge(peer: Peer) -> None:
            for i in range(40):
                peer("purge", Purge(urls=[f"http://h/{i}"]))

        def watch() -> None:
            while not done.is_set():
                seen.append(tier.generation)

        workers = [threading.Thread(target=purge, args=(p,)) for p in (a, b)]
        watcher = threading.Thread(target=watch)
        watcher.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        done.set()
        watcher.join()
        assert tier.generation == start + 80 == a("generation")
        back = [(i, seen[i - 1], x) for i, x in enumerate(seen) if i and seen[i - 1] > x]
        assert back == [], len(seen)  # never goes backwards


def test_generation_published_by_the_next_flush(node_path: str) -> None:
    from edge.store.node import _Totals

    with NodeTier(node_path) as tier:
        g = tier.generation
        # A purger committed, then died before publishing its generation.
        with tier._env.begin(write=True) as txn:
            totals = _Totals.load(txn.get(b"totals", db=tier._meta))
            totals.generation += 1
            txn.put(b"totals", totals.dump(), db=tier._meta)
        assert tier.generation == g
        tier.touch_flush()
        assert tier.generation == g + 1


def test_heartbeat_notices_a_takeover(node_path: str, caplog: pytest.LogCaptureFixture) -> None:
    NodeTier.prepare(node_path, "edge-1")
    with NodeTier(node_path) as tier:
        tier.heartbeat()
        gone = time.time() + OWNER_STALE_SECONDS + 5
        # edge-2's supervisor, in another process, finds edge-1 silent and takes over.
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(
            target=NodeTier.prepare, args=(node_path, "edge-2"), kwargs={"clock": lambda: gone}
        )
        proc.start()
        proc.join()
        assert proc.exitcode == 0
        with caplog.at_level(logging.ERROR, "edge.store.node"):
            tier.heartbeat()
            tier.heartbeat()
        assert caplog.text.count("now owned by node 'edge-2'") == 1


def test_prepare_on_an_unusable_path(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    with pytest.raises(NodeTierError, match=r"node_cache\.path"):
        NodeTier.prepare(file, "edge-1")


def test_a_herd_across_workers_makes_one_origin_request(node_path: str, peers: list[Peer]) -> None:
    import threading

    path = NodeTier.prepare(node_path, "edge-1")
    workers = [Peer(path) for _ in range(3)]
    peers += workers
    start_at = time.time() + 0.2
    results: list[list[str]] = []

    def run(peer: Peer) -> None:
        results.append(peer("herd", "http://h/cold", 30, start_at))

    threads = [threading.Thread(target=run, args=(p,)) for p in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = [a for r in results for a in r]
    assert len(answers) == 90
    assert answers.count("fetched") == 1, answers


def test_a_worker_killed_while_writing(node_path: str, peers: list[Peer]) -> None:
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path, max_bytes=32 * MiB) as tier:
        for round in range(3):
            peer = Peer(path, max_bytes=32 * MiB)
            peers.append(peer)
            peer("put_forever", 512 * 1024 + round)
            time.sleep(0.15)
            peer.kill()  # most likely inside a write transaction (holding the writer lock)
            peer.proc.join()
            now = time.time()
            e = Entry(f"http://h/after{round}", 200, (), b"still works", now, now)
            assert tier.put(e, now + 60)  # the writer lock is recovered
            assert tier.get(e.key) == [e]
            assert tier.stats()["bytes"] <= 32 * MiB
            check(tier)


def test_a_hold_is_seen_by_the_other_workers_and_ends_with_its_holder(
    node_path: str, peers: list[Peer]
) -> None:
    """A small miss's leader holds its key from its answer's write to its store: the other
    workers see it (never their own), a second hold of the same process needs a second
    drop, and a killed holder's hold ends with it."""
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        peer = Peer(path)
        peers.append(peer)
        key = "http://h/stored-in-a-moment"
        assert peer("hold", key)
        assert tier.held_elsewhere(key) and not peer("held_elsewhere", key)
        assert not tier.held_elsewhere("http://h/another")
        assert not tier.hold(key)  # the peer holds it
        assert peer("hold", key)  # the same process, a second fetch of the key
        peer("drop_hold", key)
        assert tier.held_elsewhere(key)
        peer("drop_hold", key)
        assert not tier.held_elsewhere(key)
        assert tier.hold(key) and peer("held_elsewhere", key)
        tier.drop_hold(key)
        assert peer("hold", key)
        peer("hang")
        peer.kill()
        peer.proc.join()
        assert not tier.held_elsewhere(key)  # the kernel ended the dead holder's


async def test_a_worker_waits_for_the_store_another_holds(
    node_path: str, peers: list[Peer]
) -> None:
    """`Tiers.wait_held`: a key another worker holds is waited for, and what it stored is
    the answer; a key no one holds is what is stored now (or nothing), at once."""
    path = NodeTier.prepare(node_path, "edge-1")
    with NodeTier(path) as tier:
        tiers = Tiers(MemoryTier(1 << 20), [tier])
        peer = Peer(path)
        peers.append(peer)
        now = time.time()
        entry = Entry(
            "http://h/held", 200, (), b"stored by the holder", now, now, meta={"keep": 60.0}
        )
        assert peer("hold", entry.key)
        waiting = asyncio.create_task(tiers.wait_held(entry.key, 10.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert peer("put", entry, now + 60)
        peer("drop_hold", entry.key)
        assert await asyncio.wait_for(waiting, 10.0) == [entry]
        # Read as a lookup reads: a hot copy, and the key known as stored (its next misses,
        # after a purge say, collapse into one fetch per worker).
        assert tiers.hot.get(entry.key) == [entry] and entry.key in tiers.stored_before
        assert await tiers.wait_held(entry.key, 10.0) == [entry]
        assert await tiers.wait_held("http://h/nothing", 10.0) == []
