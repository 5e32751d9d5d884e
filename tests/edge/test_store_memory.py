"""Unit tests of the memory tier: byte bound, LRU, variants, keep-until, purge, indexes."""

from __future__ import annotations

import pytest

from edge.cache.entry import Entry
from edge.store.memory import MemoryTier, MiB
from edge.store.storage import Purge, PurgePattern, key_path

OVERHEAD = Entry("k", 200, (), b"", 0.0, 0.0).size  # size of an entry with an empty body


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    key: str = "http://shop.example/a",
    body: bytes = b"x",
    vary: tuple[tuple[str, str], ...] = (),
    tags: tuple[str, ...] = (),
    rt: float = 1_000_000.0,
) -> Entry:
    return Entry(key, 200, (), body, rt - 0.1, rt, vary=vary, tags=tags)


def sized(key: str, n: int, **kw: object) -> Entry:
    """An entry whose `size` is exactly n bytes."""
    return make(key, b"b" * (n - OVERHEAD), **kw)  # type: ignore[arg-type]


def check(tier: MemoryTier) -> None:
    """The incremental counters and the tag index agree with the slots."""
    slots = tier._slots()
    stats = tier.stats()
    assert stats["entries"] == sum(len(s.variants) for _, s in slots)
    assert stats["bytes"] == sum(s.size for _, s in slots)
    tags: dict[str, set[str]] = {}
    for key, slot in slots:
        for tag in slot.tags():
            tags.setdefault(tag, set()).add(key)
    assert tier._tag_index() == tags


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_key_path() -> None:
    assert key_path("http://h/a/b?x=1") == "/a/b?x=1"
    assert key_path("https://h:8443/") == "/"
    assert key_path("https://h") == "/"
    assert key_path("GET https://h/p") == "/p"
    assert key_path("/only/a/path?q=1") == "/only/a/path?q=1"  # keys without scheme and host


def test_purge_keys_without_host(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)
    for key in ("/api/misc/a?x=1", "/api/misc/b", "/img/a.png"):
        tier.put(make(key), clock.now + 60)
    assert tier.purge(Purge(prefixes=["/api/misc/"])) == 2
    assert tier.purge(Purge(prefixes=["*.png"])) == 1
    assert tier.stats()["keys"] == 0


def test_put_get_roundtrip_and_miss(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)
    e = make()
    assert tier.get(e.key) == []
    assert tier.put(e, clock.now + 60)
    assert tier.get(e.key) == [e]
    s = tier.stats()
    assert (s["keys"], s["entries"], s["bytes"]) == (1, 1, e.size)


def test_byte_bound_and_lru_keeps_hot_objects(clock: Clock) -> None:
    tier = MemoryTier(max_bytes=10_000, max_object_bytes=5_000, clock=clock)
    hot = sized("http://h/hot", 1_000)
    assert tier.stats()["entries"] == 0
    assert tier.put(hot, clock.now + 60)
    for i in range(50):
        assert tier.put(sized(f"http://h/cold{i}", 1_000), clock.now + 60)
        assert tier.get(hot.key) == [hot]  # touched: most recent
        assert tier.stats()["bytes"] <= 10_000
        check(tier)
    stats = tier.stats()
    assert stats["entries"] == 10
    assert stats["bytes"] == 10_000
    assert stats["evictions"] == 41
    assert tier.get("http://h/cold0") == []
    assert tier.get("http://h/cold49") != []


def test_lru_evicts_by_recency_and_size(clock: Clock) -> None:
    tier = MemoryTier(max_bytes=3_000, max_object_bytes=3_000, clock=clock)
    for name in "abc":
        tier.put(sized(f"http://h/{name}", 1_000), clock.now + 60)
    tier.get("http://h/a")  # b is now the least recently used
    tier.put(sized("http://h/big", 2_000), clock.now + 60)  # needs two slots' room
    assert [k for k in ("a", "b", "c", "big") if tier.get(f"http://h/{k}")] == ["a", "big"]


def test_per_object_limit(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)  # defaults: 256 MiB, 16 MiB per object
    image = make("http://h/img.jpg", b"\xff" * (5 * MiB))
    assert tier.fits(image.size)
    assert tier.put(image, clock.now + 60)
    huge = make("http://h/video.mp4", b"\0" * (17 * MiB))
    assert not tier.fits(huge.size)
    assert not tier.put(huge, clock.now + 60)
    assert tier.get(huge.key) == []
    small = MemoryTier(max_bytes=1_000, max_object_bytes=10_000, clock=clock)
    assert not small.fits(1_001)  # never more than the whole tier


def test_variants_replace_and_order(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)
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


def test_max_variants_drops_oldest(clock: Clock) -> None:
    tier = MemoryTier(clock=clock, max_variants=3)
    key = "http://h/v"
    for i in range(5):
        tier.put(make(key, vary=(("x-v", str(i)),)), clock.now + 60)
    assert sorted(e.vary[0][1] for e in tier.get(key)) == ["2", "3", "4"]
    check(tier)


