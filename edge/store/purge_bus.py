"""The purge bus: purges announced to every node over Redis pub/sub, with bounded staleness.

Every announcement goes through one Lua script that INCRs ``P:purge-gen:{P:bus}`` and
publishes on ``P:purge:{P:bus}`` the message with that generation in it, atomically, so
generations on the channel are contiguous and in order. The counter, the channel and the
acknowledgements share the hash tag ``{P:bus}``: on a Redis Cluster they are one slot, so
the script runs on one shard, and the channel is a shard channel (SPUBLISH, SSUBSCRIBE on
the shard's primary) that Redis delivers within that shard only, where a plain PUBLISH
would be copied to every node of the cluster. A stream would keep the purges for replay,
but the resync below already covers a missed generation, and one total order needs one slot
either way. After a failover of that shard the subscriber's connection drops (or Redis
sends it SUNSUBSCRIBE): it reconnects to the new primary and resyncs if the generation
moved meanwhile, as after any disconnection. On one Redis or a Sentinel set the channel is
a plain one (PUBLISH / SUBSCRIBE). A subscriber remembers the last
generation it saw (`applied_generation`) and signals a synthetic ``resync`` message to its
callback (the node should then drop its whole memory tier) when it may have missed one:

- on reconnect after any disconnection, if the generation moved meanwhile;
- on first connect, if earlier attempts failed (the node may have cached while blind);
- when a message arrives whose generation skips one;
- on the periodic check (every ``bound / 2`` seconds), if the generation stored in Redis
  is ahead of the last one seen and still is a short grace later.

While the subscriber is not in contact with Redis it cannot learn of purges at all:
`trusted()` turns False ``bound`` seconds after the last contact, so the edge can stop
serving memory hits it cannot vouch for (`Tiers.memory_get` holds back what was stored
before the last contact). What it stores while cut off is vouched for by time alone: every
``bound / 2`` seconds without trust the callback gets a synthetic ``blind`` message, and
`apply_to_memory` marks the whole memory tier stale (a soft purge: the next request
revalidates; stale-if-error may still use it), so no memory copy is served without a
revalidation more than ``bound`` seconds after a purge this node could not hear.

Acknowledgements: the publisher's script returns how many subscribers received the message
(PUBLISH's answer). Each subscriber, once the callback applied a purge, RPUSHes
``{"node", "pid", "entries"}`` to ``P:purge-ack:{P:bus}:gen`` (expiring after
`ACK_TTL`), and the node that took the purge request waits a short, bounded time for as
many acknowledgements as there were receivers (`collect_acks`), then reports them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.base.shutdown import cancel_all, close_within
from edge.config.redis_url import CLUSTER, parse_url
from edge.store.memory import MemoryTier
from edge.store.redis_conn import (
    FAILURES,
    Client,
    close_client,
    make_client,
    node_client,
    run_script,
)
from edge.store.storage import Purge, StorageUnavailable

__all__ = ["PurgeBus", "RedisUnavailable", "make_client"]

log = logging.getLogger("edge.store.purge_bus")

Message = dict[str, Any]
Callback = Callable[[Message], "int | None"]
"""Gets each bus message; returns how many entries a purge dropped (acknowledged), or None."""

# KEYS[1] = generation counter; ARGV[1] = channel, ARGV[2] = a JSON object with >= 1 member,
# ARGV[3] = PUBLISH or SPUBLISH (a cluster's shard channel, in the counter's slot).
# Returns {generation, number of subscribers that received the message}.
PUBLISH_LUA = """
local gen = redis.call('INCR', KEYS[1])
local n = redis.call(ARGV[3], ARGV[1], '{"gen":' .. gen .. ',' .. string.sub(ARGV[2], 2))
return {gen, n}
"""
PUBLISH_SHA = hashlib.sha1(PUBLISH_LUA.encode(), usedforsecurity=False).hexdigest()

# KEYS[1] = a purge's acknowledgements; ARGV: one acknowledgement, its lifetime (ms). One
# script rather than MULTI: a cluster client's transactions cost several round trips.
ACK_LUA = """
redis.call('RPUSH', KEYS[1], ARGV[1])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
ACK_SHA = hashlib.sha1(ACK_LUA.encode(), usedforsecurity=False).hexdigest()

