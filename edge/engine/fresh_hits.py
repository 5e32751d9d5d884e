"""The fresh hits a worker answered, kept so that the next hit on the same request-target
skips the lookup.

A kept hit is the outcome of the whole lookup (`Engine.fresh_hit`'s general way: the route,
the tiers, the variant, the freshness rule), kept under what it was decided on: the target
alone when the stored object is one identity with nothing to negotiate (no Vary, no coded
copies), so that the same entry answers every request for it; the target and the request's
Accept-Encoding (or its absence) when the object has coded copies (`edge.engine.compress`). It is
used only while nothing it was decided on can have changed:

- the clock is before its `until`: the end of the entry's freshness (`policy.fresh_until`),
  the hot copy's expiry and the purge bus's trust bound, whichever comes first
  (`Tiers.vouched_until`);
- this worker's hot tier is as it was (`MemoryTier.changes`: any store, removal, purge,
  eviction or expiry moves it);
- no worker of the node purged anything (the node tier's purge generation).

Otherwise the general way decides again, and keeps its new outcome. No rule is decided
here: this module only remembers a decision and the conditions under which it stands.

What the kept hits hold is counted in the worker's ledger (`edge.base.ledger`, kind "hits"): each
kept hit its target and Accept-Encoding class, each stamped answer its head (its body is the
entry's: only answers the entry keeps are stamped here). Past the bound, every kept hit is
dropped (each is rebuilt by its next hit), as past `MAX_KEPT`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.base.ledger import DEFAULT_LIMITS, ITEM_OVERHEAD, Account
from edge.cache import policy
from edge.cache.entry import Entry
from edge.http.answer import Answer, held_bytes

if TYPE_CHECKING:
    from edge.store.tiers import Tiers

KeptKey = str | tuple[str, bytes | None]
"""A target, or a target and the class of Accept-Encoding (`compress.Choices.accept_class`;
None: no such field) a variant of an object with coded copies was chosen for."""

MAX_KEPT = 16384
"""Kept hits at most; past it the whole set is dropped (each is rebuilt by its next hit)."""
MAX_STAMPED = 64
"""Stamped answers per kept hit and age second at most (as `Entry.answers`)."""
KEPT_HIT_BYTES = 2 * ITEM_OVERHEAD
"""A kept hit's own cost beside its key: the object, its slot in the dict, its toucher."""


class KeptHit:
    __slots__ = (
        "age_offset",
        "age_second",
        "changes",
        "cost",
        "entry",
        "generation",
        "hits",
        "sent",
        "stamped",
        "stamped_cost",
        "target",
        "touch",
        "until",
    )

    def __init__(
        self,
        target: str,
        entry: Entry,
        until: float,
        changes: int,
        generation: int,
        touch: Callable[[], None],
        age_offset: float,
    ) -> None:
        self.target = target
        self.entry = entry
        self.until = until
        self.changes = changes
        self.generation = generation
        self.touch = touch  # the hot tier's LRU order, as its own get would touch it
        self.age_offset = age_offset  # policy.current_age(entry, now) == now + age_offset
        self.age_second = -1
        self.hits = 0  # answered since the last `FreshHits.collect`, and their body bytes
        self.sent = 0
        # The answers already stamped with Age and Cache-Status during `age_second`, by
        # the request's conditional and Range fields (`Request.special`): each protocol's
        # bytes for them are made once (`Answer.wire`).
        self.stamped: dict[tuple[tuple[bytes, bytes], ...], Answer] = {}
        self.cost = 0  # bytes counted in the ledger for the kept hit, and for `stamped`
        self.stamped_cost = 0


class FreshHits:
    """The kept hits of one worker. Their counts are the engine's: a kept hit adds to its own
    `hits` and `sent`, which `collect` hands to `on_counts` (about once a second, before
    any counter is read, and before a kept hit is dropped)."""

    def __init__(
        self,
        tiers: Tiers,
        on_counts: Callable[[str, str, int, int], None],
        account: Account | None = None,
    ) -> None:
        self.tiers = tiers
        self.on_counts = on_counts  # (target, key, hits, body bytes)
        self.hot = tiers.hot
        self.generation = tiers.generation_reader
        self.kept: dict[KeptKey, KeptHit] = {}
        self.account = account if account is not None else Account("hits", DEFAULT_LIMITS["hits"])

    def get(self, key: KeptKey, now: float) -> KeptHit | None:
        """The hit kept under `key`, if it still stands; its `stamped` answers are those
        of this second of the entry's age."""
        kept = self.kept.get(key)
        if (
            kept is None
            or now >= kept.until
            or kept.changes != self.hot.changes
            or kept.generation != self.generation()
        ):
            return None
        kept.touch()
        second = int(now + kept.age_offset)
        if second != kept.age_second:
            kept.age_second = second
            if kept.stamped:
                kept.stamped.clear()
                self.account.give(kept.stamped_cost)
                kept.stamped_cost = 0
        return kept

    def keep_stamped(
        self, kept: KeptHit, special: tuple[tuple[bytes, bytes], ...], stamped: Answer
    ) -> None:
        """`stamped` answers the next requests with these fields during this second of the
        age, if it fits. Its body must be one the entry keeps (`Entry.answers`)."""
        if len(kept.stamped) >= MAX_STAMPED:
            return
        size = held_bytes(stamped) + sum(len(k) + len(v) for k, v in special) + ITEM_OVERHEAD
        if self.account.take(size):
            kept.stamped[special] = stamped
            kept.stamped_cost += size

    def keep(self, key: KeptKey, entry: Entry, fresh_until: float, now: float) -> None:
        """`entry`, just found fresh by the general way for what `key` names, answers the
        next hits on it while it stands (fresh until `fresh_until`, as
        `policy.fresh_until` says)."""
        until = min(fresh_until, self.tiers.vouched_until(entry.key, now))
        if until <= now:
            return
        touch = self.hot.toucher(entry.key)
        if touch is None:
            return  # not a hot copy (the tiers had it from elsewhere this turn)
        kept = self.kept
        old = kept.pop(key, None)
        if old is not None:
            if old.hits:
                self.on_counts(old.target, old.entry.key, old.hits, old.sent)
            self.account.give(old.cost + old.stamped_cost)
        if isinstance(key, str):
            target, cost = key, len(key) + KEPT_HIT_BYTES
        else:
            target, coding = key
            cost = len(target) + len(coding or b"") + KEPT_HIT_BYTES
        if len(kept) >= MAX_KEPT or not self.account.fits(cost):
            self.clear()
        if not self.account.take(cost):
            return  # larger than the whole bound
        hit = kept[key] = KeptHit(
            target,
            entry,
            until,
            self.hot.changes,
            self.generation(),
            touch,
            policy.current_age(entry, now) - now,
        )
        hit.cost = cost

    def collect(self) -> None:
        """Hand every kept hit's counts since the last collect to `on_counts`, and drop the
        kept hits that no longer stand: none keeps an entry the hot tier let go of for
        longer than the time between two collects."""
        on_counts = self.on_counts
        changes, generation, now = self.hot.changes, self.generation(), time.time()
        gone = []
        for key, kept in self.kept.items():
            if kept.hits:
                on_counts(kept.target, kept.entry.key, kept.hits, kept.sent)
                kept.hits = kept.sent = 0
            if kept.changes != changes or kept.generation != generation or kept.until <= now:
                gone.append(key)
        give = self.account.give
        for key in gone:
            kept = self.kept.pop(key)
            give(kept.cost + kept.stamped_cost)

    def clear(self) -> None:
        """Forget every kept hit (their counts collected first)."""
        self.collect()
        self.kept.clear()
        self.account.reset()
