"""The storage backends, one line each: a configuration section's name -> the factory that
builds its storage (`edge.store.storage.Factory`, in the backend's own module).

`build` calls every factory in this order (each returns None when the configuration turns
its backend off) and stacks what they built behind each worker's hot copy, local storages
first (`edge.store.tiers.Tiers`). A factory is named by its import path: a backend that is
off never imports its client library.

Adding a backend: its module (a `LocalStorage` or `SharedStorage` with a
`from_config(cfg, place)`), its line here, its keys in `edge.config.settings`, its section
in docs/storage.md.
"""

from __future__ import annotations

import importlib
from typing import cast

from edge.config.settings import EdgeConfig
from edge.store.memory import MemoryTier
from edge.store.storage import Factory, LocalStorage, Place, SharedStorage
from edge.store.tiers import Tiers

BACKENDS: dict[str, str] = {
    "node_cache": "edge.store.node:from_config",  # LMDB, every worker of a node
    "redis": "edge.store.redis_tier:from_config",  # every node: one Redis, Sentinel, Cluster
}


def factory(name: str) -> Factory:
    """The factory registered under `name`."""
    module, _, attr = BACKENDS[name].partition(":")
    return cast(Factory, getattr(importlib.import_module(module), attr))


async def build(cfg: EdgeConfig, place: Place) -> Tiers:
    """This worker's tiers: its hot copy and every backend the configuration turns on."""
    # refuse_late: a fill that raced a purge (requested before it) is not stored
    hot = MemoryTier(cfg.hot_bytes, cfg.memory_max_object_bytes, refuse_late=True)
    stack: list[LocalStorage | SharedStorage] = []
    bus = None
    for name in BACKENDS:
        built = await factory(name)(cfg, place)
        if built is None:
            continue
        stack.append(built.storage)
        bus = bus if built.bus is None else built.bus
    return Tiers(hot, stack, bus, known=BACKENDS)
