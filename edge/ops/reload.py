"""Reloading `edge.yaml` without a restart: the memory tiers, the node tier and Redis keep
what they hold.

How a reload is asked for: SIGHUP to the node's main process (with `--workers N`, the
supervisor checks the file, then passes SIGHUP on to every worker; with one worker, that
process reloads itself), `woody-edge reload --pid-file F` (which sends it), or
`POST /_edge/reload` with the purge token (`woody-edge reload --edge URL`).

Each process reads the file again with the same environment and command-line overrides
as at start (`ConfigSource`). A file that does not parse is refused with the same
key-naming error as at start (``edge.yaml: rules[2].ttl: ...``), logged, and the running
configuration stays. A good one is applied by `apply` to the requests that come next
(`Engine.reconfigure`): rules, TTLs, query policies, tags, invalidations, hosts, header
options, limits, the purge token, and the origins with their timeouts (a new origin
client; the old one is closed once answers in flight had time to finish). What a
running process cannot change (`RESTART_ONLY`: the node's name, listen address, worker
count, Redis, memory budgets, the node tier; in `tls:`, the listener's port, protocol
versions, session tickets, HTTP/2 on or off and the file watch) keeps its running value; the
reload says which of those the file changed (`restart_needed`), so the operator knows a
restart is still due. The rest of `tls:` applies: the certificates from the next handshake,
the redirect, HSTS and the HTTP/2 limits from the next connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.base.shutdown import cancel_all
from edge.config.settings import ConfigError, EdgeConfig, config_from_environment
from edge.config.tls import TlsSettings
from edge.upstream.client import Upstream

if TYPE_CHECKING:
    from edge.engine.engine import Engine

log = logging.getLogger("edge.ops.reload")

RESTART_ONLY = (
    "node",
    "host",
    "port",
    "workers",
    "redis_url",
    "redis_prefix",
    "redis_timeout",
    "purge_staleness_bound",
    "memory_max_bytes",
    "memory_max_object_bytes",
    "memory_hot_bytes",
    "memory_sendfile",
    "node_cache_enabled",
    "node_cache_path",
    "node_cache_max_bytes",
)
# In `tls:`, what the listener was made with: its port, its context (protocol versions, ALPN,
# session tickets) and the watch of the certificate files. The rest applies on reload: the
# certificates (from the next handshake), the redirect, HSTS and the HTTP/2 limits (from the
# next connection).
TLS_RESTART_ONLY = ("port", "min_version", "session_tickets", "reload_check")
UPSTREAM = ("origins", "connect_timeout", "read_timeout", "origin_down", "origin_idle")
_SECRET = ("purge_token",)


@dataclass(frozen=True)
class ConfigSource:
    """How this node's configuration was built: the file and the overrides."""

    path: str | None
    flags: dict[str, Any] = field(default_factory=dict)

    def load(self) -> EdgeConfig:
        """Read it again (raises ConfigError naming the key and the file)."""
        return config_from_environment(self.path, **self.flags)


def changed(old: EdgeConfig, new: EdgeConfig) -> list[str]:
    """Names of the settings that differ (the file's name aside)."""
    return [
        f.name
        for f in dataclasses.fields(EdgeConfig)
        if f.name != "source" and getattr(old, f.name) != getattr(new, f.name)
    ]


def reloadable(old: EdgeConfig, new: EdgeConfig) -> tuple[EdgeConfig, list[str]]:
    """`new` with the restart-only settings of `old`, and which of those `new` changed."""
    kept = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    tls, tls_kept = _tls_reloadable(old.tls, new.tls)
    running = {n: getattr(old, n) for n in RESTART_ONLY}
    return dataclasses.replace(new, tls=tls, **running), kept + tls_kept


def _tls_reloadable(
    old: TlsSettings | None, new: TlsSettings | None
) -> tuple[TlsSettings | None, list[str]]:
    """`tls:` as a reload can apply it, and what in it needs a restart."""
    if old is None or new is None:
        return old, ([] if old == new else ["tls"])  # no listener to change, or one to stop
    kept = [f"tls.{n}" for n in TLS_RESTART_ONLY if getattr(old, n) != getattr(new, n)]
    if old.http2.enabled != new.http2.enabled:
        kept.append("tls.http2.enabled")  # ALPN is the listener context's
    http2 = dataclasses.replace(new.http2, enabled=old.http2.enabled)
    running = {n: getattr(old, n) for n in TLS_RESTART_ONLY}
    return dataclasses.replace(new, http2=http2, **running), kept


class Reloader:
    """One process's reloads (see the module docstring). `hooks` run after each applied
    reload with the new configuration (e.g. TLS certificates)."""

    def __init__(self, source: ConfigSource, engine: Engine, supervisor: int | None = None) -> None:
        self.source = source
        self.engine = engine
        self.supervisor = supervisor
        """The supervisor's pid, when this process is one of its workers."""
        self.hooks: list[Callable[[EdgeConfig], Awaitable[None]]] = []
        self.reloads = 0
        self.refused = 0
        self.last: dict[str, Any] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def check(self) -> tuple[EdgeConfig | None, dict[str, Any]]:
        """Read the file; the new configuration (None if refused) and what would change."""
        try:
            new = self.source.load()
        except ConfigError as exc:
            return None, {"ok": False, "error": str(exc)}
        cfg, kept = reloadable(self.engine.cfg, new)
        diff = changed(self.engine.cfg, cfg)
        shown = [("purge_token (hidden)" if n in _SECRET else n) for n in diff]
        return cfg, {"ok": True, "source": new.source, "changed": shown, "restart_needed": kept}

    async def reload(self) -> dict[str, Any]:
        """Read the file again and apply it; the outcome, also logged."""
        async with self._lock:
            cfg, result = self.check()
            if cfg is None:
                self.refused += 1
                log.error("reload refused: %s; the running configuration stays", result["error"])
            else:
                await self.apply(cfg, changed(self.engine.cfg, cfg))
                self.reloads += 1
                log.info(
                    "reloaded %s: changed %s%s",
                    result["source"],
                    ", ".join(result["changed"]) or "nothing",
                    (
                        f"; needs a restart to change {', '.join(result['restart_needed'])}"
                        if result["restart_needed"]
                        else ""
                    ),
                )
            self.last = result
            return result

    async def apply(self, cfg: EdgeConfig, diff: list[str]) -> None:
        engine = self.engine
        upstream = None
        if any(name in diff for name in UPSTREAM):
            upstream = Upstream.configured(cfg)
            await upstream.start()
            self._retire(engine.upstream, engine.cfg.read_timeout + engine.cfg.collapse_timeout)
        engine.reconfigure(cfg, upstream)
        for hook in self.hooks:
            await hook(cfg)

    def _retire(self, upstream: Upstream, grace: float) -> None:
        async def later() -> None:
            try:
                await asyncio.sleep(grace)
            finally:
                await upstream.close()

        task = asyncio.get_running_loop().create_task(later(), name="retired-upstream")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        """Close the origin clients replaced by reloads now (the node is stopping)."""
        await cancel_all(list(self._retired), "reload: retired origin clients")

    def status(self) -> dict[str, Any]:
        return {"reloads": self.reloads, "refused": self.refused, "last": self.last}
