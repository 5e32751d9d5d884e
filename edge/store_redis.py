"""The shared tier: stored responses in Redis, seen by every edge node.

Layout (``P`` is the prefix, ``K`` a primary key, ``V`` a variant id):

- ``P:obj:{sha1(K)}`` hash: ``d:V`` -> `Entry.dumps()`, ``t:V`` -> keep-until (epoch seconds,
  text), ``i:V`` -> "1" when soft-purged since stored. The hash expires (PEXPIREAT) at the
  latest keep-until of its variants; a variant past its own keep-until is ignored on read.
- ``P:keys`` zset (all scores 0) of primary keys: ZRANGEBYLEX for full-URL prefixes.
- ``P:paths`` zset (scores 0) of ``path-and-query \\0 K``: ZRANGEBYLEX for path prefixes on
  every host, ZRANGEBYLEX on a glob's literal head (or ZSCAN MATCH) for globs.
- ``P:exp`` zset K -> latest keep-until: `sweep()` drops index members whose hash is gone.
- ``P:tag:{tag}`` set of primary keys, expiring with the latest keep-until put into it.
- ``P:lock:{sha1(K)}`` string: the cross-node fill lock (SET NX PX, random token).
- ``P:purge-gen`` counter and ``P:purge`` channel: see `edge.purge_bus`.

A Redis failure never fails a request: calls time out quickly, the tier marks itself down,
logs one warning, answers "nothing" (get -> [], put -> False, try_lock -> a local token) and
tries again after `backoff` seconds; only `purge` raises (RedisUnavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge.entry import Entry, EntryFormatError
from edge.fill_wait import SharedPollers
from edge.purge_bus import (
    PUBLISH_LUA,
    Announced,
    RedisUnavailable,
    channel_name,
    encode_message,
    generation_key,
    make_client,
)
from edge.shutdown import cancel_all, close_within
from edge.store_memory import MiB, PurgePattern, key_path

__all__ = ["LOCAL_TOKEN_PREFIX", "RedisTier", "RedisUnavailable"]

log = logging.getLogger("edge.store.redis")
T = TypeVar("T")

LOCAL_TOKEN_PREFIX = "local:"
"""try_lock's answer while Redis is down: go ahead alone (no cross-node collapsing)."""

_KPATH_LUA = """
local function kpath(k)
  local s = string.find(k, '://', 1, true)
  local start
  if s then start = string.find(k, '/', s + 3, true) else start = string.find(k, '/', 1, true) end
  if start then return string.sub(k, start) end
  return '/'
end
"""

# KEYS: keys, paths, exp zsets. ARGV: soft ("1"/"0"), now, obj prefix, tombstone prefix,
# tombstone lifetime (ms), primary keys... Returns the number of live variants affected.
# A hard purge leaves a tombstone per key (the purge's time): a put of a response requested
# before it is refused (see _PUT_LUA).
_PURGE_LUA = (
    _KPATH_LUA
    + """
local soft = ARGV[1] == '1'
local now = tonumber(ARGV[2])
local n = 0
for i = 6, #ARGV do
  local k = ARGV[i]
  local obj = ARGV[3] .. redis.sha1hex(k)
  if not soft and ARGV[5] ~= '0' then
    redis.call('SET', ARGV[4] .. redis.sha1hex(k), ARGV[2], 'PX', ARGV[5])
  end
  for _, f in ipairs(redis.call('HKEYS', obj)) do
    if string.sub(f, 1, 2) == 'd:' then
      local v = string.sub(f, 3)
      local keep = tonumber(redis.call('HGET', obj, 't:' .. v))
      if keep and keep > now then n = n + 1 end
      if soft then redis.call('HSET', obj, 'i:' .. v, '1') end
    end
  end
  if not soft then
    redis.call('DEL', obj)
    redis.call('ZREM', KEYS[1], k)
    redis.call('ZREM', KEYS[2], kpath(k) .. '\\0' .. k)
    redis.call('ZREM', KEYS[3], k)
  end
end
return n
"""
)