ACK_TTL_MS = 10_000
"""How long a purge's acknowledgement list lives in Redis."""
ACK_WAIT = 0.5
"""How long the node that took a purge waits for the other nodes' acknowledgements."""


class RedisUnavailable(StorageUnavailable):
    """The shared tier or the purge bus could not reach Redis (it may be down)."""


_LOST: tuple[type[BaseException], ...] = (*FAILURES, RedisUnavailable)


def channel_name(prefix: str) -> str:
    return f"{prefix}:purge:{{{prefix}:bus}}"


def generation_key(prefix: str) -> str:
    return f"{prefix}:purge-gen:{{{prefix}:bus}}"


def ack_key(prefix: str, gen: int) -> str:
    return f"{prefix}:purge-ack:{{{prefix}:bus}}:{gen}"


def _announce_args(prefix: str, payload: str, sharded: bool) -> tuple[list[str], list[str]]:
    publish = "SPUBLISH" if sharded else "PUBLISH"
    return [generation_key(prefix)], [channel_name(prefix), payload, publish]


async def announce_on(client: Client, prefix: str, payload: str, sharded: bool) -> Any:
    """Announce `payload` (see `encode_message`): the script's answer (`Announced`)."""
    keys, args = _announce_args(prefix, payload, sharded)
    return await run_script(client, PUBLISH_LUA, PUBLISH_SHA, keys, args)