def test_keep_until_expiry(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)
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
    check(tier)
    assert tier.stats()["bytes"] == long.size
    assert tier._tag_index() == {}
    clock.now += 100
    tier.put(make("http://h/new"), clock.now + 5)  # put sweeps dead keys
    assert tier.stats()["keys"] == 1
    assert tier.stats()["expirations"] == 3


def _filled(clock: Clock) -> MemoryTier:
    tier = MemoryTier(clock=clock)
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
    return tier


@pytest.mark.parametrize(
    ("kwargs", "count", "gone"),
    [
        ({"urls": ["http://shop.example/api/items/1"]}, 2, {"/api/items/1"}),
        ({"urls": ["http://shop.example/nope"]}, 0, set()),
        (
            {"prefixes": ["/api/misc/"]},
            3,
            {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c"},
        ),
        (
            {"prefixes": ["http://shop.example/api/misc/"]},
            2,
            {"/api/misc/a?x=1", "/api/misc/b"},
        ),
        ({"prefixes": ["/api/misc/*"]}, 3, {"/api/misc/a?x=1", "/api/misc/b", "/api/misc/c"}),
        ({"prefixes": ["/api/misc/*=1"]}, 1, {"/api/misc/a?x=1"}),
        ({"prefixes": ["/img/??.png"]}, 1, {"/img/ab.png"}),
        ({"prefixes": ["http://cdn.example/*"]}, 1, {"/api/misc/c"}),
        ({"tags": ["misc"]}, 2, {"/api/misc/a?x=1", "/api/misc/b"}),
        ({"tags": ["item-1", "img"]}, 4, {"/api/items/1", "/img/ab.png", "/img/abc.png"}),
        ({"tags": ["b"], "urls": ["http://shop.example/api/misc/b"]}, 1, {"/api/misc/b"}),
        (
            {"all": True},
            7,
            {
                "/api/misc/a?x=1",
                "/api/misc/b",
                "/api/misc/c",
                "/api/items/1",
                "/img/ab.png",
                "/img/abc.png",
            },
        ),
    ],
)
@pytest.mark.parametrize("soft", [False, True])
def test_purge(
    clock: Clock, kwargs: dict[str, object], count: int, gone: set[str], soft: bool
) -> None:
    tier = _filled(clock)
    keys = [k for k, _ in tier._slots()]
    assert tier.purge(Purge(**kwargs, soft=soft)) == count  # type: ignore[arg-type]
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


def test_soft_purge_copies_entries(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)
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


def test_bad_prefix_is_refused_before_anything(clock: Clock) -> None:
    tier = _filled(clock)
    with pytest.raises(ValueError):
        tier.purge(Purge(urls=["http://shop.example/api/misc/b"], prefixes=["api/misc"]))
    assert tier.stats()["entries"] == 7


def test_pattern_kinds() -> None:
    assert PurgePattern.parse("/a/").kind == "path"
    assert PurgePattern.parse("https://h/a").kind == "url"
    g = PurgePattern.parse("/a/*/b?")
    assert (g.kind, g.literal) == ("glob", "/a/")
    assert PurgePattern.parse("*.png").literal == ""
    assert PurgePattern.parse("http://h/*").kind == "urlglob"


def test_indexes_consistent_after_eviction(clock: Clock) -> None:
    tier = MemoryTier(max_bytes=5_000, max_object_bytes=5_000, clock=clock)
    for i in range(40):
        tier.put(sized(f"http://h/{i}", 1_000, tags=(f"t{i % 3}", "all")), clock.now + 60)
    check(tier)
    index = tier._tag_index()
    held = {k for k, _ in tier._slots()}
    assert len(held) == 5
    assert set().union(*index.values()) == held
    assert index["all"] == held
    assert tier.purge(Purge(tags=["all"])) == 5
    assert tier._tag_index() == {}
    assert tier.stats() | {"evictions": 0, "expirations": 0} == {
        "keys": 0,
        "entries": 0,
        "bytes": 0,
        "max_bytes": 5_000,
        "max_object_bytes": 5_000,
        "evictions": 0,
        "expirations": 0,
        "tags": 0,
    }


def test_replacing_variant_retags(clock: Clock) -> None:
    tier = MemoryTier(clock=clock)
    tier.put(make(tags=("old",)), clock.now + 60)
    tier.put(make(tags=("new",)), clock.now + 60)
    assert tier._tag_index() == {"new": {"http://shop.example/a"}}
    assert tier.purge(Purge(tags=["old"])) == 0
    assert tier.purge(Purge(tags=["new"])) == 1


def test_random_operations_keep_counters_and_indexes_consistent(clock: Clock) -> None:
    import random

    rng = random.Random(7)
    tier = MemoryTier(max_bytes=8_000, max_object_bytes=3_000, clock=clock, max_variants=3)
    for _ in range(3_000):
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
        check(tier)
