"""The shared tier and the purge bus against the real Redis (never mocks).

Every key lives under the test's `key_prefix`; connections are killed only by id,
found by the client names this test's tiers set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import RedisCluster

from edge.cache.entry import Entry
from edge.store.memory import MemoryTier
from edge.store.purge_bus import PurgeBus, RedisUnavailable, apply_to_memory, generation_key
from edge.store.redis_conn import Client, close_client, make_client
from edge.store.redis_tier import LOCAL_TOKEN_PREFIX, RedisTier
from edge.store.storage import Purge
from tests.redis_modes import mode_url, modes_fixture, slot_errors_fixture

pytestmark = pytest.mark.redis

redis_url = modes_fixture()  # every test here runs on one Redis, Sentinel and a Cluster
no_slot_errors = slot_errors_fixture()

DEAD_URL = "redis://127.0.0.1:1/0"


def make(
    key: str = "http://shop.example/a",
    body: bytes = b"hello",
    vary: tuple[tuple[str, str], ...] = (),
    tags: tuple[str, ...] = (),
    rt: float | None = None,
) -> Entry:
    rt = time.time() if rt is None else rt
    return Entry(
        key,
        200,
        (("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")),
        body,
        rt - 0.01,
        rt,
        vary=vary,
        tags=tags,
        meta={"ttl": 60.0},
    )


class Tiers:
    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.made: list[RedisTier | PurgeBus] = []

    async def tier(self, node: str = "edge-1", url: str | None = None, **kw: object) -> RedisTier:
        t = RedisTier(url or self.url, prefix=self.prefix, node=node, sweep_every=0, **kw)  # type: ignore[arg-type]
        await t.start()
        self.made.append(t)
        return t

    def bus(self, node: str = "edge-1", **kw: object) -> PurgeBus:
        b = PurgeBus(self.url, prefix=self.prefix, node=node, **kw)  # type: ignore[arg-type]
        self.made.append(b)
        return b


@pytest.fixture
async def tiers(redis_url: str, key_prefix: str) -> AsyncIterator[Tiers]:
    t = Tiers(redis_url, key_prefix)
    yield t
    for made in t.made:
        await made.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Client]:
    client = make_client(redis_url, 2.0)
    yield client
    await close_client(client, "test client")


async def kill_clients(raw: Client, name: str) -> int:
    """CLIENT KILL by id every connection named `name` (only this test's own), on every
    node of a cluster."""
    killed = 0
    nodes: list[object] = [None]
    if isinstance(raw, RedisCluster):
        await raw.initialize()
        nodes = list(raw.get_nodes())
    for node in nodes:
        at = {} if node is None else {"target_nodes": node}
        for c in await raw.client_list(**at):
            if c.get("name") == name:
                killed += await raw.execute_command("CLIENT", "KILL", "ID", c["id"], **at)
    return killed


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- storage -------------------------------------------------------------------------------


async def test_roundtrip_binary_5mb_and_variants(tiers: Tiers) -> None:
    tier = await tiers.tier()
    body = os.urandom(5 * 1024 * 1024)
    key = "https://shop.example/img/big.jpg"
    jpeg = make(key, body, vary=(("accept", "image/jpeg"),), tags=("img",), rt=1000.0)
    webp = make(key, body[:1000], vary=(("accept", "image/webp"),), rt=2000.0)
    assert await tier.get(key) == []
    assert await tier.put(jpeg, time.time() + 60)
    assert await tier.put(webp, time.time() + 60)
    got = await tier.get(key)
    assert got == [webp, jpeg]  # most recent response first, every field equal
    assert got[1].body == body
    webp2 = make(key, b"new", vary=(("accept", "image/webp"),), rt=3000.0)
    assert await tier.put(webp2, time.time() + 60)  # replaces its variant
    assert [e.body for e in await tier.get(key)] == [b"new", body]
    assert (tier.gets, tier.hits, tier.puts, tier.errors) == (3, 2, 3, 0)
    assert tier.status == "up"


async def test_keep_until_and_expiry(tiers: Tiers, raw: Client) -> None:
    now = [time.time()]
    tier = await tiers.tier(clock=lambda: now[0])
    key = "http://h/p"
    short = make(key, vary=(("a", "1"),))
    long = make(key, vary=(("a", "2"),))
    assert not await tier.put(make("http://h/dead"), now[0] - 1)
    assert await tier.put(short, now[0] + 5)
    assert await tier.put(long, now[0] + 50)
    name = tier._obj(key)
    expire_at = await raw.pexpiretime(name)
    assert abs(expire_at / 1000 - (now[0] + 50)) < 0.01  # the hash lives to the latest
    now[0] += 10
    assert await tier.get(key) == [long]
    now[0] += 100
    assert await tier.get(key) == []


async def test_two_tiers_share_data(tiers: Tiers) -> None:
    a = await tiers.tier("edge-1")
    b = await tiers.tier("edge-2")
    e = make(tags=("t",))
    await a.put(e, time.time() + 60)
    assert await b.get(e.key) == [e]
    assert await b.purge(Purge(tags=["t"])) == 1
    assert await a.get(e.key) == []


async def test_too_big_is_refused(tiers: Tiers) -> None:
    tier = await tiers.tier(max_object_bytes=10_000)
    assert not await tier.put(make(body=b"x" * 20_000), time.time() + 60)
    assert tier.puts == 0


async def _fill(tier: RedisTier) -> list[str]:
    keep = time.time() + 60
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
        assert await tier.put(e, keep)
    return sorted({e.key for e in entries})


PURGES: list[tuple[dict[str, object], int, set[str]]] = [
    ({"urls": ["http://shop.example/api/items/1"]}, 2, {"/api/items/1"}),
    ({"urls": ["http://shop.example/nope"]}, 0, set()),
    ({"prefixes": ["/api/misc/"]}, 3, {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c"}),
    ({"prefixes": ["http://shop.example/api/misc/"]}, 2, {"/api/misc/a?x=1", "/api/misc/b"}),
    ({"prefixes": ["/api/misc/*"]}, 3, {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c"}),
    ({"prefixes": ["*=1"]}, 1, {"/api/misc/a?x=1"}),
    ({"prefixes": ["/img/??.png"]}, 1, {"/img/ab.png"}),
    ({"prefixes": ["/img/[a]b?.png"]}, 1, {"/img/abc.png"}),
    ({"prefixes": ["http://cdn.example/*"]}, 1, {"/api/misc/c"}),
    ({"tags": ["misc"]}, 2, {"/api/misc/a?x=1", "/api/misc/b"}),
    ({"tags": ["item-1", "img"]}, 4, {"/api/items/1", "/img/ab.png", "/img/abc.png"}),
    ({"all": True}, 7, {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c", "/api/items/1"}),
]


async def test_a_fill_requested_before_a_purge_is_refused(tiers: Tiers) -> None:
    """By URL (the object's tombstone, in its slot), by tag (the tag's, in the tag's slot:
    the fill finds it after storing and takes its object back) and purge-all."""
    tier = await tiers.tier(refuse_late=True)
    before = time.time() - 1  # requested before each purge below
    await tier.purge(Purge(urls=["http://h/p"]))
    assert not await tier.put(make("http://h/p", rt=before), time.time() + 60)
    await tier.purge(Purge(tags=["u"]))
    assert not await tier.put(make("http://h/q", tags=("u",), rt=before), time.time() + 60)
    assert await tier.get("http://h/q") == []
    assert await tier.put(make("http://h/y", rt=before), time.time() + 60)  # nothing purged it
    assert await tier.put(make("http://h/p", rt=time.time() + 1), time.time() + 60)  # after
    await tier.purge(Purge(all=True))
    assert not await tier.put(make("http://h/z", rt=before), time.time() + 60)
    assert tier.refused_late == 3
    assert [e.key for e in await tier.get("http://h/y")] == []  # the purge-all took it


@pytest.mark.parametrize("soft", [False, True])
async def test_purge_hard_and_soft(tiers: Tiers, raw: Client, soft: bool) -> None:
    """Every purge kind (the same cases as the memory tier), against one filled tier each."""
    tier = await tiers.tier()
    other = await tiers.tier("edge-2")
    for i, (kwargs, count, gone) in enumerate(PURGES):
        await raw.delete(tier._keys, tier._paths, tier._exp)
        keys = await _fill(tier)
        assert await tier.purge(Purge(**kwargs, soft=soft)) == count, kwargs  # type: ignore[arg-type]
        assert await other.purge_generation() == i + 1
        if kwargs.get("all"):
            gone = {k.split("example", 1)[1] for k in keys}
        for key in keys:
            entries = await other.get(key)
            path = key.split("example", 1)[1]
            if path in gone and soft:
                assert entries and all(e.invalidated for e in entries), (kwargs, key)
            elif path in gone:
                assert entries == [], (kwargs, key)
                assert await raw.zscore(tier._keys, key) is None
            else:
                assert entries and not any(e.invalidated for e in entries), (kwargs, key)
        if soft:  # a new response for a soft-purged variant is valid again
            fresh = make("http://shop.example/api/misc/b", tags=("misc",))
            await tier.put(fresh, time.time() + 60)
            assert await other.get(fresh.key) == [fresh]


async def test_bad_prefix_and_purge_without_announce(tiers: Tiers) -> None:
    tier = await tiers.tier()
    await _fill(tier)
    with pytest.raises(ValueError):
        await tier.purge(Purge(prefixes=["api/misc"]))
    assert await tier.purge_generation() == 0
    assert await tier.purge(Purge(urls=["http://cdn.example/api/misc/c"]), announce=False) == 1
    assert await tier.purge_generation() == 1
    assert await tier.delete("http://shop.example/api/misc/b") == 1


async def test_keys_without_host(tiers: Tiers) -> None:
    """The edge's keys may be a bare path and query: path prefixes and globs still work."""
    tier = await tiers.tier()
    for key in ("/api/misc/a?x=1", "/api/misc/b", "/img/a.png"):
        assert await tier.put(make(key), time.time() + 60)
    assert await tier.purge(Purge(prefixes=["/api/misc/"])) == 2
    assert await tier.purge(Purge(prefixes=["*.png"])) == 1
    assert await tier.get("/img/a.png") == []


async def test_sweep_drops_index_of_expired_hashes(tiers: Tiers, raw: Client) -> None:
    tier = await tiers.tier()
    e = make("http://h/gone")
    await tier.put(e, time.time() + 0.05)
    await tier.put(make("http://h/stays"), time.time() + 60)
    await asyncio.sleep(0.15)
    assert await raw.exists(tier._obj(e.key)) == 0
    assert await tier.sweep() == 1
    assert await raw.zrange(tier._keys, 0, -1) == [b"http://h/stays"]
    assert len(await raw.zrange(tier._paths, 0, -1)) == 1


async def test_corrupt_values_are_misses_and_deleted(
    tiers: Tiers, raw: Client, caplog: pytest.LogCaptureFixture
) -> None:
    tier = await tiers.tier()
    e = make(vary=(("accept", "a"),))
    await tier.put(e, time.time() + 60)
    name = tier._obj(e.key)
    keep = str(time.time() + 60)
    other = make("http://elsewhere/x")
    await raw.hset(
        name,
        mapping={
            "d:junk": b"\x80\x04\x95pickle?",  # not ours
            "t:junk": keep,
            "d:trunc": e.dumps()[:12],  # truncated
            "t:trunc": keep,
            "d:-": other.dumps(),  # a valid entry of another key
            "t:-": keep,
            "d:nokeep": e.dumps(),  # no keep-until
        },
    )
    with caplog.at_level(logging.WARNING, logger="edge.store.redis"):
        assert await tier.get(e.key) == [e]
    assert tier.corrupt == 4
    assert sorted(await raw.hkeys(name)) == [b"d:accept=a", b"t:accept=a"]
    await raw.hset(name, mapping={"d:accept=a": b"garbage"})
    assert await tier.get(e.key) == []
    assert tier.status == "up"


# -- robustness ----------------------------------------------------------------------------


# A dead or hung Redis of this test's own, whatever the mode: once.
@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
async def test_dead_redis_is_fast_quiet_and_harmless(
    tiers: Tiers, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edge.store.redis"):
        tier = await tiers.tier(url=DEAD_URL)
        started = time.monotonic()
        for _ in range(50):
            assert await tier.get("http://h/x") == []
            assert not await tier.put(make(), time.time() + 60)
        elapsed = time.monotonic() - started
        assert elapsed < 0.5
        assert tier.status == "down"
        token = await tier.try_lock("http://h/x", 1.0)
        assert token is not None and token.startswith(LOCAL_TOKEN_PREFIX)
        assert not await tier.unlock("http://h/x", token)
        assert await tier.wait_for_fill("http://h/x", 1.0) == []
        with pytest.raises(RedisUnavailable):
            await tier.purge(Purge(urls=["http://h/x"]))
    lines = [r for r in caplog.records if r.name == "edge.store.redis"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert tier.errors == 1  # then calls short-circuit until the back-off passes


# A dead or hung Redis of this test's own, whatever the mode: once.
@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
async def test_hung_redis_goes_down_after_twice_the_timeout(
    tiers: Tiers, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that accepts connections and never answers (a stopped Redis)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.WARNING, logger="edge.store.redis"):
            tier = await tiers.tier(url=f"redis://127.0.0.1:{port}/0", timeout=0.1)
            started = time.monotonic()
            results = [await tier.get("http://h/x") for _ in range(20)]
            elapsed = time.monotonic() - started
        assert results == [[]] * 20
        assert tier.status == "down"
        assert elapsed < 0.6  # a few slow misses, then none waits
        assert 2 <= tier.errors <= 4
        assert len([r for r in caplog.records if r.name == "edge.store.redis"]) == 1
    finally:
        for w in held:
            w.close()
        server.close()


async def test_recovers_after_connections_are_killed(
    tiers: Tiers, raw: Client, caplog: pytest.LogCaptureFixture
) -> None:
    tier = await tiers.tier(backoff=0.1)
    e = make()
    await tier.put(e, time.time() + 60)
    with caplog.at_level(logging.WARNING, logger="edge.store.redis"):
        assert await kill_clients(raw, f"{tiers.prefix}/edge-1/tier") >= 1
        first = await tier.get(e.key)
        if tier.target.mode == "single" or first == []:
            assert first == []  # the dead connection: a miss, not an error
            # a failover may be under way on a Sentinel set or a cluster: degraded
            assert tier.status == ("down" if tier.target.mode == "single" else "degraded")
            assert await tier.get(e.key) == []  # within the back-off: no attempt
            await asyncio.sleep(0.25)
        # (redis-py's Sentinel pool may find the dead connection before using it: a hit)
        assert await tier.get(e.key) == [e]
        assert tier.status == "up"
        for _ in range(50):  # a Sentinel set or a cluster: "back" once no failure for 0.2 s
            if tier.target.mode == "single" or not tier.errors or "back" in caplog.text:
                break
            await asyncio.sleep(0.1)
            await tier.get(e.key)
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.store.redis"]
    assert messages == [] or (len(messages) == 2 and "back" in messages[1])


# -- request collapsing --------------------------------------------------------------------


async def test_lock_exactly_one_of_50_across_3_nodes(tiers: Tiers) -> None:
    nodes = [await tiers.tier(f"edge-{i}") for i in range(3)]
    key = "http://h/cold"
    tokens = await asyncio.gather(*(nodes[i % 3].try_lock(key, 5.0) for i in range(50)))
    winners = [t for t in tokens if t is not None]
    assert len(winners) == 1
    assert not await nodes[1].unlock(key, "not-the-token")
    assert await nodes[2].try_lock(key, 5.0) is None
    assert await nodes[0].unlock(key, winners[0])
    assert await nodes[2].try_lock(key, 0.05) is not None  # free again; expires by itself
    await asyncio.sleep(0.1)
    assert await nodes[1].try_lock(key, 1.0) is not None


async def test_500_cold_requests_over_3_nodes_make_one_origin_request(tiers: Tiers) -> None:
    nodes = [await tiers.tier(f"edge-{i}") for i in range(3)]
    key = "http://h/popular"
    origin_requests = 0

    async def request(node: RedisTier) -> bytes:
        nonlocal origin_requests
        entries = await node.get(key)
        while not entries:
            token = await node.try_lock(key, 2.0)
            if token is None:
                entries = await node.wait_for_fill(key, timeout=2.0)
                continue
            try:
                origin_requests += 1
                await asyncio.sleep(0.1)  # the origin is slow
                fresh = make(key, b"body")
                await node.put(fresh, time.time() + 60)
                return fresh.body
            finally:
                await node.unlock(key, token)
        return entries[0].body

    bodies = await asyncio.gather(*(request(nodes[i % 3]) for i in range(500)))
    assert set(bodies) == {b"body"}
    assert origin_requests == 1
    # (Redis timeouts on this shared, busy machine may happen; collapsing must hold anyway.)


async def test_wait_for_fill_outcomes(tiers: Tiers) -> None:
    a, b = await tiers.tier("edge-1"), await tiers.tier("edge-2")
    key = "http://h/k"
    assert await b.wait_for_fill(key, 1.0) == []  # no lock, nothing stored: at once
    token = await a.try_lock(key, 5.0)
    assert token
    started = time.monotonic()
    assert await b.wait_for_fill(key, 0.1) == []  # timeout
    assert 0.09 < time.monotonic() - started < 0.5
    stale = make(key, b"old", rt=time.time() - 100)
    await a.put(stale, time.time() + 60)
    waiter = asyncio.create_task(b.wait_for_fill(key, 2.0, newer_than=stale.response_time))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # the stale copy does not end the wait
    fresh = make(key, b"new")
    await a.put(fresh, time.time() + 60)
    assert await asyncio.wait_for(waiter, 1.0) == [fresh]
    waiter = asyncio.create_task(b.wait_for_fill("http://h/other", 2.0))
    token2 = await a.try_lock("http://h/other", 5.0)
    assert token2
    await a.unlock("http://h/other", token2)  # the filler gave up: the waiter returns []
    assert await asyncio.wait_for(waiter, 1.0) == []


# -- purge bus -----------------------------------------------------------------------------


async def test_purge_is_delivered_to_other_nodes(tiers: Tiers) -> None:
    tier = await tiers.tier("edge-1")
    got: list[dict[str, object]] = []
    memory = MemoryTier()
    bus = tiers.bus("edge-2")

    def on_message(message: dict[str, object]) -> None:
        got.append(message)
        apply_to_memory(memory, message)

    bus.start(on_message)
    assert await bus.wait_connected(2.0)
    assert bus.trusted()
    e = make("http://shop.example/api/misc/a", tags=("misc",))
    memory.put(e, time.time() + 60)
    await tier.put(e, time.time() + 60)
    assert await tier.purge(Purge(prefixes=["/api/misc/"])) == 1
    await eventually(lambda: len(got) == 1)
    assert got[0]["prefixes"] == ["/api/misc/"]
    assert got[0]["node"] == "edge-1" and got[0]["gen"] == 1
    assert memory.get(e.key) == []
    assert await bus.publish({"tags": ["misc"], "soft": True}) == 2
    await eventually(lambda: len(got) == 2)
    assert got[1]["type"] == "purge" and got[1]["tags"] == ["misc"]
    assert bus.applied_generation == 2 and bus.resyncs == 0


async def test_subscriber_resumes_after_kill_and_signals_missed_purge(
    tiers: Tiers, raw: Client
) -> None:
    publisher = tiers.bus("edge-1")
    bus = tiers.bus("edge-2", bound=10.0)
    got: list[dict[str, object]] = []
    bus.start(got.append)
    assert await bus.wait_connected(2.0)
    assert await publisher.publish({"urls": ["http://h/a"]}) == 1
    await eventually(lambda: len(got) == 1)
    # Kill the subscriber's connections; the purge goes out while it is not subscribed.
    assert await kill_clients(raw, f"{tiers.prefix}/edge-2/bus") >= 1
    assert await publisher.publish({"urls": ["http://h/b"]}) == 2
    await eventually(lambda: any(m["type"] == "resync" for m in got))
    assert got[-1] == {"type": "resync", "gen": 2, "reason": "reconnect"}
    assert await bus.wait_connected(2.0)
    assert await publisher.publish({"urls": ["http://h/c"]}) == 3  # and it listens again
    await eventually(lambda: got[-1].get("gen") == 3 and got[-1]["type"] == "purge")
    assert [m["type"] for m in got] == ["purge", "resync", "purge"]


async def test_a_purge_before_the_first_subscription_is_a_resync(tiers: Tiers) -> None:
    """A node reads the generation before it serves (`baseline`); a purge announced before
    its subscription is up (a cluster client's first connection is slow) is a resync."""
    publisher = tiers.bus("edge-1")
    bus = tiers.bus("edge-2", bound=10.0)
    await bus.baseline()
    assert bus.applied_generation == 0
    assert await publisher.publish({"urls": ["http://h/a"]}) == 1  # nobody subscribed yet
    got: list[dict[str, object]] = []
    bus.start(got.append)
    assert await bus.wait_connected(5.0)
    await eventually(lambda: bool(got))
    assert got == [{"type": "resync", "gen": 1, "reason": "reconnect"}]


async def test_generation_check_and_gap_signal_resync(tiers: Tiers, raw: Client) -> None:
    tier = await tiers.tier("edge-1")
    bus = tiers.bus("edge-2", bound=0.4)
    got: list[dict[str, object]] = []
    bus.start(got.append)
    assert await bus.wait_connected(2.0)
    # A purge that was never announced: found by the periodic check within the bound.
    started = time.monotonic()
    await tier.purge(Purge(urls=["http://h/x"]), announce=False)
    await eventually(lambda: bool(got))
    assert time.monotonic() - started < 1.0
    assert got == [{"type": "resync", "gen": 1, "reason": "generation"}]
    # A generation skipped on the channel: signalled as soon as the next message arrives.
    await raw.incr(generation_key(tiers.prefix))
    await tier.purge(Purge(urls=["http://h/y"]))
    await eventually(lambda: len(got) == 3)
    assert got[1]["type"] == "purge" and got[1]["gen"] == 3
    assert got[2] == {"type": "resync", "gen": 3, "reason": "gap"}
    assert bus.last_contact > time.time() - 1
    assert bus.trusted()
    assert not bus.trusted(now=bus.last_contact + 0.5)  # the bound is 0.4 s
    # The counter lost (Redis flushed): the next check resyncs and starts over from it.
    await raw.delete(generation_key(tiers.prefix))
    await eventually(lambda: len(got) == 4)
    assert got[3] == {"type": "resync", "gen": 0, "reason": "reset"}
    assert bus.applied_generation == 0


# A dead or hung Redis of this test's own, whatever the mode: once.
@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
async def test_bus_on_dead_redis(tiers: Tiers) -> None:
    bus = PurgeBus(DEAD_URL, prefix=tiers.prefix, bound=1.0)
    tiers.made.append(bus)
    bus.start(lambda m: None)
    assert not await bus.wait_connected(0.2)
    assert not bus.trusted()
    with pytest.raises(RedisUnavailable):
        await bus.publish({"all": True})
    with pytest.raises(RedisUnavailable):
        await bus.purge_generation()


async def test_a_purge_by_tag_on_a_cluster_reads_one_set_and_scans_nothing(
    key_prefix: str,
) -> None:
    """100 objects over the 3 shards, tagged "t": the purge reads the tag's one set (one
    SMEMBERS, on one shard) and never SCANs a primary."""
    redis_url = mode_url("cluster", "")
    tier = RedisTier(redis_url, prefix=key_prefix, sweep_every=0)
    await tier.start()
    client = make_client(redis_url, 2.0)
    assert isinstance(client, RedisCluster)
    try:
        for i in range(100):
            assert await tier.put(make(f"http://h/{i}", tags=("t",)), time.time() + 60)

        async def calls() -> dict[str, int]:
            await client.initialize()
            total: dict[str, int] = {}
            for node in client.get_primaries():
                stats = await client.info("commandstats", target_nodes=node)
                for cmd in ("smembers", "scan", "zscan", "keys"):
                    total[cmd] = total.get(cmd, 0) + int(
                        stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)
                    )
            return total

        before = await calls()
        assert await tier.purge(Purge(tags=["t"])) == 100
        after = await calls()
        assert {k: after[k] - before[k] for k in after} == {
            "smembers": 1,
            "scan": 0,
            "zscan": 0,
            "keys": 0,
        }
        assert await tier.get("http://h/7") == []
    finally:
        await tier.close()
        await close_client(client, "test")
