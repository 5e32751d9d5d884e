"""The fill locks of the shared tiers, behind one small interface for `edge.upstream.collapse`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edge.cache.entry import Entry

if TYPE_CHECKING:
    from edge.store.node import NodeTier
    from edge.store.redis_tier import RedisTier


class NodeLocks:
    """The node tier's lock: across the workers of this node (synchronous LMDB calls)."""

    outside_node = False  # what it waits for is stored in the node tier already

    def __init__(self, node: NodeTier) -> None:
        self.node = node

    def lock_ready(self) -> bool:
        return True

    async def try_lock_async(self, key: str, ttl: float) -> str | None:
        return self.node.try_lock(key, ttl)

    async def unlock_async(self, key: str, token: str) -> None:
        # The fill's node-tier write runs on the next loop turn (after its clients got their
        # answer, Tiers.store): let it land before the waiting workers look.
        await asyncio.sleep(0)
        self.node.unlock(key, token)

    async def wait_for_fill(
        self, key: str, timeout: float, newer_than: float | None = None
    ) -> list[Entry]:
        return await self.node.wait_for_fill(key, timeout, newer_than=newer_than)


class RedisLocks:
    """The Redis lock: across nodes; skipped while Redis is down (the node fetches alone)."""

    outside_node = True  # what it waits for comes from another node: keep a node copy

    def __init__(self, redis: RedisTier) -> None:
        self.redis = redis

    def lock_ready(self) -> bool:
        return self.redis.available

    async def try_lock_async(self, key: str, ttl: float) -> str | None:
        return await self.redis.try_lock(key, ttl)

    async def unlock_async(self, key: str, token: str) -> None:
        await self.redis.unlock(key, token)

    async def wait_for_fill(
        self, key: str, timeout: float, newer_than: float | None = None
    ) -> list[Entry]:
        return await self.redis.wait_for_fill(key, timeout=timeout, newer_than=newer_than)