# KEYS: obj hash, keys zset, paths zset, exp zset, the key's tombstone, the purge-all
# tombstone, then N tag sets and their N tombstones. ARGV: variant, data, keep-until,
# keep-until in ms, primary key, paths member, request time, N. Returns 1 when stored, 0 when
# a purge newer than the request (a tombstone >= request time) refuses it.
_PUT_LUA = """
local sent = tonumber(ARGV[7])
local ntags = tonumber(ARGV[8])
local function purged(name)
  local t = redis.call('GET', name)
  return t and tonumber(t) >= sent
end
if purged(KEYS[5]) or purged(KEYS[6]) then return 0 end
for i = 1, ntags do
  if purged(KEYS[6 + ntags + i]) then return 0 end
end
local v = ARGV[1]
redis.call('HSET', KEYS[1], 'd:' .. v, ARGV[2], 't:' .. v, ARGV[3])
redis.call('HDEL', KEYS[1], 'i:' .. v)
for i = 0, ntags do
  local name = KEYS[1]
  if i > 0 then name = KEYS[6 + i] end
  redis.call('PEXPIREAT', name, ARGV[4], 'NX')
  redis.call('PEXPIREAT', name, ARGV[4], 'GT')
end
for i = 1, ntags do redis.call('SADD', KEYS[6 + i], ARGV[5]) end
redis.call('ZADD', KEYS[2], 0, ARGV[5])
redis.call('ZADD', KEYS[3], 0, ARGV[6])
redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[5])
return 1
"""

TOMBSTONE_MS = 300_000
"""How long a purge refuses late stores of responses requested before it."""

# KEYS: keys, paths, exp. ARGV: now, limit, obj prefix. Drops index members of gone hashes.
_SWEEP_LUA = (
    _KPATH_LUA
    + """
local n = 0
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local obj = ARGV[3] .. redis.sha1hex(k)
  local at = redis.call('PEXPIRETIME', obj)
  if at == -2 then
    redis.call('ZREM', KEYS[1], k)
    redis.call('ZREM', KEYS[2], kpath(k) .. '\\0' .. k)
    redis.call('ZREM', KEYS[3], k)
    n = n + 1
  elseif at == -1 then
    redis.call('ZADD', KEYS[3], tonumber(ARGV[1]) + 3600, k)
  else
    redis.call('ZADD', KEYS[3], at / 1000, k)
  end
end
return n
"""
)

# KEYS[1] = obj hash. ARGV: variant, sha1 of the corrupt value. Deletes it if unchanged.
_DROP_CORRUPT_LUA = """
local v = redis.call('HGET', KEYS[1], 'd:' .. ARGV[1])
if v == false or redis.sha1hex(v) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], 'd:' .. ARGV[1], 't:' .. ARGV[1], 'i:' .. ARGV[1])
end
return 0
"""

