"""The storage backends: a configuration section's name -> the factory that
builds its storage (`edge.store.storage.Factory`, in the backend's own module).

`build` calls, in this order, the factory of every backend its section turns on (`ON`; a
factory still returns None when what it needs is missing) and stacks what they built behind
each worker's hot copy, local storages first (`edge.store.tiers.Tiers`). A factory is named
by its import path, imported only when its backend is on: a backend that is off never
imports its client library (the Redis client: 9 MiB of PSS in each worker of an idle
2-worker node, 22 -> 13 MiB).

Adding a backend: its module (a `LocalStorage` or `SharedStorage` with a
`from_config(cfg, place)`), its lines here, its keys in `edge.config.settings`, its section
in docs/storage.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from edge.config.settings import EdgeConfig
from edge.store.memory import MemoryTier
from edge.store.storage import Factory, LocalStorage, Place, SharedStorage
from edge.store.tiers import Tiers

BACKENDS: dict[str, str] = {
    "node_cache": "edge.store.node:from_config",  # LMDB, every worker of a node
    "redis": "edge.store.redis_tier:from_config",  # every node: one Redis, Sentinel, Cluster
}
ON: dict[str, Callable[[EdgeConfig], bool]] = {
    "node_cache": lambda cfg: cfg.node_cache_enabled,
    "redis": lambda cfg: bool(cfg.redis_url),
}
"""Whether the configuration turns each backend on (read before its module is imported)."""


def factory(name: str) -> Factory:
    """The factory registered under `name`."""
    module, _, attr = BACKENDS[name].partition(":")
    return cast(Factory, getattr(importlib.import_module(module), attr))


async def build(cfg: EdgeConfig, place: Place) -> Tiers:
    """This worker's tiers: its hot copy and every backend the configuration turns on."""
    # refuse_late: a fill that raced a purge (requested before it) is not stored
    hot = MemoryTier(
        cfg.hot_bytes, cfg.memory_max_object_bytes, refuse_late=True, files=cfg.memory_sendfile
    )
    stack: list[LocalStorage | SharedStorage] = []
    bus = None
    for name in BACKENDS:
        if not ON[name](cfg):
            continue
        built = await factory(name)(cfg, place)
        if built is None:
            continue
        stack.append(built.storage)
        bus = bus if built.bus is None else built.bus
    return Tiers(hot, stack, bus, known=BACKENDS)
