"""The storage interface: what every backend of the tier stack offers (Pingora's `Storage`
trait: lookup, a fill, purge, touch).

`edge.store.tiers.Tiers` stacks storages in front of the origin: each worker's hot copy
(`MemoryTier`), then the local storages (synchronous, on this node: the node tier), then the
shared ones (awaited, across nodes: Redis). `edge.store.backends` builds the stack from the
configuration, one line per backend. A backend is a class with the methods of
`LocalStorage` or `SharedStorage`; the optional capabilities below (`Coherent`, `Locking`,
`Announcing`, `Notes`) are found with `isinstance` once, when the stack is built, never on a
hit.

A purge is one value, `Purge`: what it names (keys, path or URL prefixes and globs, tags,
everything), hard or soft, when it was made, and whether it is remembered to refuse late
fills. Its rule (which keys it selects) is written here once; a backend only finds the keys
through its own indexes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edge.cache.entry import Entry

if TYPE_CHECKING:
    from edge.config.settings import EdgeConfig
    from edge.store.purge_bus import Announced, PurgeBus

_GLOB_CHARS = "*?["
PURGE_MEMORY_SECONDS = 300.0
"""How long a purge is remembered to refuse late stores: a response whose request was sent
before a purge of it, and that arrives after the purge, is not stored (the fetch raced it)."""


class StorageUnavailable(RuntimeError):
    """A shared storage cannot be reached (raised by its purge; reads and writes degrade)."""


def key_path(key: str) -> str:
    """The path and query of a primary key (``http://host/p?q`` -> ``/p?q``)."""
    scheme_end = key.find("://")
    start = key.find("/", scheme_end + 3) if scheme_end >= 0 else key.find("/")
    return key[start:] if start >= 0 else "/"


@dataclasses.dataclass(frozen=True, slots=True)
class PurgePattern:
    """One purge prefix or glob, classified once.

    `kind` is "path" (plain path prefix), "url" (plain prefix of the whole key),
    "glob" (fnmatch on the path and query) or "urlglob" (fnmatch on the whole key).
    `literal` is the text before the first wildcard (the prefix itself for plain kinds),
    which an ordered index (LMDB, a Redis sorted set) uses to narrow its range.
    """

    text: str
    kind: str
    literal: str

    @classmethod
    def parse(cls, text: str) -> PurgePattern:
        is_url = "://" in text
        if not is_url and not text.startswith(("/", "*", "?", "[")):
            raise ValueError(
                f"purge prefix {text!r}: expected a path (/api/), a full URL (https://h/api/) "
                "or a glob (/api/*)"
            )
        cut = min((i for i in (text.find(c) for c in _GLOB_CHARS) if i >= 0), default=-1)
        if cut >= 0:
            return cls(text, "urlglob" if is_url else "glob", text[:cut])
        return cls(text, "url" if is_url else "path", text)

    @property
    def by_path(self) -> bool:
        """Matched against the path and query of a key (on every host), not the whole key."""
        return self.kind in ("path", "glob")

    def matches(self, key: str) -> bool:
        if self.kind == "path":
            return key_path(key).startswith(self.text)
        if self.kind == "url":
            return key.startswith(self.text)
        if self.kind == "glob":
            return fnmatchcase(key_path(key), self.text)
        return fnmatchcase(key, self.text)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Purge:
    """One purge, as every storage applies it.

    - `urls`: primary keys, exactly as the edge builds them.
    - `prefixes`: path prefixes, full-URL prefixes or globs (`PurgePattern`); a malformed
      one raises ValueError here, before anything is purged.
    - `tags`: every key one of whose variants carries the tag.
    - `all`: everything.
    - `soft`: mark the variants `invalidated` instead of dropping them.
    - `at`: when it was made (epoch seconds; None: now, by the storage's clock). The purge
      bus passes the purging node's time.
    - `remember`: a hard purge is remembered (`PURGE_MEMORY_SECONDS`) by a storage that
      refuses late fills; the purge bus's own safety marks are not.
    """

    urls: tuple[str, ...]
    prefixes: tuple[str, ...]
    tags: tuple[str, ...]
    all: bool
    soft: bool
    at: float | None
    remember: bool
    patterns: tuple[PurgePattern, ...]

    def __init__(
        self,
        urls: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        tags: Iterable[str] = (),
        all: bool = False,
        soft: bool = False,
        at: float | None = None,
        remember: bool = True,
    ) -> None:
        texts = tuple(prefixes)
        for name, value in (
            ("urls", tuple(urls)),
            ("prefixes", texts),
            ("tags", tuple(tags)),
            ("all", all),
            ("soft", soft),
            ("at", at),
            ("remember", remember),
            ("patterns", tuple(PurgePattern.parse(p) for p in texts)),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Purge:
        """A purge announced on the purge bus (`message`), as this node applies it."""
        return cls(
            urls=[str(u) for u in message.get("urls", ())],
            prefixes=[str(p) for p in message.get("prefixes", ())],
            tags=[str(t) for t in message.get("tags", ())],
            all=bool(message.get("all", False)),
            soft=bool(message.get("soft", False)),
            at=_number(message.get("at")),
        )

    def message(self, at: float) -> dict[str, Any]:
        """The purge bus's message announcing this purge, made at `at`."""
        return {
            "type": "purge",
            "urls": list(self.urls),
            "prefixes": list(self.prefixes),
            "tags": list(self.tags),
            "all": self.all,
            "soft": self.soft,
            "at": at,
        }

    def selects(self, key: str, tags: Iterable[str] = ()) -> bool:
        """Whether this purge takes `key`, one of whose variants carries `tags`: the rule
        every storage follows (each finds the candidates through its own indexes)."""
        if self.all or key in self.urls or not set(self.tags).isdisjoint(tags):
            return True
        return self.by_pattern(key)

    def by_pattern(self, key: str) -> bool:
        return any(p.matches(key) for p in self.patterns)

    def remembered(self, refuse_late: bool) -> bool:
        """Whether a storage that refuses late fills (`refuse_late`) records this purge."""
        return refuse_late and self.remember and not self.soft

    def stamp(self, clock: Callable[[], float]) -> float:
        """When it was made: `at`, else now."""
        return clock() if self.at is None else self.at


# -- the two kinds of storage ------------------------------------------------------------------


class Storage(Protocol):
    """What every storage of the stack offers.

    `name` is its configuration section (`node_cache`, `redis`): /_edge/health and
    /_edge/stats show it under that name. `local` says which of the two kinds it is."""

    name: str
    local: bool
    max_object_bytes: int

    def stats(self) -> Mapping[str, Any]: ...

    def health(self) -> str:
        """A word for /_edge/health: its place (a path) or its state ("up", "down")."""
        ...


class LocalStorage(Storage, Protocol):
    """A storage on this node, read synchronously on the hit path (no await on a hit)."""

    @property
    def closed(self) -> bool:
        """Closed: it is not written to any more."""
        ...

    def get(self, key: str) -> list[Entry]:
        """The live variants of `key`, most recent response first."""
        ...

    def put(self, entry: Entry, keep_until: float) -> bool:
        """Store one variant until `keep_until` (a fill); False when refused."""
        ...

    def purge(self, purge: Purge) -> int:
        """Apply `purge`; the number of entries (variants) affected."""
        ...

    def clear(self) -> int: ...

    def touch(self, key: str) -> None:
        """A hit on `key` served from the hot copy in front of this storage (its LRU)."""
        ...

    def tick(self) -> None:
        """Housekeeping, about once a second."""
        ...

    def close(self) -> None: ...


class SharedStorage(Storage, Protocol):
    """A storage shared by the nodes, reached through the network: every call is awaited,
    none on a hit this node can answer. Storing runs in the background."""

    def get(self, key: str) -> Awaitable[list[Entry]]: ...

    def put(self, entry: Entry, keep_until: float) -> Awaitable[bool]: ...

    def purge(self, purge: Purge) -> Awaitable[int]:
        """Apply `purge` (raises `StorageUnavailable` when it cannot be reached)."""
        ...

    def tick(self) -> Awaitable[None]:
        """About once a second: a cheap call that tells whether it is reachable."""
        ...

    def close(self) -> Awaitable[None]: ...


# -- capabilities ------------------------------------------------------------------------------


@runtime_checkable
class Coherent(Protocol):
    """A local storage shared by the workers of a node: a purge in any worker moves its
    generation, and each worker's hot copies are checked against it once per generation."""

    def generation_reader(self) -> Callable[[], int]: ...

    def valid(self, entry: Entry) -> bool:
        """Whether this exact stored variant is still here, and valid."""
        ...


class FillLocks(Protocol):
    """A storage's fill lock, for collapsing misses (`edge.upstream.collapse`)."""

    outside_node: bool
    """What a waiter gets comes from another node (a local copy is kept)."""

    def lock_ready(self) -> bool: ...

    async def try_lock_async(self, key: str, ttl: float) -> str | None: ...

    async def unlock_async(self, key: str, token: str) -> None: ...

    async def wait_for_fill(
        self, key: str, timeout: float, newer_than: float | None = None
    ) -> list[Entry]: ...


@runtime_checkable
class Locking(Protocol):
    """A storage shared with other processes that can hold a fill lock."""

    def locks(self) -> FillLocks: ...


@runtime_checkable
class Holding(Protocol):
    """A local storage shared by the node's workers that can mark a key as about to be
    stored: a small miss's leader holds its key from its answer's write to its store
    (`Tiers.hold_store`), and the other workers wait for that store (`Tiers.wait_held`)."""

    def hold(self, key: str) -> bool: ...

    def drop_hold(self, key: str) -> None: ...

    def held_elsewhere(self, key: str) -> bool: ...

    def get(self, key: str) -> list[Entry]: ...


@runtime_checkable
class Announcing(Protocol):
    """A shared storage that carries the purge bus: its purge is announced to every node in
    the same step (`edge.store.purge_bus`)."""

    async def purge_announced(self, purge: Purge) -> tuple[int, Announced]: ...


@runtime_checkable
class Notes(Protocol):
    """A local storage that keeps small notes across restarts when `persistent`."""

    persistent: bool

    def note(self, name: str) -> bytes | None: ...

    def set_note(self, name: str, value: bytes) -> None: ...


@dataclasses.dataclass
class Built:
    """What a backend's factory builds from the configuration: its storage and, for the one
    that carries it, the purge bus."""

    storage: LocalStorage | SharedStorage
    bus: PurgeBus | None = None


@dataclasses.dataclass(frozen=True)
class Place:
    """Where this worker runs, for a backend's factory: the node tier's directory, prepared
    once per node before the workers fork (None when it is off)."""

    node_path: str | None = None


Factory = Callable[["EdgeConfig", Place], Awaitable[Built | None]]
"""A backend's factory: its storage from the configuration, None when the config turns it off."""
