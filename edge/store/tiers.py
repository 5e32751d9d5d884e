"""The storage tiers stacked: a hot copy in each worker, then the storages the configuration
turns on (`edge.store.backends`), local ones first (synchronous: the node tier, shared by the
workers of a node), then shared ones (awaited: Redis, shared by all nodes). Each is a
`LocalStorage` or a `SharedStorage` of `edge.store.storage`; nothing here names one.

- hot (`MemoryTier`, per worker): parsed entries and their bytes, read on every hit without
  a copy. Kept coherent with the `Coherent` local storages (the node tier) through their
  purge generation: when any worker purged something, each hot copy is checked once
  against the first of them before it is served.
- local storages: read in order when the hot copy has nothing; what one holds is copied into
  those above it and into the hot tier.
- shared storages: reached only when this node has nothing.

Reads are synchronous down to the local storages (`get_now`); only shared ones need an
await. Storing goes to hot at once, to the local storages on the next loop turn and to the
shared ones in the background, so storing never delays a response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edge.base import memfile
from edge.base.ledger import DEFAULT_LIMITS, Account
from edge.base.recent import RecentKeys
from edge.cache.entry import Entry
from edge.store.memory import MemoryTier
from edge.store.storage import (
    Announcing,
    Coherent,
    FillLocks,
    Holding,
    LocalStorage,
    Locking,
    Notes,
    Purge,
    SharedStorage,
)

if TYPE_CHECKING:
    from edge.store.purge_bus import Announced, PurgeBus

log = logging.getLogger("edge.store.tiers")


# How long a key seen stored keeps its next misses collapsed (`Tiers.stored_before`).
STORED_BEFORE_TTL = 3600.0
# How often a worker waiting for another's store looks (`Tiers.wait_held`): a hold lasts
# from an answer's write to its store, a fraction of a millisecond.
HOLD_POLL_SECONDS = 0.001


def _no_generation() -> int:
    return 0


def keep_until(entry: Entry) -> float:
    return entry.response_time + entry.meta.get("keep", entry.meta.get("lifetime", 0.0))


class Tiers:
    """The stack. `stack`: the storages `edge.store.backends` built, in any order (local
    ones are put first); `known`: every backend's name, those off included (health and
    stats say "off" for them); `bus`: the purge bus, when a shared storage carries one."""

    def __init__(
        self,
        hot: MemoryTier,
        stack: Iterable[LocalStorage | SharedStorage] = (),
        bus: PurgeBus | None = None,
        known: Iterable[str] = (),
    ) -> None:
        self.hot = hot
        ordered = sorted(stack, key=lambda s: not s.local)
        self.stack: tuple[LocalStorage | SharedStorage, ...] = tuple(ordered)
        self.local: tuple[LocalStorage, ...] = tuple(s for s in ordered if s.local)  # type: ignore[misc]
        self.shared: tuple[SharedStorage, ...] = tuple(s for s in ordered if not s.local)  # type: ignore[misc]
        self.known = tuple(dict.fromkeys([*known, *(s.name for s in ordered)]))
        self.bus = bus
        coherent = [s for s in self.local if isinstance(s, Coherent)]
        # The storage that vouches for hot copies after a purge, and the generation that
        # says one happened (read on every hit: one call).
        self._vouch: Coherent | None = coherent[0] if coherent else None
        self.generation_reader = _generation_reader(coherent)
        self._generation = self.generation_reader()
        self._checked: set[str] = set()  # hot keys checked against the node this generation
        self.version = 0  # moves whenever this worker's view of the tiers changes
        self.hot_hits: set[str] = set()  # keys served from hot copies, for the node's LRU
        # Keys this worker saw stored (by itself, another worker, or another node): later
        # misses on them are expected to be shareable, so they are collapsed. Counted in
        # bytes (each key's length and what an item costs), the least recent dropped first
        # at the bound: the worker's ledger's `stored_keys` once the engine gives it.
        self.stored_before = RecentKeys(
            Account("stored_keys", DEFAULT_LIMITS["stored_keys"]), STORED_BEFORE_TTL
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._holding = tuple(s for s in self.local if isinstance(s, Holding))

    @property
    def memory(self) -> MemoryTier:
        return self.hot

    @property
    def max_object_bytes(self) -> int:
        """The largest object stored: the first local storage's bound, else the hot tier's."""
        tier = self.local[0] if self.local else self.hot
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
        """The variants of `key` this node holds; None when only a shared storage can tell."""
        vouch = self._vouch
        if vouch is not None:
            generation = self.generation_reader()
            if generation != self._generation:
                self._generation = generation
                self._checked.clear()
        entries = self.hot.get(key)
        if entries and vouch is not None and key not in self._checked:
            # Something was purged since this copy was last checked: is it still there?
            if all(vouch.valid(e) for e in entries):
                self._check(key)
            else:
                self.hot.delete(key)
                self.version += 1
                entries = []
        if not entries and self.local:
            entries = self._from_local(key)
            self._read_locally(key, entries)
        if entries:
            return self._trusted(entries)
        return None if self.shared else []

    def _read_locally(self, key: str, entries: list[Entry]) -> None:
        """What a local storage gave for `key`: hot copies, and the key known as stored
        (its next misses are collapsed)."""
        for entry in entries:
            self.hot.put(entry, keep_until(entry))
        if entries:
            self.saw_stored(key)
            self._check(key)  # a key not found is not remembered (a client makes many)
        self.version += 1

    def _from_local(self, key: str) -> list[Entry]:
        """The variants the first local storage holding `key` has, copied into those above."""
        local = self.local
        for i, tier in enumerate(local):
            entries = tier.get(key)
            if entries:
                for above in local[:i]:
                    for entry in entries:
                        above.put(entry, keep_until(entry))
                return entries
        return []

    def stored(self, key: str) -> list[Entry]:
        """What this node's storages hold for `key`, not the hot copy (which another worker
        may have outdated); the hot tier's when no local storage is on."""
        if self.local:
            return self._from_local(key)
        return self.hot.get(key) or []

    def keep_hot(self, entry: Entry, until: float) -> bool:
        """A copy this worker alone keeps (a sliced object assembled whole: edge.engine.slices). It
        stands until `until` or the node's next purge generation, whichever comes first
        (then the node tier, which does not hold it, no longer vouches for it)."""
        if not self.hot.put(entry, until):
            return False
        if self._vouch is not None:
            self._check(entry.key)
        self.version += 1
        return True

    def count_stored_keys(self, account: Account) -> None:
        """Keep the keys seen stored under `account` (the worker's ledger: `stored_keys`,
        bounded by `limits.kept.stored_keys`); what was seen before is forgotten."""
        self.stored_before.clear()
        self.stored_before = RecentKeys(account, STORED_BEFORE_TTL)

    def saw_stored(self, key: str) -> None:
        """`key` was stored: its next misses are expected shareable (`stored_before`)."""
        self.stored_before.add(key)

    def _check(self, key: str) -> None:
        """`key`'s hot copy stands this purge generation. The keys the hot tier let go of
        stay until the generation moves: past a few times what it holds, all are dropped
        (each hot copy is checked against the node again)."""
        checked = self._checked
        if len(checked) > 4 * len(self.hot) + 1024:
            checked.clear()
        checked.add(key)

    def newer(self, key: str, than: Entry) -> list[Entry]:
        """The local storages' variants of `key` if another worker stored a newer response
        than the hot copy `than` (say it revalidated it): they replace the hot copy."""
        if not self.local:
            return []
        entries = [e for e in self._from_local(key) if e.response_time > than.response_time]
        self.version += 1
        for entry in entries:
            self.hot.put(entry, keep_until(entry))
        return self._trusted(entries)

    def refresh_hot(self, entries: list[Entry]) -> None:
        """`entries`, read from the local storages, replace the hot copies of their key."""
        for entry in entries:
            self.hot.put(entry, keep_until(entry))
        self.version += 1

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
        if not entries and self.local:
            entries = self._from_local(key)
        return entries

    async def get(self, key: str) -> list[Entry]:
        entries = self.get_now(key)
        if entries is not None:
            return entries
        entries = await self.get_shared(key)
        for entry in entries:
            self.remember(entry, shared=True)
        return entries

    async def get_shared(self, key: str) -> list[Entry]:
        """What the first shared storage holding `key` has (another node stored it)."""
        for tier in self.shared:
            entries = await tier.get(key)
            if entries:
                return entries
        return []

    # -- writes -------------------------------------------------------------------------

    def remember(self, entry: Entry, shared: bool = False) -> None:
        """An entry another worker or node stored: keep a hot copy (and a local copy of what
        came from a shared storage)."""
        until = keep_until(entry)
        self.version += 1
        self.saw_stored(entry.key)
        self.hot.put(entry, until)
        self._check(entry.key)
        if shared:
            self.put_local(entry, until)

    def store(self, entry: Entry, until: float) -> None:
        """Into this worker's hot copy and the local storages now (a small miss the moment
        after its answer is written, `Fetch._small`: before this worker reads anything else);
        into the shared storages in the background."""
        self.version += 1
        self.saw_stored(entry.key)
        self.hot.put(entry, until)
        self._check(entry.key)
        self.put_local(entry, until)
        for tier in self.shared:
            self.spawn(tier.put(entry, until))

    def store_below(self, entry: Entry, until: float) -> None:
        """Into the storages, not the hot copy (a slice of an object, `edge.engine.slices`):
        the local ones now (the hot tier when none is on), the shared ones in the
        background."""
        if self.local:
            self.put_local(entry, until)
        else:
            self.hot.put(entry, until)
        for tier in self.shared:
            self.spawn(tier.put(entry, until))
        self.version += 1

    def put_local(self, entry: Entry, until: float) -> None:
        """Into the local storages (not the hot copy)."""
        for tier in self.local:
            if not tier.closed:
                tier.put(entry, until)

    def purge_here(self, purge: Purge) -> int:
        """Purge this node: the local storages (every worker sees it before this returns,
        through their generation) and this worker's hot copies. Returns the entries
        affected (the first local storage's count, else the hot tier's)."""
        self.version += 1
        count = self.hot.purge(purge)
        if not self.local:
            return count
        self._checked.clear()
        counts = [tier.purge(purge) for tier in self.local]
        return counts[0]

    async def purge_shared(self, purge: Purge) -> tuple[int, Announced | None] | None:
        """Purge the shared storages; the storage that carries the purge bus announces it
        to every node in the same step. (entries, the announcement), or None when no shared
        storage is on; raises `StorageUnavailable` when one cannot be reached."""
        if not self.shared:
            return None
        count, announced = 0, None
        for tier in self.shared:
            if announced is None and isinstance(tier, Announcing):
                entries, announced = await tier.purge_announced(purge)
            else:
                entries = await tier.purge(purge)
            count += entries
        return count, announced

    def forget_answers(self) -> None:
        """Drop the answers built from this worker's hot copies (`Entry.answers`): they are
        built again from the current configuration on the next hit."""
        for entry in self.hot.entries():
            entry.answers.clear()

    def clear_here(self) -> int:
        self.version += 1
        count = self.hot.clear()
        self._checked.clear()
        counts = [tier.clear() for tier in self.local]
        return counts[0] if counts else count

    # -- notes, locks for collapsing -------------------------------------------------------

    def _notes(self) -> Notes | None:
        for tier in self.local:
            if isinstance(tier, Notes) and tier.persistent:
                return tier
        return None

    def note(self, name: str) -> bytes | None:
        """A note kept across restarts (a local storage on disk), or None."""
        notes = self._notes()
        return notes.note(name) if notes is not None else None

    def set_note(self, name: str, value: bytes) -> None:
        notes = self._notes()
        if notes is not None:
            notes.set_note(name, value)

    def hold_store(self, key: str) -> Callable[[], None] | None:
        """Mark `key` as stored by this worker in a moment (a small miss, stored the moment
        after its answer is written): the node's other workers asked for it meanwhile wait
        for that store (`wait_held`) instead of fetching it again. The release (never
        raises), or None when no local storage holds it for this worker."""
        taken = [tier for tier in self._holding if tier.hold(key)]
        if not taken:
            return None

        def release() -> None:
            for tier in taken:
                tier.drop_hold(key)

        return release

    async def wait_held(self, key: str, timeout: float) -> list[Entry]:
        """What another worker of the node stored for `key` after holding it
        (`hold_store`): once it let go, or now when no one holds it (the hold may have ended
        since the caller's lookup); [] when nothing is stored. What is found is read as by
        `get_now`: a hot copy, and the key known as stored, so its next misses collapse."""
        for tier in self._holding:
            # Another process's lock: looked at, not awaited (no event crosses processes).
            for _ in range(int(timeout / HOLD_POLL_SECONDS)):
                if not tier.held_elsewhere(key):
                    break
                await asyncio.sleep(HOLD_POLL_SECONDS)
            entries = tier.get(key)
            if entries:
                self._read_locally(key, entries)
                return entries
        return []

    def locking(self) -> list[FillLocks]:
        """The fill locks of the storages that have one, narrowest first."""
        return [tier.locks() for tier in self.stack if isinstance(tier, Locking)]

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

    async def close(self) -> None:
        """Close the purge bus, then the storages, shared ones first (after `drain`)."""
        if self.bus is not None:
            await self.bus.close()
        for tier in self.shared:
            await tier.close()
        for local in self.local:
            local.close()

    async def watch(self, every: float = 1.0, each_tick: Callable[[], None] | None = None) -> None:
        """Housekeeping for as long as the worker runs: the hot hits into the local
        storages' LRU (`touch`) and each storage's `tick` (the node tier's access times,
        heartbeat, sync; a cheap call to each shared storage, which only learns that it went
        away, or came back, when it is asked something)."""
        while True:
            await asyncio.sleep(every)
            if each_tick is not None:
                each_tick()  # the engine's kept hits add to hot_hits, read below
            hits, self.hot_hits = self.hot_hits, set()
            for local in self.local:
                try:
                    for key in hits:
                        local.touch(key)  # the local storage's LRU knows of hot hits too
                    local.tick()
                except Exception as exc:  # housekeeping must never end the watch
                    log.warning("%s housekeeping: %r", local.name, exc)
            for tier in self.shared:
                try:
                    await tier.tick()
                except Exception as exc:
                    log.warning("%s watch: unexpected %r", tier.name, exc)

    # -- what the admin endpoints show ------------------------------------------------------

    def health(self) -> dict[str, str]:
        """Each backend's word for /_edge/health, under its name ("off" when it is off)."""
        on = {tier.name: tier.health() for tier in self.stack}
        return {name: on.get(name, "off") for name in self.known}

    def shared_status(self) -> str:
        """The shared storages' state together: "up" when every one is up, else "down" when
        one is down, else "degraded"; "off" when none is on (`edge_redis_up`)."""
        states = [tier.health() for tier in self.shared]
        if not states:
            return "off"
        if all(state == "up" for state in states):
            return "up"
        return "down" if "down" in states else "degraded"

    def backend_stats(self) -> dict[str, dict[str, Any]]:
        """Each backend's counters under its name (`{"status": "off"}` when it is off)."""
        on = {tier.name: dict(tier.stats()) for tier in self.stack}
        return {name: on.get(name, {"status": "off"}) for name in self.known}

    def stats(self) -> dict[str, Any]:
        """What /_edge/stats shows as `memory` (the first local storage's when one is on,
        with the hot tier's under `hot`, else the hot tier's), and `files`: the memfds
        this worker has open for the bodies it keeps (`edge.base.memfile`), each closed with
        its body's last user."""
        if self.local:
            out: dict[str, Any] = dict(self.local[0].stats())
            out["hot"] = self.hot.stats()
        else:
            out = dict(self.hot.stats())
        out["files"] = memfile.open_files()
        return out


def _generation_reader(coherent: Sequence[Coherent]) -> Callable[[], int]:
    """One call answering whether any of `coherent` was purged since it was last called:
    the storage's own reader when there is one (the hit path reads it)."""
    readers = [tier.generation_reader() for tier in coherent]
    if not readers:
        return _no_generation
    if len(readers) == 1:
        return readers[0]
    return lambda: sum(read() for read in readers)
