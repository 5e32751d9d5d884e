"""Images at the edge: AVIF and WebP by Accept, sized to the screen that asks (the I/O around
the pure rules of `edge.cache.images`; the pixels are `edge.engine.convert`'s).

A converted image is one more variant of its object: an `Entry` under the same key whose
`vary` ends with `~image` = its class (`avif-1280`), made once on first demand and then
stored in every tier like any entry, purged with its URL, and delivered by the engine's hit
path like any entry (its answer is built once per entry; only Age and Cache-Status, which
names the class, are written per request).

- `pick` (the engine's lookup, `Engine.decide`): the stored variant this request's class
  names, when the original it was made from is fresh; else the original, and the class is
  asked for (`demand`): the first request gets the original while the variant is made.
- `demand`: one conversion per variant per worker (the task in flight), per node (the node
  tier's lock) and across nodes (the Redis lock), as a fill is collapsed; a worker that
  finds the lock taken serves the original and looks for the variant in the node's storage
  (at most every `LOOK_EVERY` seconds) until it is there.
- Conversions run in a pool of `images.workers` processes per edge worker
  (`ProcessPoolExecutor`), never on the event loop; each process's address space is bounded
  (`images.worker_memory`, RLIMIT_AS) and each conversion's time (`images.time_limit`: past
  it the process is ended and the pool made again). An image over `images.max_pixels`, an
  animated or an unreadable one (truncated) is refused: the original is served, and this
  worker does not try that original again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from edge.base.ledger import DEFAULT_LIMITS, ITEM_OVERHEAD, MAX_KEPT_VALUE, Account
from edge.cache import images, policy
from edge.cache.entry import Entry
from edge.cache.flow import Lookup, Reject, Route
from edge.cache.keys import select_variant
from edge.config.images import ImageRule, ImageSettings
from edge.engine import convert
from edge.http.request import Request
from edge.store.tiers import Tiers

log = logging.getLogger("edge.engine.images")

LOOK_EVERY = 0.25  # seconds between looks for a variant another worker or node is making
MAX_MAKING = 4096  # conversions asked for and not done yet, per worker (more: "busy")
GRACE = 5.0  # seconds past the time limit the engine waits before it gives a pool up
MARK = "img"  # in an original's meta: its Vary names Accept and the hints (the edge's own)
# The request fields an image's choice reads, as HTTP/1.1 and h2 hand them over (`hit_key`).
CHOICE_FIELDS = frozenset(
    {b"accept", b"sec-ch-width", b"sec-ch-viewport-width", b"sec-ch-dpr", b"width"}
    | {b"viewport-width", b"dpr"}
)
# Seconds without a conversion after which the pool's processes end (about 45 MB each with
# its resource tracker, held for nothing while every variant asked for is made).
POOL_IDLE = 60.0


@dataclass(slots=True)
class Pick:
    """What `pick` found. `variant`: the stored variant to deliver (None: the original);
    `originals`: the entries that are not variants (what the lookup goes on with);
    `detail`: what Cache-Status says of the original when a variant was asked for."""

    originals: list[Entry]
    variant: Entry | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Source:
    """What the edge learnt of an original: its format and displayed size (from its
    header), or why it is not converted."""

    fmt: str
    width: int
    height: int
    refused: str = ""


class ImageMaker:
    """Negotiation on lookup, conversion on demand, counters for /_edge/metrics."""

    def __init__(
        self, settings: ImageSettings, tiers: Tiers, account: Account | None = None
    ) -> None:
        self.settings = settings
        self.tiers = tiers
        # What the dicts below keep is counted in bytes (ledger "images"); past the bound,
        # all but the conversions in flight is forgotten (and found again when needed).
        self.account = (
            account if account is not None else Account("images", DEFAULT_LIMITS["images"])
        )
        self.pool: ProcessPoolExecutor | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.sources: dict[tuple[str, float], Source] = {}
        self.latest: dict[str, tuple[float, Source]] = {}  # key -> its last original's
        # (key, original's response_time, class) -> why that variant is not made
        self.refused: dict[tuple[str, float, str], str] = {}
        self.making: dict[tuple[str, float, str], float] = {}  # slot -> since (monotonic)
        # slot -> [since, last look] (monotonic) of a variant another worker or node makes
        self.elsewhere: dict[tuple[str, float, str], list[float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Request targets whose entry an image's choice was kept for (the kept hits, `hit_key`).
        self.targets: set[str] = set()
        # Counters (summed over the node's workers by edge.ops.nodeview).
        self.conversions: Counter[str] = Counter()  # "<format> <outcome>"
        self.seconds = 0.0  # CPU seconds of the conversion processes
        self.bytes_saved = 0  # original bytes minus variant bytes, per variant stored

    @property
    def enabled(self) -> bool:
        return self.settings.enabled and bool(self.settings.rules)

    def reconfigure(self, settings: ImageSettings) -> None:
        """New `images:` settings (a reload): rules and limits apply to the next requests;
        the pool is made again for a new size or memory bound."""
        old = self.settings
        self.settings = settings
        if (old.workers, old.worker_memory) != (settings.workers, settings.worker_memory):
            self._drop_pool()

    # -- requests ------------------------------------------------------------------------

    def rule_for(self, target: str) -> ImageRule | None:
        if not self.enabled:
            return None
        return self.settings.rule_for(target.partition("?")[0])

    def route(self, route: Route) -> Route:
        """`?w=` out of the key and of what the origin is asked (edge.cache.images)."""
        if type(route) is not Lookup or "?" not in route.key:
            return route
        query = route.target.partition("?")[2]
        if route.key == route.target and images.WIDTH_PARAM not in query:
            return route  # no parameter of that name: nothing to check or take out
        if self.rule_for(route.target) is None:
            return route
        try:
            images.width_param(query)
        except images.BadWidth as exc:
            return Reject(400, str(exc))
        target = images.strip_width(route.target)
        key = target if route.key == route.target else images.strip_width(route.key)
        if key == route.key and target == route.target:
            return route
        return Lookup(key, route.rule, target)

    def involved(self, target: str, entries: list[Entry]) -> bool:
        """The hit's entries are an image (or its variants) under a rule: the engine's
        general lookup chooses among them (`pick`), not the kept hits of one entry."""
        first = entries[0]
        if images.is_variant(first.vary) or (
            len(entries) > 1 and any(images.is_variant(e.vary) for e in entries)
        ):
            return True
        return self.rule_for(target) is not None and images.source_format(first.headers) is not None

    def hit_key(
        self, target: str, fields: Request | Sequence[tuple[bytes, bytes]]
    ) -> tuple[str, bytes] | None:
        """The kept hits' key of an image request (`edge.engine.fresh_hits`): its target and
        the values of the fields its choice reads, as sent (the same values choose the same
        entry for as long as the stored entries do not change, which the kept hits watch).
        None when a value is longer than MAX_KEPT_VALUE: such a request is never kept."""
        raw = fields.raw_headers if isinstance(fields, Request) else fields
        values = [b"\x00image"]
        for name, value in raw:
            lname = name.lower()
            if lname in CHOICE_FIELDS:
                if len(value) > MAX_KEPT_VALUE:
                    return None
                values.append(lname + b"=" + value)
        return target, b"\n".join(values)

    def kept_key(self, req: Request) -> tuple[str, bytes] | None:
        """`hit_key` of a request whose answer is to be kept: its target is looked for."""
        key = self.hit_key(req.target, req)
        if key is not None and req.target not in self.targets:
            self._remember(req.target)
            self.targets.add(req.target)
        return key

    def _remember(self, key: str) -> None:
        """Count one more item kept under `key`; past the bound, forget all but the
        conversions in flight first."""
        size = len(key) + ITEM_OVERHEAD
        if self.account.take(size):
            return
        self.sources.clear()
        self.latest.clear()
        self.refused.clear()
        self.elsewhere.clear()
        self.targets.clear()
        self.account.reset()
        for slot in self.making:
            self.account.take(len(slot[0]) + ITEM_OVERHEAD)
        self.account.take(size)

    def _forget(self, key: str) -> None:
        self.account.give(len(key) + ITEM_OVERHEAD)

    def pick(self, req: Request, route: Lookup, entries: list[Entry]) -> Pick | Reject | None:
        """The entry this request gets among an image's original and variants (None: not an
        image under a rule: the lookup goes on as for any object)."""
        rule = self.rule_for(req.target)
        if rule is None or req.method not in ("GET", "HEAD"):
            return None
        originals = [e for e in entries if not images.is_variant(e.vary)]
        try:
            query = req.target.partition("?")[2]
            wanted = images.width_param(query) if query else None
        except images.BadWidth as exc:
            return Reject(400, str(exc))
        if wanted is None and rule.hints:
            wanted = images.hinted_width(req.headers)
        original = originals[0] if len(originals) == 1 and not originals[0].vary else None
        if original is None and originals:
            original = select_variant(originals, req.headers)
        if original is None:
            return self._without_original(req, route, entries, rule, wanted)
        if original.status != 200 or (
            MARK not in original.meta and images.varies_on_accept(original.headers)
        ):
            return None  # the origin negotiates by Accept itself
        source = self.source(original)
        if source is None:
            return None
        self._say_vary(original, rule)
        if source.refused:
            return Pick(originals, None, f"not-converted-{source.refused}")
        choice = images.choose(
            req.headers.get("Accept"), wanted, rule.formats, rule.widths, source.fmt, source.width
        )
        if not choice.converted:
            return Pick(originals)
        refused = self.refused.get((original.key, original.response_time, choice.name))
        if refused:
            return Pick(originals, None, f"not-converted-{refused}")
        now = time.time()
        if policy.fresh_until(original) <= now or original.invalidated:
            return Pick(originals)  # revalidated as the original, with its own validators
        variant = self._variant(entries, original, choice.name)
        if variant is None:
            variant = self._look_below(original, choice.name)
        if variant is not None:
            return Pick(originals, variant)
        refused = self.demand(original, choice, rule, source)
        if refused:
            return Pick(originals, None, f"not-converted-{refused}")
        return Pick(originals, None, f"converting-{choice.name}")

    def _without_original(
        self,
        req: Request,
        route: Lookup,
        entries: list[Entry],
        rule: ImageRule,
        wanted: int | None,
    ) -> Pick:
        """Variants, and no original here (a sliced original not assembled in this worker):
        a variant of the original this worker last saw, if fresh; else the lookup goes on
        without the variants (the slices, or a fill)."""
        latest = self.latest.get(route.key)
        if latest is None or latest[1].refused:
            return Pick([])
        made_from, source = latest
        accept = req.headers.get("Accept")
        choice = images.choose(accept, wanted, rule.formats, rule.widths, source.fmt, source.width)
        if choice.converted:
            now = time.time()
            for e in entries:
                if (
                    e.vary[-1:] == ((images.IMAGE_FIELD, choice.name),)
                    and e.meta.get("of") == made_from
                    and policy.fresh_for_any_request(e, now)
                ):
                    return Pick([], e)
        return Pick([])

    def source(self, original: Entry) -> Source | None:
        """The original's format and size, read from its header once per worker."""
        slot = (original.key, original.response_time)
        source = self.sources.get(slot)
        if source is not None:
            return source
        fmt = images.source_format(original.headers)
        if fmt is None:
            return None
        probed = convert.probe(original.body)
        if probed is None:
            source = Source(fmt, 0, 0, "unreadable")
        else:
            fmt, width, height = probed
            fmt = "jpeg" if fmt == "mpo" else fmt  # a camera's JPEG with a preview image
            if width * height > self.settings.max_pixels:
                source = Source(fmt, width, height, "too-many-pixels")
                self.conversions[f"{fmt} too-many-pixels"] += 1
            else:
                source = Source(fmt, width, height)
        self._remember(original.key)  # the source and the latest original, together
        self.sources[slot] = source
        self.latest[original.key] = (original.response_time, source)
        return source

    def _say_vary(self, original: Entry, rule: ImageRule) -> None:
        """The original's answers name what they were chosen by (RFC 9110 section 12.5.5):
        set on the stored fields when it was stored (`stored`), here on a copy that was not
        (a sliced object assembled in this worker)."""
        if MARK in original.meta:
            return
        names = images.vary_names(rule.hints)
        original.headers = tuple(images.with_vary(original.headers, names))
        original.meta[MARK] = 1.0
        original.answers.clear()

    @staticmethod
    def _variant(entries: list[Entry], original: Entry, cls: str) -> Entry | None:
        wanted = (*original.vary, (images.IMAGE_FIELD, cls))
        for e in entries:
            if e.vary == wanted and e.meta.get("of") == original.response_time:
                return e
        return None

    def _look_below(self, original: Entry, cls: str) -> Entry | None:
        """The variant another worker stored in the node, while it is being made there (at
        most every LOOK_EVERY seconds): kept hot from then on."""
        slot = (original.key, original.response_time, cls)
        times = self.elsewhere.get(slot)
        now = time.monotonic()
        if times is None or now - times[1] < LOOK_EVERY:
            return None
        if now - times[0] > self.settings.time_limit + GRACE:
            del self.elsewhere[slot]  # not made there (refused, or that worker went away)
            self._forget(original.key)
            return None
        times[1] = now
        stored = self.tiers.stored(original.key)
        variant = self._variant(stored, original, cls)
        if variant is not None:
            self.tiers.refresh_hot([e for e in stored if images.is_variant(e.vary)])
            del self.elsewhere[slot]
            self._forget(original.key)
        return variant

    # -- conversion ------------------------------------------------------------------------

    def demand(
        self, original: Entry, choice: images.Choice, rule: ImageRule, source: Source
    ) -> str:
        """Make `choice` of `original` in the background, once (see the module's doc).
        Returns why it is not made ("" when it is on its way)."""
        slot = (original.key, original.response_time, choice.name)
        if slot in self.making or slot in self.elsewhere:
            return ""
        if len(self.making) >= MAX_MAKING:
            return "busy"
        self._remember(original.key)
        self.making[slot] = time.monotonic()
        quality = rule.quality_of("jpeg" if choice.fmt == "png" else choice.fmt)
        names = images.vary_names(rule.hints)
        task = asyncio.get_running_loop().create_task(
            self._make(original, choice, quality, names, slot)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ""

    async def _make(
        self,
        original: Entry,
        choice: images.Choice,
        quality: int,
        names: tuple[str, ...],
        slot: tuple[str, float, str],
    ) -> None:
        lock_key = f"{original.key}#image/{choice.name}"
        ttl = self.settings.time_limit + GRACE
        held: list[tuple[Any, str]] = []
        try:
            for tier in self.tiers.locking():
                if not tier.lock_ready():
                    continue
                token = await tier.try_lock_async(lock_key, ttl)
                if token is None:
                    # Another worker or node makes it: look for it in the node's storage.
                    self.conversions[f"{choice.fmt} elsewhere"] += 1
                    self._remember(original.key)
                    self.elsewhere[slot] = [time.monotonic(), 0.0]
                    return
                held.append((tier, token))
            outcome = await self._convert(original, choice, quality, names)
            self.conversions[f"{choice.fmt} {outcome}"] += 1
        except Exception as exc:  # a lock tier's error must not take the worker down
            log.warning("converting %s to %s failed: %r", original.key, choice.name, exc)
            self.conversions[f"{choice.fmt} error"] += 1
        finally:
            if self.making.pop(slot, None) is not None:
                self._forget(original.key)
            for tier, token in reversed(held):
                with contextlib.suppress(Exception):
                    await tier.unlock_async(lock_key, token)
            if self._idle is not None:
                self._idle.cancel()
            self._idle = asyncio.get_running_loop().call_later(POOL_IDLE, self._end_idle_pool)

    def _end_idle_pool(self) -> None:
        self._idle = None
        if not self.making:
            self._drop_pool()

    async def _convert(
        self, original: Entry, choice: images.Choice, quality: int, names: tuple[str, ...]
    ) -> str:
        """One conversion in the pool, stored as a variant; its outcome (a metric label)."""
        settings = self.settings
        pool = self._pool()
        started = time.monotonic()
        future = pool.submit(
            convert.convert,
            bytes(original.body),  # pickled to the pool: a view of a memfd is not
            choice.fmt,
            choice.width,
            quality,
            settings.max_pixels,
            settings.time_limit,
        )
        try:
            body, _, _, cpu = await asyncio.wait_for(
                asyncio.wrap_future(future), settings.time_limit + GRACE
            )
        except convert.Refused as exc:
            self._refuse(original, exc.reason)  # the image itself: every variant
            return exc.reason
        except MemoryError:
            self._refuse(original, "memory", choice.name)
            return "memory"
        except (BrokenProcessPool, TimeoutError):
            # The process was ended (its time limit's SIGALRM, or killed): a new pool.
            self._drop_pool(pool)
            late = time.monotonic() - started >= settings.time_limit
            reason = "time-limit" if late else "crashed"
            self._refuse(original, reason, choice.name)
            return reason
        self.seconds += cpu
        if len(body) >= len(original.body):
            self._refuse(original, "not-smaller", choice.name)
            return "not-smaller"
        variant = self.variant_entry(original, choice, body, names)
        self.tiers.store(variant, original.response_time + original.meta.get("keep", 0.0))
        self.bytes_saved += max(0, len(original.body) - len(body))
        return "converted"

    @staticmethod
    def variant_entry(
        original: Entry, choice: images.Choice, body: bytes, names: tuple[str, ...]
    ) -> Entry:
        """The `choice` variant of `original`, sharing its times, freshness and tags."""
        meta = dict(original.meta)
        meta["of"] = original.response_time
        return replace(
            original,
            headers=tuple(images.variant_fields(original.headers, choice, names)),
            body=body,
            vary=(*original.vary, (images.IMAGE_FIELD, choice.name)),
            meta=meta,
        )

    def _refuse(self, original: Entry, reason: str, cls: str = "") -> None:
        """Not tried again in this worker: the variant `cls`, or (no class: the image
        itself is the reason) every variant of `original`."""
        if cls:
            self._remember(original.key)
            self.refused[(original.key, original.response_time, cls)] = reason
            return
        slot = (original.key, original.response_time)
        source = self.sources.get(slot)
        if source is not None:
            self.sources[slot] = refused = replace(source, refused=reason)
            self.latest[original.key] = (original.response_time, refused)

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=self.settings.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=convert.limit_memory,
                initargs=(self.settings.worker_memory,),
            )
        return self.pool

    def _drop_pool(self, pool: ProcessPoolExecutor | None = None) -> None:
        if pool is not None and pool is not self.pool:
            return
        old, self.pool = self.pool, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    # -- stores, operations ----------------------------------------------------------------

    def stored(self, entry: Entry, until: float) -> Entry:
        """An entry as it is to be stored: an image under a rule says `Vary: Accept` (and the
        hints); an HTML page asks for the hints (`Accept-CH`, RFC 8942 section 3.1) when a
        rule sizes images by them."""
        if not self.enabled or entry.status != 200 or images.is_variant(entry.vary):
            return entry
        path = entry.key.partition("?")[0]
        rule = self.settings.rule_for(path)
        if rule is None:
            return entry
        if images.source_format(entry.headers) is not None:
            if images.varies_on_accept(entry.headers):
                return entry
            fields = images.with_vary(entry.headers, images.vary_names(rule.hints))
            return replace(entry, headers=tuple(fields), meta={**entry.meta, MARK: 1.0})
        if self.asks_hints(entry.headers):
            return replace(entry, headers=(*entry.headers, ("Accept-CH", images.ACCEPT_CH)))
        return entry

    def asks_hints(self, fields: Iterable[tuple[str, str]]) -> bool:
        """An HTML page's answer that should carry `Accept-CH` (it has none of its own, and
        a rule sizes images by the hints)."""
        if not self.enabled or not any(r.hints for r in self.settings.rules):
            return False
        ctype = ""
        for k, v in fields:
            lname = k.lower()
            if lname == "accept-ch":
                return False
            if lname == "content-type":
                ctype = v.split(";")[0].strip().lower()
        return ctype == "text/html"

    def page_fields(self, key: str, fields: list[tuple[str, str]]) -> None:
        """A page answered as it comes from the origin (a miss) asks for the hints as its
        stored copy does (`stored`): the images of that very page are sized by them."""
        if self.settings.rule_for(key.partition("?")[0]) is not None and self.asks_hints(fields):
            fields.append(("Accept-CH", images.ACCEPT_CH))

    def snapshot(self) -> dict[str, Any]:
        """This worker's counters: conversions by format and outcome, CPU seconds, bytes
        saved (edge.ops.nodeview sums the workers')."""
        by: dict[str, dict[str, int]] = {}
        for label, n in self.conversions.items():
            fmt, _, outcome = label.partition(" ")
            by.setdefault(fmt, {})[outcome] = n
        return {"conversions": by, "seconds": self.seconds, "bytes_saved": self.bytes_saved}

    async def close(self) -> None:
        """At shutdown: the conversions in flight are dropped, the pool ended."""
        if self._idle is not None:
            self._idle.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        pool, self.pool = self.pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: pool.shutdown(wait=True, cancel_futures=True)
            )
