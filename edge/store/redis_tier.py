"""The shared tier: stored responses in Redis, seen by every edge node.

Redis may be one server, a Sentinel set or a Redis Cluster (`edge.store.redis_conn`). Every key
is built for a cluster: a hash tag (the part in braces) puts what one command or script
touches in one hash slot, and no command or script ever spans slots.

Layout (``P`` is the prefix, ``K`` a primary key, ``B`` the object K belongs to: K itself,
or for a slice or a slices manifest (`edge.engine.slices`) the sliced object's key; ``h`` is
sha1(B), and ``s`` is ``:sha1(K)`` when K is not B, else nothing; ``V`` a variant id):

- ``P:obj:{h}s`` hash: ``d:V`` -> `Entry.dumps()`, ``t:V`` -> keep-until (epoch seconds,
  text), ``i:V`` -> "1" when soft-purged since stored. The hash expires (PEXPIREAT) at the
  latest keep-until of its variants; a variant past its own keep-until is ignored on read.
  An object, its manifest and its slices share the slot of ``{h}``: one shard.
- ``P:lock:{h}s`` string: the cross-node fill lock (SET NX PX, random token).
- ``P:purged:{h}s`` string: a hard purge's time (tombstone, `TOMBSTONE_MS`).
- ``P:tag:{T}`` set of the primary keys tagged T, and ``P:purged-tag:{T}`` its tombstone:
  the slot of the tag, so a purge by tag reads one set on one shard (one round trip).
- The index, in the slot of ``{P:index}``: ``P:keys:{P:index}`` zset (scores 0) of primary
  keys (ZRANGEBYLEX for full-URL prefixes), ``P:paths:{P:index}`` zset of
  ``path-and-query \\0 K`` (path prefixes on every host; globs), ``P:exp:{P:index}`` zset
  K -> latest keep-until (`sweep()`), ``P:purged-all:{P:index}`` (purge-all tombstone).
  A purge by prefix is one ZRANGEBYLEX on one shard, never a scan of every primary; the
  price is that this shard holds the whole index (about three times the key's length per
  object, next to objects of kilobytes).
- The purge bus (generation, channel, acknowledgements) in the slot of ``{P:bus}``: see
  `edge.store.purge_bus`.

A fill stores the object in one script on its slot (refused if its tombstone is newer than
the request), then its tag and index entries, then reads the tag and purge-all tombstones:
a purge sets those before it reads the tag sets or the index, so either the purge finds the
object or the fill finds the tombstone and takes the object back.

A Redis failure never fails a request: calls time out quickly, the tier marks itself down,
logs one warning, answers "nothing" (get -> [], put -> False, try_lock -> a local token) and
tries again after `backoff` seconds; only `purge` raises (RedisUnavailable). On a Sentinel
set or a cluster the status is "degraded" (a failover is expected to end it) and a purge is
retried for up to `failover_wait` seconds before it gives up; a change of primary seen when
Redis answers again counts as a failover (`failovers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import TimeoutError as RedisTimeoutError

from edge.base.shutdown import cancel_all
from edge.cache.entry import Entry, EntryFormatError
from edge.cache.slicing import MANIFEST, slice_key
from edge.config.redis_url import CLUSTER, parse_url, redacted
from edge.store.fill_wait import SharedPollers
from edge.store.memory import MiB
from edge.store.purge_bus import (
    Announced,
    PurgeBus,
    RedisUnavailable,
    announce_in,
    announce_on,
    encode_message,
    generation_key,
)
from edge.store.redis_conn import FAILURES, Client, close_client, make_client, primaries, refresh
from edge.store.storage import Built, Place, Purge, PurgePattern

if TYPE_CHECKING:
    from edge.config.settings import EdgeConfig
    from edge.store.locks import RedisLocks

__all__ = ["LOCAL_TOKEN_PREFIX", "RedisTier", "RedisUnavailable"]

log = logging.getLogger("edge.store.redis")
T = TypeVar("T")

LOCAL_TOKEN_PREFIX = "local:"
"""try_lock's answer while Redis is down: go ahead alone (no cross-node collapsing)."""

FAILOVER_WINDOW = 30.0
"""How long a failing Sentinel set or cluster is reported "degraded" before "down"."""


