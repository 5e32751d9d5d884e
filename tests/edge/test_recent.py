"""`RecentKeys`: the keys a worker saw stored, bounded in bytes and forgotten after a while."""

from __future__ import annotations

from edge.base.ledger import ITEM_OVERHEAD, Account
from edge.base.recent import RecentKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bounded_in_bytes_the_least_recently_added_go_first() -> None:
    clock = Clock()
    account = Account("stored_keys", 3 * (10 + ITEM_OVERHEAD))
    keys = RecentKeys(account, ttl=60, clock=clock)
    for name in ("a" * 10, "b" * 10, "c" * 10):
        keys.add(name)
    keys.add("a" * 10)  # added again: the most recent now
    keys.add("d" * 10)
    assert list(keys) == ["c" * 10, "a" * 10, "d" * 10]
    assert "b" * 10 not in keys and "a" * 10 in keys
    assert account.used == 3 * (10 + ITEM_OVERHEAD) and len(keys) == 3
    keys.add("e" * 5000)  # larger than the bound: not kept, refused; the count stays true
    assert "e" * 5000 not in keys and account.refused == 1
    assert len(keys) == 0 and account.used == 0
    account.limit = 2 * (10 + ITEM_OVERHEAD)  # a reload lowers the bound: the next add obeys
    for name in ("f" * 10, "g" * 10, "h" * 10):
        keys.add(name)
    assert list(keys) == ["g" * 10, "h" * 10] and account.used == account.limit


def test_a_key_is_forgotten_after_its_ttl_unless_added_again() -> None:
    clock = Clock()
    account = Account("stored_keys", 1 << 20)
    keys = RecentKeys(account, ttl=60, clock=clock)
    keys.add("/old")
    clock.now += 30
    keys.add("/new")
    clock.now += 31
    assert "/old" not in keys and "/new" in keys
    keys.add("/old")
    assert "/old" in keys
    keys.clear()
    assert "/new" not in keys and account.used == 0
