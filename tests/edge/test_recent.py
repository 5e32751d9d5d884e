"""`RecentKeys`: the keys a worker saw stored, bounded in bytes and forgotten after a while."""

from __future__ import annotations

from edge.base.ledger import ITEM_OVERHEAD
from edge.base.recent import RecentKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bounded_in_bytes_the_least_recently_added_go_first() -> None:
    clock = Clock()
    keys = RecentKeys(3 * (10 + ITEM_OVERHEAD), ttl=60, clock=clock)
    for name in ("a" * 10, "b" * 10, "c" * 10):
        keys.add(name)
    keys.add("a" * 10)  # added again: the most recent now
    keys.add("d" * 10)
    assert list(keys) == ["c" * 10, "a" * 10, "d" * 10]
    assert "b" * 10 not in keys and "a" * 10 in keys
    assert keys.bytes == 3 * (10 + ITEM_OVERHEAD) and len(keys) == 3
    keys.add("e" * 5000)  # larger than the bound: nothing stays, the count stays true
    assert len(keys) == 0 and keys.bytes == 0


def test_a_key_is_forgotten_after_its_ttl_unless_added_again() -> None:
    clock = Clock()
    keys = RecentKeys(1 << 20, ttl=60, clock=clock)
    keys.add("/old")
    clock.now += 30
    keys.add("/new")
    clock.now += 31
    assert "/old" not in keys and "/new" in keys
    keys.add("/old")
    assert "/old" in keys
    keys.clear()
    assert "/new" not in keys and keys.bytes == 0
