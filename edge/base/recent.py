"""Keys seen lately: a set counted in a ledger account, whose members are forgotten after a
while."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from edge.base.ledger import ITEM_OVERHEAD, Account


class RecentKeys:
    """Each key costs its length and ITEM_OVERHEAD in `account`; when the account's bound
    is reached the least recently added go first, and a key added more than `ttl` seconds
    ago is no longer a member. (What `cachetools.TTLCache` with a `getsizeof` does, for a
    third of its cost per add: every miss adds its key.)"""

    def __init__(
        self, account: Account, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.account = account
        self.ttl = ttl
        self._clock = clock
        self._added: OrderedDict[str, float] = OrderedDict()  # key -> when, oldest first

    def add(self, key: str) -> None:
        added = self._added
        if key in added:
            added.move_to_end(key)
        else:
            size = len(key) + ITEM_OVERHEAD
            account = self.account
            while added and not account.fits(size):
                old, _ = added.popitem(last=False)
                account.give(len(old) + ITEM_OVERHEAD)
            if not account.take(size):
                return  # larger than the whole bound: not kept (the refusal is counted)
        added[key] = self._clock()

    def __contains__(self, key: object) -> bool:
        when = self._added.get(key)  # type: ignore[call-overload]
        return when is not None and self._clock() - when < self.ttl

    def __iter__(self) -> Iterator[str]:
        return iter(self._added)

    def __len__(self) -> int:
        return len(self._added)

    def clear(self) -> None:
        self._added.clear()
        self.account.reset()
