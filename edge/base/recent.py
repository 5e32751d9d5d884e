"""Keys seen lately: a set bounded in bytes, whose members are forgotten after a while."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from edge.base.ledger import ITEM_OVERHEAD


class RecentKeys:
    """Each key costs its length and ITEM_OVERHEAD; past `max_bytes` the least recently
    added go first, and a key added more than `ttl` seconds ago is no longer a member.
    (What `cachetools.TTLCache` with a `getsizeof` does, for a third of its cost per add:
    every miss adds its key.)"""

    def __init__(
        self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.bytes = 0
        self._clock = clock
        self._added: OrderedDict[str, float] = OrderedDict()  # key -> when, oldest first

    def add(self, key: str) -> None:
        added = self._added
        if key in added:
            added.move_to_end(key)
        else:
            self.bytes += len(key) + ITEM_OVERHEAD
        added[key] = self._clock()
        while self.bytes > self.max_bytes:
            old, _ = added.popitem(last=False)
            self.bytes -= len(old) + ITEM_OVERHEAD

    def __contains__(self, key: object) -> bool:
        when = self._added.get(key)  # type: ignore[call-overload]
        return when is not None and self._clock() - when < self.ttl

    def __iter__(self) -> Iterator[str]:
        return iter(self._added)

    def __len__(self) -> int:
        return len(self._added)

    def clear(self) -> None:
        self._added.clear()
        self.bytes = 0
