"""The two storage tiers stacked: memory on each node, then the Redis shared by all nodes.

A memory miss that hits Redis fills memory. Storing goes to memory at once and to Redis
in the background, so storing never delays a response. Purges reach memory, Redis, and
(through the purge bus) every other node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from edge.entry import Entry
from edge.store_memory import MemoryTier

if TYPE_CHECKING:
    from edge.purge_bus import PurgeBus
    from edge.store_redis import RedisTier

log = logging.getLogger("edge.tiers")


def keep_until(entry: Entry) -> float:
    return entry.response_time + entry.meta.get("keep", entry.meta.get("lifetime", 0.0))


class Tiers:
    def __init__(
        self,
        memory: MemoryTier,
        redis: RedisTier | None = None,
        bus: PurgeBus | None = None,
    ) -> None:
        self.memory = memory
        self.redis = redis
        self.bus = bus
        self._background: set[asyncio.Task[Any]] = set()

    def memory_get(self, key: str) -> list[Entry]:
        """Memory variants we can vouch for.

        While this node has lost contact with the purge bus for longer than its bound, a purge
        may have gone out unseen: entries stored before the contact was lost are not served
        (they are refetched; stale-if-error may still use them when the origin fails).
        """
        entries = self.memory.get(key)
        if entries and self.bus is not None and not self.bus.trusted():
            since = self.bus.last_contact
            return [e for e in entries if e.response_time > since]
        return entries

    def untrusted_memory(self, key: str) -> list[Entry]:
        """Every memory variant, including those `memory_get` holds back (for stale-if-error)."""
        return self.memory.get(key)

    async def get(self, key: str) -> list[Entry]:
        entries = self.memory_get(key)
        if entries or self.redis is None:
            return entries
        entries = await self.redis.get(key)
        for entry in entries:
            self.memory.put(entry, keep_until(entry))
        return entries

    def store(self, entry: Entry, until: float) -> None:
        self.memory.put(entry, until)
        if self.redis is not None:
            self.spawn(self.redis.put(entry, until))

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

    async def watch_redis(self, every: float = 1.0) -> None:
        """Ask Redis something cheap every `every` seconds, for as long as the node runs.

        The tier only learns that Redis went away, or came back, when it is asked something;
        a node serving nothing but memory hits would otherwise report a stale status in
        /_edge/health and the metrics, and keep running without the shared tier after Redis
        returned. Each probe is one short call under the tier's own timeout and breaker."""
        from edge.purge_bus import RedisUnavailable

        if self.redis is None:
            return
        while True:
            await asyncio.sleep(every)
            try:
                await self.redis.purge_generation()
            except RedisUnavailable:
                pass
            except Exception as exc:  # a probe must never end the watch
                log.warning("redis watch: unexpected %r", exc)

    def redis_status(self) -> str:
        if self.redis is None:
            return "off"
        return str(self.redis.status)
