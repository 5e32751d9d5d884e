"""The storage tiers stacked: a hot copy in each worker, the node tier shared by the workers
of a node, and the Redis shared by all nodes.

- hot (`MemoryTier`, per worker): parsed entries and their bytes, read on every hit without
  a copy. Kept coherent with the node tier through its purge generation: when any worker
  purged something, each hot copy is checked once against the node tier before it is served.
- node (`NodeTier`, LMDB, optional): one memory budget per node, an object filled by one
  worker is a hit for all of them; on disk it survives a restart.
- Redis (optional): shared by the nodes; reached only when this node has nothing.

Reads are synchronous down to the node tier (`get_now`); only Redis needs an await.
Storing goes to hot and node at once and to Redis in the background, so storing never
delays a response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from edge.base.ledger import ITEM_OVERHEAD
from edge.cache.entry import Entry
from edge.store.memory import MemoryTier

if TYPE_CHECKING:
    from edge.store.node import NodeTier
    from edge.store.purge_bus import PurgeBus
    from edge.store.redis_tier import RedisTier
    from edge.upstream.collapse import LockingTier

log = logging.getLogger("edge.store.tiers")


# What `Tiers.stored_before` may hold per worker: about 3,000 keys of 100 bytes.
STORED_BEFORE_BYTES = 1 << 20


def _itself(size: int) -> int:
    return size


def keep_until(entry: Entry) -> float:
    return entry.response_time + entry.meta.get("keep", entry.meta.get("lifetime", 0.0))


class Tiers:
    def __init__(
        self,
        hot: MemoryTier,
        node: NodeTier | None = None,
        redis: RedisTier | None = None,
        bus: PurgeBus | None = None,
    ) -> None:
        self.hot = hot
        self.node = node
        self.redis = redis
        self.bus = bus
        self._generation = node.generation if node is not None else 0
        self._checked: set[str] = set()  # hot keys checked against the node this generation
        self.version = 0  # moves whenever this worker's view of the tiers changes
        self.hot_hits: set[str] = set()  # keys served from hot copies, for the node's LRU
        # Keys this worker saw stored (by itself, another worker, or another node): later
        # misses on them are expected to be shareable, so they are collapsed. Bounded in
        # bytes (each key's length and what an item costs), the least recent dropped first.
        self.stored_before: TTLCache[str, int] = TTLCache(
            maxsize=STORED_BEFORE_BYTES, ttl=3600, getsizeof=_itself
        )
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def memory(self) -> MemoryTier:
        return self.hot

    @property
    def max_object_bytes(self) -> int:
        tier = self.node if self.node is not None else self.hot
        return tier.max_object_bytes

    def vouched_until(self, key: str, now: float) -> float:
        """Until when what `get_now(key)` returned from the hot tier stays its answer, as
        long as the hot tier does not change and no worker purges (`edge.engine.fresh_hits`
        watches both): the hot copy's first expiry, and while the node listens to the
        purge bus, the end of its trust in it. `now` or earlier: not vouched for."""
        until = self.hot.first_out(key)
        bus = self.bus
        if bus is not None:
            if not bus.trusted():
                return now
            until = min(until, bus.last_contact + bus.bound)
        return until

    # -- reads --------------------------------------------------------------------------

    def get_now(self, key: str) -> list[Entry] | None:
        """The variants of `key` this node holds; None when only Redis can tell."""
        node = self.node
        if node is not None:
            generation = node.generation
            if generation != self._generation:
                self._generation = generation
                self._checked.clear()
        entries = self.hot.get(key)
        if entries and node is not None and key not in self._checked:
            # Something was purged since this copy was last checked: is it still there?
            if all(node.valid(e) for e in entries):
                self._check(key)
            else:
                self.hot.delete(key)
                self.version += 1
                entries = []
        if not entries and node is not None:
            entries = node.get(key)
            for entry in entries:
                self.hot.put(entry, keep_until(entry))
            if entries:
                self.saw_stored(key)
                self._check(key)  # a key not found is not remembered (a client makes many)
            self.version += 1
        if entries:
            return self._trusted(entries)
        return None if self.redis is not None else []

    def keep_hot(self, entry: Entry, until: float) -> bool:
        """A copy this worker alone keeps (a sliced object assembled whole: edge.engine.slices). It
        stands until `until` or the node's next purge generation, whichever comes first
        (then the node tier, which does not hold it, no longer vouches for it)."""
        if not self.hot.put(entry, until):
            return False
        if self.node is not None:
            self._check(entry.key)
        self.version += 1
        return True

    def saw_stored(self, key: str) -> None:
        """`key` was stored: its next misses are expected shareable (`stored_before`)."""
        self.stored_before[key] = len(key) + ITEM_OVERHEAD

    def _check(self, key: str) -> None:
        """`key`'s hot copy stands this purge generation. The keys the hot tier let go of
        stay until the generation moves: past a few times what it holds, all are dropped
        (each hot copy is checked against the node again)."""
        checked = self._checked
        if len(checked) > 4 * len(self.hot) + 1024:
            checked.clear()
        checked.add(key)

    def newer(self, key: str, than: Entry) -> list[Entry]:
        """The node's variants of `key` if another worker stored a newer response than the
        hot copy `than` (say it revalidated it): they replace the hot copy."""
        if self.node is None:
            return []
        entries = [e for e in self.node.get(key) if e.response_time > than.response_time]
        self.version += 1
        for entry in entries:
            self.hot.put(entry, keep_until(entry))
        return self._trusted(entries)

    def _trusted(self, entries: list[Entry]) -> list[Entry]:
        """While this node has lost contact with the purge bus for longer than its bound, a
        purge may have gone out unseen: entries stored before the contact was lost are not
        served (they are refetched; stale-if-error may still use them)."""
        bus = self.bus
        if bus is not None and not bus.trusted():
            since = bus.last_contact
            return [e for e in entries if e.response_time > since]
        return entries

    def untrusted(self, key: str) -> list[Entry]:
        """Every variant held here, including those `get_now` holds back (for stale-if-error)."""
        entries = self.hot.get(key)
        if not entries and self.node is not None:
            entries = self.node.get(key)
        return entries

    async def get(self, key: str) -> list[Entry]:
        entries = self.get_now(key)
        if entries is not None:
            return entries
        assert self.redis is not None
        entries = await self.redis.get(key)
        for entry in entries:
            self.remember(entry, shared=True)
        return entries

    # -- writes -------------------------------------------------------------------------

    def remember(self, entry: Entry, shared: bool = False) -> None:
        """An entry another worker or node stored: keep a hot copy (and a node copy of what
        came from Redis)."""
        until = keep_until(entry)
        self.version += 1
        self.saw_stored(entry.key)
        self.hot.put(entry, until)
        self._check(entry.key)
        if shared and self.node is not None:
            self.node.put(entry, until)

    def store(self, entry: Entry, until: float) -> None:
        """Into this worker's hot copy now; into the node tier once the waiting clients got
        their answer (next loop turn: storing never delays a response); into Redis in the
        background."""
        self.version += 1
        self.saw_stored(entry.key)
        self.hot.put(entry, until)
        self._check(entry.key)
        if self.node is not None:
            asyncio.get_running_loop().call_soon(self._node_put, entry, until)
        if self.redis is not None:
            self.spawn(self.redis.put(entry, until))

    def _node_put(self, entry: Entry, until: float) -> None:
        if self.node is not None and not self.node.closed:
            self.node.put(entry, until)

    def purge_here(
        self,
        urls: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        tags: Iterable[str] = (),
        all: bool = False,
        soft: bool = False,
        at: float | None = None,
        remember: bool = True,
    ) -> int:
        """Purge this node: the node tier (every worker sees it before this returns, through
        its generation) and this worker's hot copies. Returns the entries affected."""
        urls, prefixes, tags = list(urls), list(prefixes), list(tags)
        self.version += 1
        hot = self.hot.purge(urls, prefixes, tags, all=all, soft=soft, at=at, remember=remember)
        if self.node is None:
            return hot
        self._checked.clear()
        return self.node.purge(urls, prefixes, tags, all=all, soft=soft, at=at, remember=remember)

    def forget_answers(self) -> None:
        """Drop the answers built from this worker's hot copies (`Entry.answers`): they are
        built again from the current configuration on the next hit."""
        for entry in self.hot.entries():
            entry.answers.clear()

    def clear_here(self) -> int:
        self.version += 1
        count = self.hot.clear()
        self._checked.clear()
        return self.node.clear() if self.node is not None else count

    # -- locks for collapsing -----------------------------------------------------------

    def locking(self) -> list[LockingTier]:
        from edge.store.locks import NodeLocks, RedisLocks

        out: list[LockingTier] = []
        if self.node is not None:
            out.append(NodeLocks(self.node))
        if self.redis is not None:
            out.append(RedisLocks(self.redis))
        return out

    # -- background work ----------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        """Run a coroutine in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background storage task failed: %r", task.exception())

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for background writes (at shutdown)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    async def watch(self, every: float = 1.0, each_tick: Callable[[], None] | None = None) -> None:
        """Housekeeping for as long as the worker runs: the node tier's access times,
        heartbeat, and a sync to disk every 10 s; and a cheap Redis call, since the Redis
        tier only learns that Redis went away, or came back, when it is asked something (a
        node serving nothing but hits would otherwise report a stale status, and keep
        running without the shared tier after Redis returned)."""
        from edge.store.purge_bus import RedisUnavailable

        ticks = 0
        while True:
            await asyncio.sleep(every)
            ticks += 1
            if each_tick is not None:
                each_tick()  # the engine's kept hits add to hot_hits, read below
            node = self.node
            if node is not None:
                try:
                    hits, self.hot_hits = self.hot_hits, set()
                    for key in hits:
                        node.touch(key)  # the node tier's LRU knows of hot hits too
                    node.touch_flush()
                    node.heartbeat()
                    if ticks % 10 == 0:
                        node.sync()
                except Exception as exc:  # housekeeping must never end the watch
                    log.warning("node tier housekeeping: %r", exc)
            if self.redis is not None:
                try:
                    await self.redis.purge_generation()
                except RedisUnavailable:
                    pass
                except Exception as exc:
                    log.warning("redis watch: unexpected %r", exc)

    def redis_status(self) -> str:
        if self.redis is None:
            return "off"
        return str(self.redis.status)

    def stats(self) -> dict[str, Any]:
        """What /_edge/stats shows as `memory` (the node tier when on, else the hot tier)."""
        if self.node is not None:
            out: dict[str, Any] = dict(self.node.stats())
            out["hot"] = self.hot.stats()
            return out
        return dict(self.hot.stats())
