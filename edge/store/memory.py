"""The per-node memory tier: a byte-bounded LRU of stored responses, synchronous on the hit path.

One slot per primary cache key holds that key's variants (one per `Entry.variant_id`).
The slot's size is the sum of its entries' sizes; the cache evicts least recently used
slots until the total fits `max_bytes`. Every variant carries a "keep until" time
(epoch seconds, computed by the caller: freshness lifetime plus the stale windows);
past it the variant is dropped.

With `files` (`memory.sendfile` in edge.yaml), a body of `memfile.MIN_BYTES` or more is kept
in a memfd (`edge.base.memfile`): the same bytes as a view for every reader, a file HTTP/1.1
can sendfile. It weighs what it did as bytes.

It is a `LocalStorage` (`edge.store.storage`): the hot copy of each worker, in front of the
stack `edge.store.tiers.Tiers` holds. Purges are `Purge` values (their patterns and rule are
`edge.store.storage`'s).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable

from edge.base import memfile
from edge.cache.entry import Entry
from edge.store.storage import PURGE_MEMORY_SECONDS, Purge, PurgePattern

MiB = 1024 * 1024


@dataclasses.dataclass(slots=True)
class _Stored:
    entry: Entry
    keep_until: float
    seq: int


class _Slot:
    """The variants of one primary key. Treated as immutable once inside the cache
    (sizes are recorded at insertion), except for same-size replacements."""

    __slots__ = ("_live", "size", "variants")

    def __init__(self, variants: dict[str, _Stored]) -> None:
        self.variants = variants
        self.size = sum(s.entry.size for s in variants.values())
        self._live: tuple[float, list[Entry]] | None = None

    def live(self) -> tuple[float, list[Entry]]:
        """(the earliest keep-until, the entries most recent response first): what `get`
        returns while that time is ahead, computed once per slot (the hit path)."""
        if self._live is None:
            ordered = sorted(
                self.variants.values(), key=lambda s: (s.entry.response_time, s.seq), reverse=True
            )
            first_out = min((s.keep_until for s in ordered), default=0.0)
            self._live = (first_out, [s.entry for s in ordered])
        return self._live

    def changed(self) -> None:
        self._live = None

    @property
    def keep_until(self) -> float:
        return max((s.keep_until for s in self.variants.values()), default=0.0)

    def tags(self) -> set[str]:
        return {t for s in self.variants.values() for t in s.entry.tags}


class _SlotLru:
    """The slots in least recently used order, sized in bytes: `get` touches the order,
    `peek` does not; a `put` that makes the total exceed `max_bytes` evicts from the least
    recently used end and reports each eviction. An OrderedDict (C) rather than a Python
    LRU class: a hit is one `get` and one `move_to_end`, no Python frame of its own."""

    __slots__ = ("bytes", "max_bytes", "on_evict", "slots")

    def __init__(self, max_bytes: int, on_evict: Callable[[str, _Slot], None]) -> None:
        self.slots: OrderedDict[str, _Slot] = OrderedDict()
        self.max_bytes = max_bytes
        self.bytes = 0
        self.on_evict = on_evict

    def get(self, key: str) -> _Slot | None:
        slot = self.slots.get(key)
        if slot is not None:
            self.slots.move_to_end(key)
        return slot

    def peek(self, key: str) -> _Slot | None:
        return self.slots.get(key)

    def put(self, key: str, slot: _Slot) -> None:
        """Insert as the most recent (the caller removed any old slot of `key`)."""
        slots = self.slots
        while slots and self.bytes + slot.size > self.max_bytes:
            old_key, old = slots.popitem(last=False)
            self.bytes -= old.size
            self.on_evict(old_key, old)
        slots[key] = slot
        self.bytes += slot.size

    def replace(self, key: str, slot: _Slot) -> None:
        """Put a slot no bigger than the one under `key` in its place, order untouched."""
        self.bytes += slot.size - self.slots[key].size
        self.slots[key] = slot  # an existing key keeps its place

    def pop(self, key: str) -> _Slot | None:
        slot = self.slots.pop(key, None)
        if slot is not None:
            self.bytes -= slot.size
        return slot

    def clear(self) -> None:
        self.slots.clear()
        self.bytes = 0


class MemoryTier:
    """The node's memory tier. Synchronous: nothing here awaits.

    - `get(key)`: the live variants of a key, most recent response first; touches the LRU.
    - `put(entry, keep_until)`: store or replace the entry's variant; False when it is too
      big (`fits`) or already past `keep_until`.
    - `delete(key)`, `purge(...)`: drop (or, soft, mark `invalidated`) entries; return how
      many entries (variants) were affected.
    """

    name = "memory"
    local = True  # a LocalStorage (edge.store.storage)
    closed = False

    def __init__(
        self,
        max_bytes: int = 256 * MiB,
        max_object_bytes: int = 16 * MiB,
        clock: Callable[[], float] = time.time,
        max_variants: int = 16,
        refuse_late: bool = False,
        files: bool = False,
    ) -> None:
        self.max_bytes = max_bytes
        self.files = files  # big bodies kept in memfds (the module docstring)
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self.max_variants = max_variants
        self._clock = clock
        self._lru = _SlotLru(max_bytes, self._evicted)
        self._tags: dict[str, set[str]] = {}
        # (slot keep-until, key) pairs; lazily outdated, checked against the slot on pop.
        self._expiry: list[tuple[float, str]] = []
        self._seq = 0
        self._entries = 0  # variants held, kept up to date (stats() must be O(1))
        self.changes = 0
        """Moves with every change to what `get` returns (a store, a removal, an eviction,
        a soft purge): `edge.engine.fresh_hits` keeps a hit while it stands still."""
        self.evictions = 0
        self.expirations = 0
        self.refuse_late = refuse_late
        """Refuse puts of responses requested before a hard purge of them (the edge turns
        it on; see `purge`)."""
        self.refused_late = 0
        # Recent purges (time of the purge): puts of responses requested before them are
        # refused. Forgotten after PURGE_MEMORY_SECONDS.
        self._purged_keys: dict[str, float] = {}
        self._purged_tags: dict[str, float] = {}
        self._purged_patterns: list[tuple[float, PurgePattern]] = []
        self._purged_all = 0.0

    # -- reads --------------------------------------------------------------------------

    def get(self, key: str) -> list[Entry]:
        """Live variants of `key`, most recent response first; [] when none."""
        slot = self._lru.get(key)  # touches the LRU order
        if slot is None:
            return []
        now = self._clock()
        first_out, entries = slot.live()
        if now < first_out:
            return list(entries)
        live = [s for s in slot.variants.values() if s.keep_until > now]
        if len(live) != len(slot.variants):
            self.expirations += len(slot.variants) - len(live)
            if live:
                self._shrink(key, _Slot({s.entry.variant_id: s for s in live}))
            else:
                self._remove(key)
        live.sort(key=lambda s: (s.entry.response_time, s.seq), reverse=True)
        return [s.entry for s in live]

    def first_out(self, key: str) -> float:
        """When the first of `key`'s variants expires (0.0 when none is held)."""
        slot = self._lru.peek(key)
        return slot.live()[0] if slot is not None else 0.0

    def toucher(self, key: str) -> Callable[[], None] | None:
        """A call that touches `key`'s place in the LRU order as `get` does, without a
        Python frame; valid while `changes` stands still (the slot is not removed)."""
        if key not in self._lru.slots:
            return None
        return functools.partial(self._lru.slots.move_to_end, key)

    def entries(self) -> list[Entry]:
        """Every variant held, without touching the LRU order."""
        return [s.entry for _, slot in self._slots() for s in slot.variants.values()]

    def fits(self, size: int) -> bool:
        """Whether an object of `size` bytes may be stored (else it streams through)."""
        return 0 <= size <= self.max_object_bytes

    def __contains__(self, key: str) -> bool:
        return key in self._lru.slots

    def __len__(self) -> int:
        """Number of primary keys held."""
        return len(self._lru.slots)

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self._lru.slots),
            "entries": self._entries,
            "bytes": self._lru.bytes,
            "max_bytes": self.max_bytes,
            "max_object_bytes": self.max_object_bytes,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "tags": len(self._tags),
        }

    # -- writes -------------------------------------------------------------------------

    def put(self, entry: Entry, keep_until: float) -> bool:
        """Store `entry`, replacing the same variant of the same key. False when refused."""
        if not self.fits(entry.size):
            return False
        now = self._clock()
        if keep_until <= now:
            return False
        if self._purged_since(entry):
            self.refused_late += 1
            return False
        self.expire(now)
        if self.files and memfile.worth_keeping(entry.body):
            # Copied once into a memfd; the caller's bytes go with the caller.
            entry = dataclasses.replace(entry, body=memfile.kept(entry.body))
        key = entry.key
        old = self._lru.peek(key)
        variants: dict[str, _Stored] = {}
        if old is not None:
            variants = {v: s for v, s in old.variants.items() if s.keep_until > now}
            self.expirations += len(old.variants) - len(variants)
            variants.pop(entry.variant_id, None)
            while len(variants) >= self.max_variants:  # drop the oldest stored variant
                oldest = min(variants, key=lambda v: variants[v].seq)
                del variants[oldest]
                self.evictions += 1
            self._remove(key)  # re-inserted below as the most recent
        self._seq += 1
        self.changes += 1
        variants[entry.variant_id] = _Stored(entry, keep_until, self._seq)
        slot = _Slot(variants)
        if slot.size > self.max_bytes:
            # The new variant fits alone but not with its siblings: keep only it.
            slot = _Slot({entry.variant_id: variants[entry.variant_id]})
        self._lru.put(key, slot)  # may evict least recently used keys
        self._entries += len(slot.variants)
        self._index(key, slot)
        heapq.heappush(self._expiry, (slot.keep_until, key))
        if len(self._expiry) > 2 * len(self._lru.slots) + 64:
            self._expiry = [(s.keep_until, k) for k, s in self._slots()]
            heapq.heapify(self._expiry)
        return True

    def delete(self, key: str) -> int:
        """Drop every variant of `key`; returns how many were dropped."""
        slot = self._remove(key)
        return len(slot.variants) if slot else 0

    def clear(self) -> int:
        """Drop everything; returns how many entries were dropped."""
        self.changes += 1
        n = self._entries
        self._entries = 0
        self._lru.clear()
        self._tags.clear()
        self._expiry.clear()
        return n

    def purge(self, purge: Purge) -> int:
        """Drop (or with `purge.soft`, mark `invalidated`) every variant of the keys `purge`
        selects; returns the number of entries affected.

        With `refuse_late`, a hard purge is remembered for `PURGE_MEMORY_SECONDS` as made at
        `purge.at` (default now; the bus passes the purging node's time): a later `put` of a
        matching response requested before then is refused, so a fetch in flight cannot undo
        it (not with `purge.remember` False: the purge bus's own safety marks).
        """
        urls, patterns, tags, all, soft = (
            purge.urls,
            purge.patterns,
            purge.tags,
            purge.all,
            purge.soft,
        )
        if purge.remembered(self.refuse_late):
            self._remember(urls, patterns, tags, all, purge.stamp(self._clock))
        if all:
            keys = set(self._lru.slots)
        else:
            keys = {u for u in urls if u in self._lru.slots}
            for tag in tags:
                keys |= self._tags.get(tag, set())
            if patterns:
                keys |= {k for k in self._lru.slots if purge.by_pattern(k)}
        if all and not soft:
            return self.clear()
        count = 0
        for key in keys:
            if soft:
                count += self._invalidate(key)
            else:
                count += self.delete(key)
        return count

    def touch(self, key: str) -> None:
        """Nothing to do: `get` refreshes the LRU itself."""

    def tick(self) -> None:
        """Nothing to do: `put` expires."""

    def health(self) -> str:
        return "on"

    def close(self) -> None:
        """Nothing to release: it lives in this process's memory."""

    def expire(self, now: float | None = None) -> int:
        """Drop keys whose every variant is past its keep-until; returns entries dropped.

        Called from `put`; a variant that expires while its siblings live is dropped
        on the next `get`/`put` of its key.
        """
        if now is None:
            now = self._clock()
        heap = self._expiry
        dropped = 0
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            slot = self._lru.peek(key)
            if slot is not None and slot.keep_until <= now:
                self._remove(key)
                dropped += len(slot.variants)
        self.expirations += dropped
        return dropped

    # -- internals ----------------------------------------------------------------------

    def _remember(
        self,
        keys: tuple[str, ...],
        patterns: tuple[PurgePattern, ...],
        tags: tuple[str, ...],
        all: bool,
        at: float,
    ) -> None:
        horizon = self._clock() - PURGE_MEMORY_SECONDS
        if all:
            self._purged_all = max(self._purged_all, at)
        for key in keys:
            self._purged_keys[key] = max(self._purged_keys.get(key, 0.0), at)
        for tag in tags:
            self._purged_tags[tag] = max(self._purged_tags.get(tag, 0.0), at)
        self._purged_patterns += [(at, p) for p in patterns]
        # forget what is old (cheap: only when something is remembered)
        if len(self._purged_keys) > 1024:
            self._purged_keys = {k: t for k, t in self._purged_keys.items() if t > horizon}
        if len(self._purged_tags) > 1024:
            self._purged_tags = {k: t for k, t in self._purged_tags.items() if t > horizon}
        self._purged_patterns = [(t, p) for t, p in self._purged_patterns if t > horizon][-256:]

    def _purged_since(self, entry: Entry) -> bool:
        """Whether a purge matching `entry` happened after its request was sent."""
        sent = entry.request_time
        if self._purged_all >= sent:
            return True
        if self._purged_keys.get(entry.key, 0.0) >= sent:
            return True
        if any(self._purged_tags.get(t, 0.0) >= sent for t in entry.tags):
            return True
        return any(t >= sent and p.matches(entry.key) for t, p in self._purged_patterns)

    def _invalidate(self, key: str) -> int:
        slot = self._lru.peek(key)
        if slot is None:
            return 0
        for vid, stored in list(slot.variants.items()):
            if not stored.entry.invalidated:
                # A copy: entries already handed out keep their own state. Same size.
                entry = dataclasses.replace(stored.entry, invalidated=True)
                slot.variants[vid] = _Stored(entry, stored.keep_until, stored.seq)
                slot.changed()
                self.changes += 1
        return len(slot.variants)

    def _remove(self, key: str) -> _Slot | None:
        slot = self._lru.pop(key)
        if slot is None:
            return None
        self.changes += 1
        self._entries -= len(slot.variants)
        self._unindex(key, slot)
        return slot

    def _shrink(self, key: str, slot: _Slot) -> None:
        """Replace a slot by a smaller one without touching the LRU order or evicting."""
        old = self._lru.peek(key)
        assert old is not None and slot.size <= old.size
        self.changes += 1
        self._unindex(key, old)
        self._lru.replace(key, slot)
        self._entries += len(slot.variants) - len(old.variants)
        self._index(key, slot)

    def _evicted(self, key: str, slot: _Slot) -> None:
        self.changes += 1
        self.evictions += len(slot.variants)
        self._entries -= len(slot.variants)
        self._unindex(key, slot)

    def _index(self, key: str, slot: _Slot) -> None:
        for tag in slot.tags():
            self._tags.setdefault(tag, set()).add(key)

    def _unindex(self, key: str, slot: _Slot) -> None:
        for tag in slot.tags():
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def _slots(self) -> list[tuple[str, _Slot]]:
        """All (key, slot) pairs, least recently used first, without touching the order."""
        return list(self._lru.slots.items())

    def _tag_index(self) -> dict[str, set[str]]:
        """The tag -> keys index (for tests and diagnostics)."""
        return {t: set(k) for t, k in self._tags.items()}