_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Skip(Exception):
    """Redis is down (or just failed): answer "nothing"."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


class RedisTier:
    """The shared tier on `redis.asyncio`. See the module docstring for the layout.

    Counters: `gets`, `hits`, `puts`, `errors`. `status` is "up" or "down".
    """

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
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.node = node
        self.backoff = backoff
        self.max_object_bytes = max_object_bytes
        self.sweep_every = sweep_every
        self._failing_since: float | None = None
        self._clock = clock
        self._client = make_client(url, timeout, f"{prefix}/{node}/tier")
        self._slots = asyncio.Semaphore(max_concurrency)
        self._purge = self._client.register_script(_PURGE_LUA)
        self._put = self._client.register_script(_PUT_LUA)
        self._sweep = self._client.register_script(_SWEEP_LUA)
        self._drop_corrupt = self._client.register_script(_DROP_CORRUPT_LUA)
        self._unlock = self._client.register_script(_UNLOCK_LUA)
        self._publish = self._client.register_script(PUBLISH_LUA)
        self._keys = f"{prefix}:keys"
        self._paths = f"{prefix}:paths"
        self._exp = f"{prefix}:exp"
        self._down = False
        self._retry_at = 0.0
        self._probing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._pollers = SharedPollers()
        self.gets = 0
        self.hits = 0
        self.puts = 0
        self.errors = 0
        self.busy = 0
        self.corrupt = 0
        self.refused_late = 0
        self.refuse_late = refuse_late
        """Hard purges leave tombstones and puts of responses requested before them are
        refused (the edge turns it on; TOMBSTONE_MS)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the connection (never raises: a down Redis only marks the tier down) and
        start the background index sweeper (every `sweep_every` seconds; 0 disables it)."""
        with contextlib.suppress(_Skip):
            await self._run(lambda r: r.ping())
        if self.sweep_every > 0 and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="redis-sweep")

    async def close(self) -> None:
        self._pollers.cancel()
        await cancel_all([self._sweeper], "redis tier")
        self._sweeper = None
        await close_within(self._client.aclose(), "redis tier: Redis client")

    @property
    def status(self) -> str:
        return "down" if self._down else "up"

    def stats(self) -> dict[str, int | str]:
        return {
            "status": self.status,
            "gets": self.gets,
            "hits": self.hits,
            "puts": self.puts,
            "errors": self.errors,
            "busy": self.busy,
            "corrupt": self.corrupt,
            "refused_late": self.refused_late,
        }

    # -- names ----------------------------------------------------------------------------

    def _obj(self, key: str) -> str:
        return f"{self.prefix}:obj:{_sha1(key)}"

    def _lock(self, key: str) -> str:
        return f"{self.prefix}:lock:{_sha1(key)}"

    def _tag(self, tag: str) -> str:
        return f"{self.prefix}:tag:{tag}"

    def _tomb_prefix(self) -> str:
        return f"{self.prefix}:purged:"

    def _tag_tomb(self, tag: str) -> str:
        return f"{self.prefix}:purged-tag:{tag}"

    def _all_tomb(self) -> str:
        return f"{self.prefix}:purged-all"

    # -- the circuit breaker --------------------------------------------------------------

    async def _run(self, op: Callable[[Redis], Awaitable[T]], deadline: float | None = None) -> T:
        """Run one Redis exchange under the breaker; raise _Skip when down or on failure."""
        probe = False
        if self._down:
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
            except (RedisError, OSError, TimeoutError) as exc:
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
            log.warning("redis tier %s: Redis is back (%s)", self.node, self.url)
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
        if not self._down:
            self._down = True
            log.warning(
                "redis tier %s: Redis unavailable (%r); serving without the shared tier, "
                "retrying every %.1f s",
                self.node,
                exc,
                self.backoff,
            )
            # idle connections are likely dead too: drop them, not the ones in use
            with contextlib.suppress(RedisError, OSError):
                await self._client.connection_pool.disconnect(inuse_connections=False)

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

    async def _forget(self, name: str, vid: bytes, value: bytes) -> None:
        """Delete a corrupt variant unless it was overwritten meanwhile."""
        args: list[bytes | str] = [vid, hashlib.sha1(value, usedforsecurity=False).hexdigest()]
        with contextlib.suppress(_Skip):
            await self._run(lambda r: self._drop_corrupt(keys=[name], args=args, client=r))

    # -- writes ---------------------------------------------------------------------------

    async def put(self, entry: Entry, keep_until: float) -> bool:
        """Store `entry` (replacing its variant) in one round trip. False when it is too big,
        already past `keep_until`, or Redis is down."""
        if entry.size > self.max_object_bytes or keep_until <= self._clock():
            return False
        key = entry.key
        name = self._obj(key)
        vid = entry.variant_id
        data = entry.dumps()
        at_ms = math.ceil(keep_until * 1000)

        tags = list(entry.tags)
        keys = [
            name,
            self._keys,
            self._paths,
            self._exp,
            self._tomb_prefix() + _sha1(key),
            self._all_tomb(),
            *(self._tag(t) for t in tags),
            *(self._tag_tomb(t) for t in tags),
        ]
        args: list[str | bytes | int] = [
            vid,
            data,
            repr(keep_until),
            at_ms,
            key,
            f"{key_path(key)}\0{key}",
            repr(entry.request_time) if self.refuse_late else "1e308",
            len(tags),
        ]

        async def op(r: Redis) -> Any:
            return await self._put(keys=keys, args=args, client=r)

        try:
            stored = await self._run(op, deadline=self.timeout * 4 + len(data) / 50e6)
        except _Skip:
            return False
        if not stored:
            self.refused_late += 1  # requested before a purge of it: the fetch raced it
            return False
        self.puts += 1
        return True

    async def delete(self, key: str) -> int:
        """Drop every variant of `key`, without announcing it (raises RedisUnavailable)."""
        entries, _ = await self._apply_announced([key], soft=False)
        return entries

    async def purge(
        self,
        urls: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        tags: Iterable[str] = (),
        all: bool = False,
        soft: bool = False,
        announce: bool = True,
    ) -> int:
        """Drop (or soft: mark invalidated) every variant of the matching keys; returns how
        many live entries were affected. Same patterns as `MemoryTier.purge`.

        Always bumps ``P:purge-gen`` and, with `announce`, publishes the purge on the bus
        in the same transaction. Raises RedisUnavailable when Redis cannot be reached and
        ValueError for a malformed prefix.
        """
        entries, _ = await self.purge_announced(urls, prefixes, tags, all, soft, announce)
        return entries

    async def purge_announced(
        self,
        urls: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        tags: Iterable[str] = (),
        all: bool = False,
        soft: bool = False,
        announce: bool = True,
    ) -> tuple[int, Announced]:
        """`purge`, also answering the purge's generation and how many bus subscribers
        received the announcement (0 without `announce`)."""
        urls, prefixes, tags = list(urls), list(prefixes), list(tags)
        patterns = [PurgePattern.parse(p) for p in prefixes]
        keys = await self._resolve(urls, patterns, tags, all)
        now = self._clock()
        message = {
            "type": "purge",
            "urls": urls,
            "prefixes": prefixes,
            "tags": tags,
            "all": all,
            "soft": soft,
            "at": now,
        }
        drop_tags = [] if soft else [self._tag(t) for t in tags]
        tombs = [self._tag_tomb(t) for t in tags] + ([self._all_tomb()] if all else [])
        tombs = [] if soft or not self.refuse_late else tombs
        return await self._apply_announced(
            sorted(keys), soft, drop_tags, message if announce else None, tombs, now
        )

    async def _resolve(
        self, urls: list[str], patterns: list[PurgePattern], tags: list[str], all: bool
    ) -> set[str]:
        async def op(r: Redis) -> set[str]:
            if all:
                return {_text(m) async for m, _ in r.zscan_iter(self._keys, count=1000)}
            found = set(urls)
            for tag in tags:
                found |= {_text(m) for m in await r.smembers(self._tag(tag))}
            for p in patterns:
                found |= await self._match(r, p)
            return found

        try:
            return await self._run(op, deadline=max(5.0, self.timeout * 4))
        except _Skip as exc:
            raise RedisUnavailable(f"redis tier {self.node}: Redis is unavailable") from exc

    async def _match(self, r: Redis, p: PurgePattern) -> set[str]:
        by_path = p.kind in ("path", "glob")
        zset = self._paths if by_path else self._keys
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
        tombstones: list[str] | None = None,
        at: float | None = None,
    ) -> tuple[int, Announced]:
        now = repr(self._clock() if at is None else at)
        obj_prefix = f"{self.prefix}:obj:"
        tomb_prefix = self._tomb_prefix()
        tomb_ms = TOMBSTONE_MS if self.refuse_late else 0

        async def op(r: Redis) -> tuple[int, Announced]:
            pipe = r.pipeline(transaction=True)
            chunks = [keys[i : i + 500] for i in range(0, len(keys), 500)]
            for chunk in chunks:
                await self._purge(
                    keys=[self._keys, self._paths, self._exp],
                    args=["1" if soft else "0", now, obj_prefix, tomb_prefix, tomb_ms, *chunk],
                    client=pipe,
                )
            if drop:
                pipe.delete(*drop)
            for tomb in tombstones or ():
                pipe.set(tomb, now, px=TOMBSTONE_MS)
            if message is not None:
                payload = encode_message(message, self.node)
                await self._publish(
                    keys=[generation_key(self.prefix)],
                    args=[channel_name(self.prefix), payload],
                    client=pipe,
                )
            else:
                pipe.incr(generation_key(self.prefix))
            results = await pipe.execute()
            entries = sum(int(n) for n in results[: len(chunks)])
            return entries, Announced.from_script(results[-1])

        try:
            return await self._run(op, deadline=max(5.0, self.timeout * 4))
        except _Skip as exc:
            raise RedisUnavailable(f"redis tier {self.node}: Redis is unavailable") from exc

    async def purge_generation(self) -> int:
        """The current purge generation (raises RedisUnavailable)."""
        try:
            raw = await self._run(lambda r: r.get(generation_key(self.prefix)))
        except _Skip as exc:
            raise RedisUnavailable(f"redis tier {self.node}: Redis is unavailable") from exc
        return int(raw or 0)

    async def sweep(self, limit: int = 1000) -> int:
        """Drop from the indexes up to `limit` keys whose hash has expired; returns how many."""
        args: list[str | int] = [repr(self._clock()), limit, f"{self.prefix}:obj:"]
        keys = [self._keys, self._paths, self._exp]
        try:
            n = await self._run(lambda r: self._sweep(keys=keys, args=args, client=r))
        except _Skip:
            return 0
        return int(n)

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
            n = await self._run(lambda r: self._unlock(keys=[name], args=[token], client=r))
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

        async def probe(r: Redis) -> Any:
            pipe = r.pipeline(transaction=False)
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
