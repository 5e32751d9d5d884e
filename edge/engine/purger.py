"""Purge orchestration: one `Purger` for the purge API, for invalidation after writes, and
for what other nodes announce on the purge bus.

A purge is applied to this node (the node tier, so every worker of the node sees it before
the answer is sent, and this worker's hot copies), then to Redis and announced on the bus in
the same script; every node applies it and acknowledges. See docs/purge.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from multidict import MultiMapping

from edge.base.stats import Stats
from edge.cache import policy
from edge.cache.keys import cache_key, query_names
from edge.cache.slicing import purged_with
from edge.config.settings import EdgeConfig, QueryPolicy
from edge.store.storage import Purge, StorageUnavailable
from edge.store.tiers import Tiers


def purge_kind(spec: dict[str, Any]) -> str:
    """What a purge (a body or a bus message) names: "urls", "prefixes+tags", "soft-all"..."""
    if spec.get("all"):
        kind = "all"
    else:
        kind = "+".join(k for k in ("urls", "prefixes", "tags") if spec.get(k)) or "none"
    return f"soft-{kind}" if spec.get("soft") else kind


class Purger:
    def __init__(self, cfg: EdgeConfig, tiers: Tiers, stats: Stats) -> None:
        self.cfg = cfg
        self.tiers = tiers
        self.stats = stats

    def key_for(self, url: str) -> str:
        """The cache key a URL path (with its query) is stored under."""
        path, _, query = url.partition("?")
        rule = self.cfg.rule_for(path, query_names(query))
        return cache_key(path, query, rule.query if rule else QueryPolicy())

    async def after_write(
        self, method: str, target: str, host: str, status: int, origin_headers: MultiMapping[str]
    ) -> None:
        """RFC 9111 section 4.4 for unsafe methods, and the config's invalidation rules."""
        urls = policy.invalidation_targets(method, status, target, origin_headers, host or "edge")
        prefixes: list[str] = []
        tags: list[str] = []
        path, _, query = target.partition("?")
        names = query_names(query)
        for inv in self.cfg.invalidations:
            if inv.matches(path, names):
                urls += inv.urls
                prefixes += inv.prefixes
                tags += inv.tags
        if urls or prefixes or tags:
            await self.purge(urls=urls, prefixes=prefixes, tags=tags, kind="invalidation")

    async def purge(
        self,
        urls: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        tags: Iterable[str] = (),
        all: bool = False,
        soft: bool = False,
        kind: str = "api",
    ) -> dict[str, Any]:
        """Apply a purge here, in the shared tier, and announce it to every node.

        Answers what went where: ``memory`` (this node, at once), ``shared`` (the shared
        storages: Redis), and ``nodes``: one row per node process that applied it and
        acknowledged within `ACK_WAIT` (``acks`` says how many of the bus's receivers did).
        Without a shared storage, or when it is unreachable (``error``), only this node is
        purged.
        """
        t0 = time.monotonic()
        # A sliced object's manifest goes with its URL (edge.engine.slices).
        keys = sorted({k for u in urls for k in purged_with(self.key_for(u))})
        purge = Purge(keys, prefixes, tags, all=all, soft=soft)
        mine = self.tiers.purge_here(purge)
        self.stats.purges[kind] += 1
        self.stats.purged_entries += mine
        me: dict[str, Any] = {"node": self.cfg.node, "pid": os.getpid(), "entries": mine}
        result: dict[str, Any] = {"node": self.cfg.node, "kind": kind, "soft": soft}
        result["memory"] = mine
        bus = self.tiers.bus
        try:
            # The shared storage's purge also announces it on the purge bus, in the same
            # transaction, so every node drops its copies.
            done = await self.tiers.purge_shared(purge)
        except StorageUnavailable as exc:
            self.stats.purge_failures += 1
            result["error"] = f"shared tier unavailable ({exc}): purged on this node only"
            result.update(shared=None, nodes=[me], ms=_ms_since(t0))
            return result
        if done is None:
            result.update(shared=None, nodes=[me], ms=_ms_since(t0))
            return result
        shared, announced = done
        result["shared"] = shared
        acks: list[dict[str, Any]] = []
        if announced is None:
            result.update(nodes=[me], ms=_ms_since(t0))
            return result
        result["generation"] = announced.generation
        if bus is not None and announced.receivers:
            acks = await bus.collect_acks(announced.generation, announced.receivers)
        nodes = [me]
        for ack in acks:
            if ack.get("node") == me["node"] and ack.get("pid") == me["pid"]:
                me["entries"] += int(ack.get("entries", 0))  # our own echo from the bus
            else:
                nodes.append(ack)
        result["nodes"] = sorted(nodes, key=lambda n: (str(n.get("node")), n.get("pid", 0)))
        result["acks"] = {"expected": announced.receivers, "received": len(acks)}
        result["ms"] = _ms_since(t0)
        return result

    def apply_announced(self, message: dict[str, Any]) -> int:
        """A bus message (another node's purge, or the bus's own resync / blind marks)
        applied to this node; the count is acknowledged."""
        from edge.store.purge_bus import is_own

        kind = message.get("type")
        self.remember_generation(message.get("gen"))
        if kind == "resync":
            count = self.tiers.clear_here()
        elif kind == "blind":
            count = self.tiers.purge_here(Purge(all=True, soft=True, remember=False))
        elif kind == "purge":
            if is_own(message, self.cfg.node):
                return 0  # our own purge coming back: applied and counted when taken
            count = self.tiers.purge_here(Purge.from_message(message))
            kind = purge_kind(message)
        else:
            return 0
        self.stats.purged_entries += count
        self.stats.bus_purges[str(kind)] += 1
        self.stats.bus_purged_entries += count
        return count

    def remember_generation(self, gen: object) -> None:
        """A disk tier keeps the last bus generation it applied: restarted, the node
        compares it with Redis's and resyncs if purges went out while it was down."""
        if isinstance(gen, int):
            self.tiers.set_note(BUS_GENERATION, str(gen).encode())

    def generation_before_restart(self) -> int | None:
        raw = self.tiers.note(BUS_GENERATION)
        return int(raw) if raw is not None and raw.isdigit() else None


BUS_GENERATION = "bus-generation"


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 2)