def announce_in(pipe: Any, prefix: str, payload: str, sharded: bool) -> None:
    """Queue the announcement of `payload` (see `encode_message`) into a pipeline; its
    answer is the one `Announced.from_script` reads."""
    keys, args = _announce_args(prefix, payload, sharded)
    pipe.eval(PUBLISH_LUA, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class Announced:
    """What the publishing script answered: the purge's generation, and how many
    subscribers (node processes) received it."""

    generation: int
    receivers: int

    @classmethod
    def from_script(cls, raw: object) -> Announced:
        if isinstance(raw, list | tuple) and len(raw) == 2:
            return cls(int(raw[0]), int(raw[1]))
        return cls(int(raw), 0)  # type: ignore[call-overload]


def encode_message(message: Message, node: str) -> str:
    body = {"type": "purge", "node": node, "pid": os.getpid(), **message}
    body.pop("gen", None)
    return json.dumps(body, separators=(",", ":"))


def is_own(message: Message, node: str) -> bool:
    """Whether a bus message was announced by this very process (named `node`)."""
    return message.get("node") == node and message.get("pid") == os.getpid()


def apply_to_memory(memory: MemoryTier, message: Message) -> int:
    """Apply a bus message to a memory tier: a purge as announced; a resync drops everything;
    `blind` (no contact for longer than the bound) marks everything stale (soft)."""
    kind = message.get("type")
    if kind == "resync":
        return memory.clear()
    if kind == "blind":
        return memory.purge(Purge(all=True, soft=True, remember=False))
    if kind != "purge":
        return 0
    return memory.purge(Purge.from_message(message))


class PurgeBus:
    """Publish purges to all nodes and receive them, reconnecting by itself.

    `await publish(msg)` returns the message's generation (raises RedisUnavailable);
    `start(callback)` runs `run_subscriber(callback)` as a task; `callback(message)` gets
    every message published (``type`` "purge" and whatever the publisher put in it, plus
    ``gen``, ``node`` and ``pid``), the synthetic ``{"type": "resync", "gen": g, "reason":
    r}`` and, while cut off for longer than the bound, ``{"type": "blind", "since": t}``.
    When the callback returns a number for a purge (the entries it dropped), the bus
    acknowledges the purge with it (see the module docstring).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "edge",
        node: str = "edge-1",
        bound: float = 5.0,
        timeout: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.node = node
        self.bound = bound
        self.timeout = timeout
        self.channel = channel_name(prefix)
        self._clock = clock
        self._name = f"{prefix}/{node}/bus"
        self._client = make_client(url, timeout, self._name)
        self._sharded = parse_url(url).mode == CLUSTER
        self.applied_generation: int | None = None
        self.on_connected: Callable[[int], None] | None = None
        """The last purge generation this node saw (None before the first contact)."""
        self.last_contact = 0.0
        """Epoch seconds (per `clock`) of the last successful exchange with Redis."""
        self.connected = False
        self.resyncs = 0
        self.messages = 0
        self.blinds = 0
        """Times the memory tier was marked stale for lack of contact (`blind` messages)."""
        self.acks_sent = 0
        self.ack_errors = 0
        self._last_blind = 0.0
        self._started_blind = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()

    # -- publishing and probing -----------------------------------------------------------

    async def publish(self, message: Message) -> int:
        """Announce `message` (a purge spec) to every node; returns its generation."""
        return (await self.announce(message)).generation

    async def announce(self, message: Message) -> Announced:
        """Announce `message` to every node: its generation and how many received it."""
        payload = encode_message(message, self.node)
        try:
            async with asyncio.timeout(self.timeout * 4):
                raw = await announce_on(self._client, self.prefix, payload, self._sharded)
        except FAILURES as exc:
            raise RedisUnavailable(f"purge bus: cannot publish: {exc!r}") from exc
        return Announced.from_script(raw)

    async def collect_acks(
        self, gen: int, expected: int, timeout: float = ACK_WAIT
    ) -> list[dict[str, Any]]:
        """The acknowledgements of purge `gen` (one per node process that applied it), once
        `expected` of them arrived or after `timeout` seconds, whichever comes first. Never
        raises: Redis failing here only shortens the list."""
        key = ack_key(self.prefix, gen)
        deadline = time.monotonic() + timeout
        pause = 0.0005
        raw: list[bytes | str] = []
        while True:
            try:
                async with asyncio.timeout(max(0.01, min(self.timeout * 4, timeout))):
                    raw = await self._client.lrange(key, 0, -1)
            except FAILURES:
                pass
            if len(raw) >= expected or time.monotonic() + pause > deadline:
                break
            await asyncio.sleep(pause)
            pause = min(0.002, pause * 2)  # 500 looks a second at most, for ACK_WAIT
        acks = []
        for item in raw:
            try:
                ack = json.loads(item)
            except ValueError:
                continue
            if isinstance(ack, dict):
                acks.append(ack)
        return acks

    async def purge_generation(self) -> int:
        """The current purge generation stored in Redis (raises RedisUnavailable)."""
        try:
            async with asyncio.timeout(self.timeout * 4):
                raw = await self._client.get(generation_key(self.prefix))
        except FAILURES as exc:
            raise RedisUnavailable(f"purge bus: cannot read the generation: {exc!r}") from exc
        return int(raw or 0)

    async def baseline(self) -> None:
        """Before the node serves anything (and when `applied_generation` is not known from
        a restarted disk tier): take the generation now, so that a purge announced before
        the subscription is up (a cluster client's first connection takes a while) is
        found when it is: a resync. Redis unreachable: the first subscription resyncs."""
        if self.applied_generation is None:
            try:
                self.applied_generation = await self.purge_generation()
            except RedisUnavailable:
                self._started_blind = True

    def trusted(self, now: float | None = None) -> bool:
        """True while the subscriber's last contact with Redis is at most `bound` seconds old.

        A purge published after that contact is applied (or signalled by a resync) once
        the subscriber is back; until then it may be missed, so a memory entry served while
        `trusted()` is served at most `bound` seconds after any purge of it. A short blip
        (a reconnect) does not make the node distrust its memory.
        """
        if now is None:
            now = self._clock()
        return self.last_contact > 0 and now - self.last_contact <= self.bound

    # -- subscribing ----------------------------------------------------------------------

    def start(self, callback: Callback) -> asyncio.Task[None]:
        """Run the subscriber in the background (see `run_subscriber`), and the watchdog that
        sends `blind` messages while the subscriber is out of contact for too long."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_subscriber(callback), name="purge-bus")
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(callback), name="purge-bus-watch")
        return self._task

    async def _watch(self, callback: Callback) -> None:
        """The moment `trusted()` turns False, and every ``bound / 2`` seconds while it
        stays False: a ``blind`` message. So a memory copy stored before a purge this node
        could not hear is revalidated at most ``bound`` seconds after that purge."""
        blind = False
        started = self._clock()
        while not self._closed:
            now = self._clock()
            since = self.last_contact or started  # never connected yet: count from the start
            if now - since <= self.bound:
                if blind:
                    log.warning("purge bus: in contact again; memory trusted")
                    blind = False
                # wake up when trust would end, unless contact is refreshed meanwhile
                await asyncio.sleep(max(0.001, since + self.bound - now + 0.001))
                continue
            if now - self._last_blind >= self.bound / 2:
                if not blind:
                    log.warning(
                        "purge bus: no contact with Redis for more than %.1f s: memory "
                        "copies are revalidated every %.1f s until it is back",
                        self.bound,
                        self.bound / 2,
                    )
                    blind = True
                self._last_blind = now
                self.blinds += 1
                self._call(callback, {"type": "blind", "since": self.last_contact})
            await asyncio.sleep(max(0.001, self._last_blind + self.bound / 2 - self._clock()))

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the subscriber is subscribed; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def run_subscriber(self, callback: Callback) -> None:
        """Receive purges forever; reconnect after failures (back-off up to 1 s) and signal
        a resync when a purge may have been missed. Returns after `close()`."""
        failed_before = self._started_blind
        down_logged = False
        backoff = 0.05
        while not self._closed:
            pubsub: Any = None
            node: Any = None
            try:
                if self._sharded:
                    # the primary of the channel's slot now (the first command through the
                    # cluster client finds it), on a connection of its own
                    await self.purge_generation()
                    node = node_client(self._client, self.channel, self.timeout, self._name)
                pubsub = (node or self._client).pubsub()
                await self._subscribe(pubsub)
                gen = await self.purge_generation()
                self._contact()
                if self.applied_generation is None:
                    if failed_before:
                        self._resync(callback, gen, "first-connect")
                elif gen != self.applied_generation:
                    self._resync(callback, gen, "reconnect")
                self.applied_generation = gen
                if self.on_connected is not None:
                    self.on_connected(gen)  # the generation this node is in step with now
                self.connected = True
                self._connected.set()
                backoff = 0.05
                if down_logged:
                    log.warning("purge bus: connected again to Redis (generation %d)", gen)
                    down_logged = False
                await self._listen(pubsub, callback)
            except _LOST as exc:
                failed_before = True
                if not down_logged:
                    log.warning("purge bus: lost Redis (%r); reconnecting in the background", exc)
                    down_logged = True
            finally:
                self.connected = False
                self._connected.clear()
                if pubsub is not None:
                    await close_pubsub(pubsub)
                if node is not None:
                    await close_within(node.aclose(), "purge bus: shard client")
            if not self._closed:
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)

    async def _subscribe(self, pubsub: Any) -> None:
        async with asyncio.timeout(self.timeout * 4):
            if self._sharded:
                await pubsub.ssubscribe(self.channel)
            else:
                await pubsub.subscribe(self.channel)
            while True:  # the confirmation: from here on no publication is missed
                msg = await pubsub.get_message(timeout=self.timeout)
                if msg is not None and msg["type"] in ("subscribe", "ssubscribe"):
                    return

    async def _listen(self, pubsub: Any, callback: Callback) -> None:
        check_every = self.bound / 2
        grace = min(0.5, check_every / 2)
        next_check = time.monotonic() + check_every
        pending: int | None = None
        while not self._closed:
            wait = max(0.0, next_check - time.monotonic())
            msg = await pubsub.get_message(timeout=wait)
            if msg is not None and msg["type"] in ("message", "smessage"):
                self._contact()
                self._received(msg["data"], callback)
            elif msg is not None and msg["type"] in ("unsubscribe", "sunsubscribe"):
                # the slot moved to another primary (a failover): subscribe there
                raise RedisUnavailable("purge bus: the shard channel moved")
            if time.monotonic() < next_check:
                continue
            gen = await self.purge_generation()
            self._contact()
            applied = self.applied_generation or 0
            if gen < applied:  # the counter was lost (Redis flushed or replaced)
                self._resync(callback, gen, "reset")
                self.applied_generation = gen
                pending = None
            elif gen > applied and pending is None:
                pending = gen  # its message may be in flight: look again after a grace
                next_check = time.monotonic() + grace
                continue
            if pending is not None and applied < pending:
                self._resync(callback, gen, "generation")
                self.applied_generation = gen
            pending = None
            next_check = time.monotonic() + check_every

    def _received(self, data: bytes, callback: Callback) -> None:
        try:
            message = json.loads(data)
            gen = int(message["gen"])
        except (ValueError, KeyError, TypeError):
            log.warning("purge bus: ignoring a malformed message %.200r", data)
            return
        self.messages += 1
        applied = self.applied_generation
        self._call(callback, message)
        if applied is not None and gen > applied + 1:
            self._resync(callback, gen, "gap")
        self.applied_generation = max(gen, applied or 0)

    def _resync(self, callback: Callback, gen: int, reason: str) -> None:
        self.resyncs += 1
        log.warning(
            "purge bus: purges may have been missed (%s); resync at generation %d", reason, gen
        )
        self._call(callback, {"type": "resync", "gen": gen, "reason": reason})

    def _call(self, callback: Callback, message: Message) -> None:
        try:
            entries = callback(message)
        except Exception:
            log.exception("purge bus: the callback failed on %r", message)
            entries = -1  # acknowledged as failed: the publisher reports it
        if message.get("type") == "purge" and entries is not None and "gen" in message:
            task = asyncio.get_running_loop().create_task(self._ack(int(message["gen"]), entries))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _ack(self, gen: int, entries: int) -> None:
        ack = {"node": self.node, "pid": os.getpid(), "entries": entries}
        if entries < 0:
            ack["error"] = "the purge failed on this node"
        key = ack_key(self.prefix, gen)
        try:
            async with asyncio.timeout(self.timeout * 4):
                body = json.dumps(ack, separators=(",", ":"))
                await run_script(self._client, ACK_LUA, ACK_SHA, [key], [body, ACK_TTL_MS])
            self.acks_sent += 1
        except FAILURES as exc:
            self.ack_errors += 1
            log.debug("purge bus: cannot acknowledge purge %d: %r", gen, exc)

    def _contact(self) -> None:
        self.last_contact = self._clock()

    async def close(self) -> None:
        self._closed = True
        await cancel_all((self._task, self._watchdog, *self._acks), "purge bus")
        await close_client(self._client, "purge bus: Redis client")


async def close_pubsub(pubsub: Any) -> None:
    """Close a subscription; when redis-py's close stalls (redis/redis-py#3941), drop its
    connection without waiting for the socket to close."""
    if not await close_within(pubsub.aclose(), "purge bus: subscription", seconds=1.0):
        connection = getattr(pubsub, "connection", None)
        if connection is not None:
            await close_within(connection.disconnect(nowait=True), "purge bus: connection")