class _Script:
    """A Lua script run by EVALSHA (EVAL the first time a node sees it)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Client, keys: list[Any], args: list[Any]) -> Any:
        from edge.store.redis_conn import run_script

        return await run_script(client, self.text, self.sha, keys, args)

    def queue(self, pipe: Any, keys: list[Any], args: list[Any]) -> None:
        """Into a pipeline (EVAL: a pipeline cannot recover from NOSCRIPT)."""
        pipe.eval(self.text, len(keys), *keys, *args)


_KPATH_LUA = """
local function kpath(k)
  local s = string.find(k, '://', 1, true)
  local start
  if s then start = string.find(k, '/', s + 3, true) else start = string.find(k, '/', 1, true) end
  if start then return string.sub(k, start) end
  return '/'
end
"""

# KEYS: obj hash, its tombstone. ARGV: variant, data, keep-until, keep-until in ms, request
# time. Returns 1 when stored, 0 when a purge newer than the request (its tombstone) refuses.
_PUT = _Script("""
local t = redis.call('GET', KEYS[2])
if t and tonumber(t) >= tonumber(ARGV[5]) then return 0 end
local v = ARGV[1]
redis.call('HSET', KEYS[1], 'd:' .. v, ARGV[2], 't:' .. v, ARGV[3])
redis.call('HDEL', KEYS[1], 'i:' .. v)
redis.call('PEXPIREAT', KEYS[1], ARGV[4], 'NX')
redis.call('PEXPIREAT', KEYS[1], ARGV[4], 'GT')
return 1
""")

# KEYS: keys, paths, exp zsets. ARGV: primary key, keep-until.
_INDEX_ADD = _Script(
    _KPATH_LUA
    + """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZADD', KEYS[2], 0, kpath(ARGV[1]) .. '\\0' .. ARGV[1])
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[1])
return 1
"""
)

# KEYS: obj hash, its tombstone. ARGV: soft ("1"/"0"), now, tombstone lifetime (ms, 0:
# none). Returns the number of live variants affected. A hard purge leaves the tombstone
# (the purge's time): a put of a response requested before it is refused (_PUT).
_PURGE = _Script("""
local soft = ARGV[1] == '1'
local now = tonumber(ARGV[2])
local n = 0
if not soft and ARGV[3] ~= '0' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'd:' then
    local v = string.sub(f, 3)
    local keep = tonumber(redis.call('HGET', KEYS[1], 't:' .. v))
    if keep and keep > now then n = n + 1 end
    if soft then redis.call('HSET', KEYS[1], 'i:' .. v, '1') end
  end
end
if not soft then redis.call('DEL', KEYS[1]) end
return n
""")

# KEYS: keys, paths, exp zsets. ARGV: primary keys. Drops them from the index.
_INDEX_DROP = _Script(
    _KPATH_LUA
    + """
for i = 1, #ARGV do
  local k = ARGV[i]
  redis.call('ZREM', KEYS[1], k)
  redis.call('ZREM', KEYS[2], kpath(k) .. '\\0' .. k)
  redis.call('ZREM', KEYS[3], k)
end
return #ARGV
"""
)

TOMBSTONE_MS = 300_000
"""How long a purge refuses late stores of responses requested before it."""

# KEYS[1] = obj hash. ARGV: variant, sha1 of the value. Deletes it if unchanged.
_DROP_IF_SAME = _Script("""
local v = redis.call('HGET', KEYS[1], 'd:' .. ARGV[1])
if v == false or redis.sha1hex(v) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], 'd:' .. ARGV[1], 't:' .. ARGV[1], 'i:' .. ARGV[1])
end
return 0
""")

_UNLOCK = _Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


class _Skip(Exception):
    """Redis is down (or just failed): answer "nothing"."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_SLICE_MARK = slice_key("", 1, 0).rsplit("/", 2)[0] + "/"  # "#slice/"


def object_of(key: str) -> str:
    """The object a key belongs to: a slice's or a manifest's sliced object, else itself."""
    if key.endswith(MANIFEST):
        return key[: -len(MANIFEST)]
    at = key.rfind(_SLICE_MARK)
    return key[:at] if at >= 0 else key


