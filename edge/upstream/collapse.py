"""Collapsing misses: one origin fetch per key for everyone who waits for it.

Three rings, narrowest first:
  - this worker: a request for a key being fetched joins the `Fetch` in flight and gets its
    bytes as they arrive (`flights`);
  - this node: the fetching worker holds a fill lock in the node tier; another worker's
    fetch for the same key waits for what the holder stores, then serves that;
  - every node: the same with a lock in Redis.
And a key this worker does not know yet, whose small answer another worker of the node has
just written and is about to store (it holds the key meanwhile: `Tiers.hold_store`), is
waited for and served from that store (`stored_elsewhere`, Varnish's waiting list).
Only what is expected to be shareable is collapsed (`flow.expected_shareable`): a write
behind GET is never joined, so every client's write reaches the origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from edge.base.stats import Stats
from edge.cache.entry import Entry
from edge.cache.keys import select_variant
from edge.config.settings import EdgeConfig
from edge.store.storage import FillLocks
from edge.store.tiers import Tiers
from edge.upstream.client import Upstream
from edge.upstream.fetch import Fetch, FetchSpec

log = logging.getLogger("edge.upstream.collapse")


class Collapser:
    def __init__(self, cfg: EdgeConfig, tiers: Tiers, upstream: Upstream, stats: Stats) -> None:
        self.cfg = cfg
        self.tiers = tiers
        self.upstream = upstream
        self.stats = stats
        self.flights: dict[str, Fetch] = {}
        self.refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # What an entry becomes as it is stored, and what follows (the engine's delivery
        # hook: coded variants of compressible objects, edge.engine.compress).
        self.on_store: Callable[[Entry, float], Entry] | None = None

    @property
    def max_whole(self) -> int:
        """The largest object stored whole: above `slices.above` objects are sliced."""
        above = self.cfg.slicing.above
        limit = self.tiers.max_object_bytes
        return min(limit, above) if above else limit

    def known_cacheable(self, key: str) -> bool:
        return key in self.tiers.stored_before

    def join_or_start(self, spec: FetchSpec, collapse: bool) -> tuple[Fetch, bool]:
        """The fetch to take this client's answer from, and whether it is someone else's."""
        fetch = self.flights.get(spec.key) if collapse else None
        if fetch is not None and fetch.can_attach():
            self.stats.collapsed += 1
            return fetch, True
        return self.start(spec, collapse), False

    def start(self, spec: FetchSpec, collapse: bool) -> Fetch:
        fetch = Fetch(spec, self.max_whole)
        if collapse:
            self.flights[spec.key] = fetch
        self.spawn(self.run(fetch, collapse))
        return fetch

    def refresh(self, spec: FetchSpec) -> None:
        """RFC 5861 section 3: revalidate once in the background while serving stale."""
        key = spec.key
        if key in self.refreshing or key in self.flights:
            return
        self.refreshing.add(key)
        self.stats.background_refreshes += 1
        fetch = self.start(spec, True)
        fetch.leader_ready()
        fetch.done.add_done_callback(lambda _: self.refreshing.discard(key))

    async def run(self, fetch: Fetch, collapse: bool) -> None:
        key = fetch.spec.key
        held: list[tuple[FillLocks, str]] = []
        try:
            if collapse:
                for tier in self.tiers.locking():
                    if not tier.lock_ready():
                        continue
                    token = await tier.try_lock_async(key, self.cfg.collapse_timeout)
                    if token is not None:
                        held.append((tier, token))
                        continue
                    # Another worker or node fetches it: take what it stores.
                    if await self.wait_for_other(tier, fetch):
                        return
            self.stats.origin_fetches += 1
            await fetch.run(self.upstream, self.cfg.defaults, self.store, self.tiers.hold_store)
            head = fetch.head.result()
            if head.error is not None:
                self.stats.origin_errors[head.error.kind] += 1
            else:
                self.stats.origin_seconds += head.origin_ms / 1000
        finally:
            if self.flights.get(key) is fetch:
                del self.flights[key]
            for tier, token in reversed(held):
                with contextlib.suppress(Exception):
                    await tier.unlock_async(key, token)

    async def wait_for_other(self, tier: FillLocks, fetch: Fetch) -> bool:
        spec = fetch.spec
        newer = spec.stale.response_time if spec.stale is not None else None
        entries = await tier.wait_for_fill(
            spec.key, timeout=self.cfg.collapse_timeout, newer_than=newer
        )
        entry = select_variant(entries, spec.request_headers) if entries else None
        if entry is None:
            return False  # nothing stored for this client: fetch ourselves
        self.tiers.remember(entry, shared=tier.outside_node)
        fetch.serve_entry(entry)
        return True

    async def stored_elsewhere(self, key: str) -> list[Entry]:
        """Varnish's waiting list, across the node's workers: another worker holds `key`
        from its answer's write to its store (`Fetch._small`); what it stored, once it is
        ([] when no one holds it, or nothing was stored)."""
        return await self.tiers.wait_held(key, self.cfg.collapse_timeout)

    def store(self, entry: Entry, until: float) -> None:
        if self.on_store is not None:
            entry = self.on_store(entry, until)
        self.tiers.store(entry, until)
        self.stats.stored += 1

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