def _slotted(key: str) -> str:
    """``{sha1(object)}`` and, for a slice or a manifest, ``:sha1(key)``."""
    base = object_of(key)
    return f"{{{_sha1(base)}}}" + ("" if base == key else f":{_sha1(key)}")


class RedisTier:
    """The shared tier on `redis.asyncio`. See the module docstring for the layout.

    Counters: `gets`, `hits`, `puts`, `errors`, `failovers`. `status` is "up", "degraded"
    (a Sentinel set or cluster failing over) or "down".

    A `SharedStorage` of `edge.store.storage`, `Locking` (its fill lock) and `Announcing`
    (it carries the purge bus); the section `redis` (`from_config`).
    """

    name = "redis"
    local = False

    def __init__(
        self,
        url: str,
        prefix: str = "edge",
        timeout: float = 0.25,
        node: str = "edge-1",
        *,
        backoff: float = 1.0,
        max_object_bytes: int = 16 * MiB,
        max_concurrency: int = 32,
        sweep_every: float = 30.0,
        clock: Callable[[], float] = time.time,
        refuse_late: bool = False,
        failover_wait: float = 15.0,
    ) -> None:
        self.url = url
        self.target = parse_url(url)
        self.prefix = prefix
        self.timeout = timeout
        self.node = node
        self.backoff = backoff
        self.max_object_bytes = max_object_bytes
        self.sweep_every = sweep_every
        self.failover_wait = failover_wait if self.target.failover else 0.0
        """How long a purge is retried while a Sentinel set or cluster fails over."""
        self._failing_since: float | None = None
        self._clock = clock
        self._client = make_client(url, timeout, f"{prefix}/{node}/tier")
        self._cluster = self.target.mode == CLUSTER
        self._slots = asyncio.Semaphore(max_concurrency)
        index = f"{{{prefix}:index}}"
        self._keys = f"{prefix}:keys:{index}"
        self._paths = f"{prefix}:paths:{index}"
        self._exp = f"{prefix}:exp:{index}"
        self._all_tomb = f"{prefix}:purged-all:{index}"
        self._down = False
        self._down_since = -math.inf
        self._last_failure = -math.inf
        self._retry_at = 0.0
        self._probing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._pollers = SharedPollers()
        self._primaries: frozenset[str] = frozenset()
        self._settling: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._unsettled_since: float | None = None
        self.gets = 0
        self.hits = 0
        self.puts = 0
        self.errors = 0
        self.busy = 0
        self.corrupt = 0
        self.refused_late = 0
        self.failovers = 0
        """Primaries replaced (seen when Redis answered again after failing)."""
        self.refuse_late = refuse_late
        """Hard purges leave tombstones and puts of responses requested before them are
        refused (the edge turns it on; TOMBSTONE_MS)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the connection (never raises: a down Redis only marks the tier down) and
        start the background index sweeper (every `sweep_every` seconds; 0 disables it)."""
        with contextlib.suppress(_Skip):
            await self._run(lambda r: r.ping())
            with contextlib.suppress(*FAILURES):
                self._primaries = await primaries(self._client)
        if self.sweep_every > 0 and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="redis-sweep")

    async def close(self) -> None:
        self._pollers.cancel()
        await cancel_all([self._sweeper, self._settling, self._refreshing], "redis tier")
        self._sweeper = None
        await close_client(self._client, "redis tier: Redis client")

    @property
    def available(self) -> bool:
        """False while the breaker keeps calls away from Redis."""
        return not self._down

    @property
    def status(self) -> str:
        failing = self._down or time.monotonic() - self._last_failure < 2 * self.backoff
        if not failing:
            return "up"
        if self.target.failover and time.monotonic() - self._down_since < FAILOVER_WINDOW:
            return "degraded"
        return "down" if self._down else "up"

    def health(self) -> str:
        """What /_edge/health says under `redis`: "up", "degraded" or "down"."""
        return self.status

    async def tick(self) -> None:
        """A cheap call, about once a second (`Tiers.watch`): the tier only learns that Redis
        went away, or came back, when it is asked something (a node serving nothing but hits
        would otherwise report a stale status, and keep running without the shared tier
        after Redis returned)."""
        with contextlib.suppress(RedisUnavailable):
            await self.purge_generation()

    def locks(self) -> RedisLocks:
        """Its fill lock, across nodes; skipped while Redis is down."""
        from edge.store.locks import RedisLocks

        return RedisLocks(self)

    def stats(self) -> dict[str, int | str]:
        return {
            "status": self.status,
            "mode": self.target.mode,
            "gets": self.gets,
            "hits": self.hits,
            "puts": self.puts,
            "errors": self.errors,
            "busy": self.busy,
            "corrupt": self.corrupt,
            "refused_late": self.refused_late,
            "failovers": self.failovers,
        }

    # -- names ----------------------------------------------------------------------------

    def _obj(self, key: str) -> str:
        return f"{self.prefix}:obj:{_slotted(key)}"

    def _lock(self, key: str) -> str:
        return f"{self.prefix}:lock:{_slotted(key)}"

    def _tomb(self, key: str) -> str:
        return f"{self.prefix}:purged:{_slotted(key)}"

    def _tag(self, tag: str) -> str:
        return f"{self.prefix}:tag:{{{tag}}}"

    def _tag_tomb(self, tag: str) -> str:
        return f"{self.prefix}:purged-tag:{{{tag}}}"

    def _index(self) -> list[str]:
        return [self._keys, self._paths, self._exp]

    def _pipeline(self, atomic: bool = False) -> Any:
        """A pipeline; `atomic` (MULTI/EXEC) on one Redis only: a cluster's pipeline sends
        each node its commands, in order, without a transaction."""
        return self._client.pipeline(transaction=atomic and not self._cluster)

    # -- the circuit breaker --------------------------------------------------------------

    async def _run(
        self,
        op: Callable[[Client], Awaitable[T]],
        deadline: float | None = None,
        force: bool = False,
    ) -> T:
        """Run one Redis exchange under the breaker; raise _Skip when down or on failure.
        `force`: try even while the breaker is open (a purge being retried)."""
        probe = False
        if self._down and not force:
            if self._probing or time.monotonic() < self._retry_at:
                raise _Skip
            self._probing = probe = True
        limit = deadline if deadline is not None else self.timeout * 4
        try:
            try:
                async with asyncio.timeout(limit):
                    await self._slots.acquire()
            except TimeoutError as exc:
                self.busy += 1  # too many calls in flight here: overload, not a Redis failure
                raise _Skip from exc
            try:
                async with asyncio.timeout(limit):
                    result = await op(self._client)
            except FAILURES as exc:
                await self._failed(exc)
                raise _Skip from exc
            finally:
                self._slots.release()
        finally:
            if probe:
                self._probing = False
        self._failing_since = None
        if self._down:
            self._down = False
            if self._unsettled_since is None:  # else said once the failover is over
                log.warning("redis tier %s: Redis is back (%s)", self.node, redacted(self.url))
        if self._unsettled_since is not None and self._settling is None:
            self._settling = asyncio.get_running_loop().create_task(self._settle())
        return result

    async def _failed(self, exc: BaseException) -> None:
        """Count a failure and go down on a connection error, or on timeouts that last
        `2 * timeout` without a success in between: one slow reply on a busy machine must
        not send every request to the origin for a whole back-off."""
        self.errors += 1
        now = time.monotonic()
        if isinstance(exc, TimeoutError | RedisTimeoutError) and not self._down:
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since < 2 * self.timeout:
                return
        self._retry_at = now + self.backoff
        self._last_failure = now
        if self._cluster and self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        first = self._unsettled_since is None  # of a failover under way, if any
        if self.target.failover and first:
            self._unsettled_since = now  # a failover may be under way: watch the primaries
        if not self._down:
            self._down = True
            if now - self._down_since > FAILOVER_WINDOW:
                self._down_since = now
            (log.warning if first else log.debug)(
                "redis tier %s: Redis unavailable (%r); serving without the shared tier, "
                "retrying every %.1f s",
                self.node,
                exc,
                self.backoff,
            )
            # idle connections are likely dead too: drop them, not the ones in use
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None:
                with contextlib.suppress(*FAILURES):
                    await pool.disconnect(inuse_connections=False)

    async def _refresh(self) -> None:
        """Read the cluster's slot map again (at most 4 times a second)."""
        try:
            with contextlib.suppress(*FAILURES):
                async with asyncio.timeout(self.timeout * 4):
                    await refresh(self._client)
            await asyncio.sleep(0.25)
        finally:
            self._refreshing = None

    async def _settle(self) -> None:
        """After failures on a Sentinel set or a cluster: once Redis answers, compare the
        primaries with those before; each one replaced is a failover. Over when one was
        replaced, or after `2 * backoff` seconds without a failure."""
        try:
            since = self._unsettled_since or 0.0
            with contextlib.suppress(*FAILURES):
                async with asyncio.timeout(self.timeout * 4):
                    now = await primaries(self._client)
                new = now - self._primaries if self._primaries else frozenset()
                if new:
                    self.failovers += len(new)
                    log.warning(
                        "redis tier %s: failover: primaries now %s (were %s)",
                        self.node,
                        ", ".join(sorted(now)),
                        ", ".join(sorted(self._primaries)),
                    )
                self._primaries = now
                calm = time.monotonic() - self._last_failure > 2 * self.backoff
                if new or calm or time.monotonic() - since > FAILOVER_WINDOW:
                    self._unsettled_since = None
                    if not self._down:
                        log.warning(
                            "redis tier %s: Redis is back (%s)", self.node, redacted(self.url)
                        )
            await asyncio.sleep(0.5)  # at most two looks a second
        finally:
            self._settling = None

    async def _persist(self, op: Callable[[Client], Awaitable[T]], what: str) -> T:
        """Run a purge's step; on a Sentinel set or a cluster, retry it while a failover may
        end (`failover_wait`). Every step is idempotent. Raises RedisUnavailable."""
        give_up = time.monotonic() + self.failover_wait
        force = False
        while True:
            try:
                return await self._run(op, deadline=max(5.0, self.timeout * 4), force=force)
            except _Skip as exc:
                if time.monotonic() >= give_up:
                    raise RedisUnavailable(
                        f"redis tier {self.node}: Redis is unavailable ({what})"
                    ) from exc
            force = True
            await asyncio.sleep(0.1)

    # -- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> list[Entry]:
        """Live variants of `key`, most recent response first; [] on a miss or when down."""
        self.gets += 1
        name = self._obj(key)
        try:
            raw = await self._run(lambda r: r.hgetall(name))
        except _Skip:
            return []
        entries = await self._decode(key, name, raw)
        if entries:
            self.hits += 1
        return entries

    async def _decode(self, key: str, name: str, fields: dict[Any, Any]) -> list[Entry]:
        """Parse a hash read back (bytes, as the client does not decode responses)."""
        raw: dict[bytes, bytes] = fields
        now = self._clock()
        entries = []
        for field, value in raw.items():
            if not field.startswith(b"d:"):
                continue
            vid = field[2:]
            try:
                keep = float(raw.get(b"t:" + vid, b"nan"))
                entry = Entry.loads(value)
                if entry.key != key or entry.variant_id.encode() != vid or math.isnan(keep):
                    raise EntryFormatError("entry stored under the wrong key or variant")
            except (EntryFormatError, ValueError, UnicodeDecodeError) as exc:
                self.corrupt += 1
                log.warning("redis tier: dropping a corrupt entry of %s: %s", key, exc)
                await self._forget(name, vid, value)
                continue
            if keep <= now:
                continue
            if b"i:" + vid in raw:
                entry.invalidated = True
            entries.append(entry)
        entries.sort(key=lambda e: e.response_time, reverse=True)
        return entries

    async def _forget(self, name: str, vid: bytes | str, value: bytes) -> None:
        """Delete a variant unless it was overwritten meanwhile."""
        args: list[bytes | str] = [vid, hashlib.sha1(value, usedforsecurity=False).hexdigest()]
        with contextlib.suppress(_Skip):
            await self._run(lambda r: _DROP_IF_SAME(r, [name], args))

    # -- writes ---------------------------------------------------------------------------

    async def put(self, entry: Entry, keep_until: float) -> bool:
        """Store `entry` (replacing its variant): the object in one script on its slot, then
        its tag and index entries (and, with `refuse_late`, a look at the tag and purge-all
        tombstones). False when it is too big, already past `keep_until`, refused by a purge
        newer than its request, or Redis is down."""
        if entry.size > self.max_object_bytes or keep_until <= self._clock():
            return False
        key = entry.key
        name = self._obj(key)
        vid = entry.variant_id
        data = entry.dumps()
        at_ms = math.ceil(keep_until * 1000)
        sent = entry.request_time if self.refuse_late else math.inf
        tags = list(entry.tags)
        deadline = self.timeout * 4 + len(data) / 50e6

        async def store(r: Client) -> Any:
            args = [vid, data, repr(keep_until), at_ms, repr(sent) if self.refuse_late else "1e308"]
            return await _PUT(r, [name, self._tomb(key)], args)

        async def index(r: Client) -> list[Any]:
            pipe = self._pipeline()
            for tag in tags:  # the tag's set, then its tombstone: same slot, in this order
                pipe.sadd(self._tag(tag), key)
                pipe.pexpireat(self._tag(tag), at_ms, nx=True)
                pipe.pexpireat(self._tag(tag), at_ms, gt=True)
                if self.refuse_late:
                    pipe.get(self._tag_tomb(tag))
            _INDEX_ADD.queue(pipe, self._index(), [key, repr(keep_until)])
            if self.refuse_late:
                pipe.get(self._all_tomb)
            return list(await pipe.execute())

        try:
            stored = await self._run(store, deadline=deadline)
            if stored:
                results = await self._run(index, deadline=deadline)
        except _Skip:
            return False
        if stored and self.refuse_late:
            tombs = [*results[3::4][: len(tags)], results[-1]]
            if any(t is not None and float(t) >= sent for t in tombs):
                await self._forget(name, vid, data)  # a purge of a tag of it came first
                stored = 0
        if not stored:
            self.refused_late += 1  # requested before a purge of it: the fetch raced it
            return False
        self.puts += 1
        return True

    async def delete(self, key: str) -> int:
        """Drop every variant of `key`, without announcing it (raises RedisUnavailable)."""
        entries, _ = await self._apply_announced([key], soft=False)
        return entries

    async def purge(self, purge: Purge, announce: bool = True) -> int:
        """Drop (or `purge.soft`: mark invalidated) every variant of the keys `purge` selects;
        returns how many live entries were affected.

        Always bumps the purge generation and, with `announce`, publishes the purge on the
        bus (on one Redis, in the same transaction; on a cluster, once every shard applied
        it). Raises RedisUnavailable when Redis cannot be reached.
        """
        entries, _ = await self.purge_announced(purge, announce)
        return entries

    async def purge_announced(self, purge: Purge, announce: bool = True) -> tuple[int, Announced]:
        """`purge`, also answering the purge's generation and how many bus subscribers
        received the announcement (0 without `announce`)."""
        urls, patterns, tags, all = list(purge.urls), purge.patterns, purge.tags, purge.all
        now = self._clock()
        tombs = [self._tag_tomb(t) for t in tags] + ([self._all_tomb] if all else [])
        if tombs and self.refuse_late and not purge.soft:
            # before the tag sets and the index are read: see the module docstring
            async def bury(r: Client) -> Any:
                pipe = self._pipeline()
                for tomb in tombs:
                    pipe.set(tomb, repr(now), px=TOMBSTONE_MS)
                return await pipe.execute()

            await self._persist(bury, "tombstones")
        keys = await self._resolve(urls, patterns, tags, all)
        message = purge.message(now)
        drop_tags = [] if purge.soft else [self._tag(t) for t in tags]
        return await self._apply_announced(
            sorted(keys), purge.soft, drop_tags, message if announce else None, now
        )

    async def _resolve(
        self,
        urls: list[str],
        patterns: tuple[PurgePattern, ...],
        tags: tuple[str, ...],
        all: bool,
    ) -> set[str]:
        async def op(r: Client) -> set[str]:
            if all:
                return {_text(m) async for m, _ in r.zscan_iter(self._keys, count=1000)}
            found = set(urls)
            if tags:  # one SMEMBERS per tag, each on its tag's shard, all at once
                pipe = self._pipeline()
                for tag in tags:
                    pipe.smembers(self._tag(tag))
                for members in await pipe.execute():
                    found |= {_text(m) for m in members}
            for p in patterns:
                found |= await self._match(r, p)
            return found

        return await self._persist(op, "resolving the purge")

    async def _match(self, r: Client, p: PurgePattern) -> set[str]:
        zset = self._paths if p.by_path else self._keys
        if p.literal:
            lit = p.literal.encode()
            members = await r.zrangebylex(zset, b"[" + lit, b"(" + lit + b"\xff")
        else:  # a glob starting with a wildcard: scan it all, pre-filtered by Redis
            simple = not any(c in p.text for c in "[]\\")
            match = f"{p.text}\0*" if simple else None
            members = [m async for m, _ in r.zscan_iter(zset, match=match, count=1000)]
        keys = {_text(m).split("\0", 1)[-1] for m in members}
        if p.kind in ("glob", "urlglob"):
            keys = {k for k in keys if p.matches(k)}
        return keys

    async def _apply_announced(
        self,
        keys: list[str],
        soft: bool,
        drop: list[str] | None = None,
        message: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> tuple[int, Announced]:
        """Purge `keys` (one script per key, on its slot), drop them from the index and the
        tag sets `drop`, then bump the generation (announcing `message`). On one Redis all
        in one transaction; on a cluster, the announcement once every shard answered."""
        now = repr(self._clock() if at is None else at)
        tomb_ms = TOMBSTONE_MS if self.refuse_late else 0
        generation = generation_key(self.prefix)

        def purge_into(pipe: Any) -> None:
            for key in keys:
                _PURGE.queue(
                    pipe, [self._obj(key), self._tomb(key)], ["1" if soft else "0", now, tomb_ms]
                )
            if not soft:
                for i in range(0, len(keys), 500):
                    _INDEX_DROP.queue(pipe, self._index(), keys[i : i + 500])
            for name in drop or ():
                pipe.delete(name)

        def announce_into(pipe: Any) -> None:
            if message is not None:
                announce_in(pipe, self.prefix, encode_message(message, self.node), self._cluster)
            else:
                pipe.incr(generation)

        async def both(r: Client) -> tuple[int, Any]:
            pipe = self._pipeline(atomic=True)
            purge_into(pipe)
            announce_into(pipe)
            results = await pipe.execute()
            return sum(int(n) for n in results[: len(keys)]), results[-1]

        async def purge_only(r: Client) -> tuple[int, Any]:
            pipe = self._pipeline()
            purge_into(pipe)
            results = await pipe.execute() if len(pipe) else []
            return sum(int(n) for n in results[: len(keys)]), None

        async def announce_only(r: Client) -> Any:  # one script call, no pipeline
            if message is None:
                return await r.incr(generation)
            payload = encode_message(message, self.node)
            return await announce_on(r, self.prefix, payload, self._cluster)

        if not self._cluster:
            entries, raw = await self._persist(both, "purging")
        else:
            entries, _ = await self._persist(purge_only, "purging")
            raw = await self._persist(announce_only, "announcing the purge")
        return entries, Announced.from_script(raw)

    async def purge_generation(self) -> int:
        """The current purge generation (raises RedisUnavailable)."""
        try:
            raw = await self._run(lambda r: r.get(generation_key(self.prefix)))
        except _Skip as exc:
            raise RedisUnavailable(f"redis tier {self.node}: Redis is unavailable") from exc
        return int(raw or 0)

    async def sweep(self, limit: int = 1000) -> int:
        """Drop from the indexes up to `limit` keys whose hash has expired; returns how many."""
        now = self._clock()

        async def op(r: Client) -> int:
            found = await r.zrangebyscore(self._exp, "-inf", repr(now), start=0, num=limit)
            due = [_text(k) for k in found if isinstance(k, bytes | str)]
            if not due:
                return 0
            pipe = self._pipeline()
            for k in due:
                pipe.pexpiretime(self._obj(k))
            ats = await pipe.execute()
            gone = [k for k, at in zip(due, ats, strict=True) if at == -2]
            later = {
                k: (now + 3600 if at == -1 else at / 1000)
                for k, at in zip(due, ats, strict=True)
                if at != -2
            }
            pipe = self._pipeline()
            if later:
                pipe.zadd(self._exp, later)
            if gone:
                _INDEX_DROP.queue(pipe, self._index(), gone)
            await pipe.execute()
            return len(gone)

        try:
            return await self._run(op, deadline=max(5.0, self.timeout * 4))
        except _Skip:
            return 0

    async def _sweep_forever(self) -> None:
        while True:
            swept = await self.sweep()
            await asyncio.sleep(0 if swept >= 1000 else self.sweep_every)

    # -- cross-node request collapsing ----------------------------------------------------

    async def try_lock(self, key: str, ttl: float) -> str | None:
        """Take the fill lock of `key` for `ttl` seconds: the token, or None when another
        holder has it (or on a passing Redis failure). While Redis is down, a token
        starting with LOCAL_TOKEN_PREFIX: proceed without cross-node collapsing."""
        token = secrets.token_hex(16)
        name = self._lock(key)
        px = max(1, int(ttl * 1000))
        try:
            ok = await self._run(lambda r: r.set(name, token, nx=True, px=px))
        except _Skip:
            # Down: go ahead alone. A passing failure: say "held" (the caller waits, and
            # wait_for_fill answers [] at once if no one actually holds it).
            return LOCAL_TOKEN_PREFIX + token if self._down else None
        return token if ok else None

    async def unlock(self, key: str, token: str) -> bool:
        """Release the lock if `token` still holds it (compare-and-delete)."""
        if token.startswith(LOCAL_TOKEN_PREFIX):
            return False
        name = self._lock(key)
        try:
            # even while the breaker is open: on a cluster that lost another shard the
            # lock's own shard may answer, and the other nodes wait on this lock until it
            # goes (or for its whole ttl)
            n = await self._run(lambda r: _UNLOCK(r, [name], [token]), force=True)
        except _Skip:
            return False
        return bool(n)

    async def wait_for_fill(
        self,
        key: str,
        timeout: float,
        poll: float = 0.02,
        newer_than: float | None = None,
    ) -> list[Entry]:
        """Wait while another node fills `key`: its variants as soon as they appear (only
        responses received after `newer_than`, if given), or what is there when the lock
        vanishes, or [] on timeout or when Redis is down. Concurrent waiters of this tier
        on the same key share one poller (one Redis round trip per `poll`)."""
        return await self._pollers.wait(
            (key, newer_than),
            timeout,
            lambda budget: self._poll_fill(key, budget, poll, newer_than),
        )

    async def _poll_fill(
        self, key: str, budget: float, poll: float, newer_than: float | None
    ) -> list[Entry] | None:
        """The shared poller: entries or [] (final answers), None when `budget` ran out."""
        name, lock = self._obj(key), self._lock(key)
        deadline = time.monotonic() + budget

        async def probe(r: Client) -> Any:
            pipe = self._pipeline()
            pipe.exists(name)
            pipe.exists(lock)
            return await pipe.execute()

        while True:
            try:
                has_obj, locked = await self._run(probe)
            except _Skip:
                return []
            if has_obj or not locked:
                entries = await self.get(key)
                if newer_than is not None:
                    entries = [e for e in entries if e.response_time > newer_than]
                if entries or not locked:
                    return entries
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(poll)


async def from_config(cfg: EdgeConfig, place: Place) -> Built | None:
    """The shared tier of the section `redis` (`edge.store.backends`) and the purge bus it
    carries. Never raises for a Redis that is down: the tier starts down and comes back."""
    if not cfg.redis_url:
        return None
    tier = RedisTier(
        cfg.redis_url,
        prefix=cfg.redis_prefix,
        timeout=cfg.redis_timeout,
        node=cfg.node,
        max_object_bytes=cfg.memory_max_object_bytes,
        refuse_late=True,
    )
    await tier.start()
    bus = PurgeBus(
        cfg.redis_url,
        prefix=cfg.redis_prefix,
        node=cfg.node,
        bound=cfg.purge_staleness_bound,
        timeout=cfg.redis_timeout,
    )
    return Built(tier, bus)
