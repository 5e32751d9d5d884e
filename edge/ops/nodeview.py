"""The whole node's numbers, though each request to `/_edge/` reaches one worker only.

With `--workers N`, the kernel hands each connection to one of N processes, each with its
own `Stats`, `ConnectionGuard` and `Observer`. So every worker publishes a snapshot of its
counters once a second (`PUBLISH_SECONDS`), and the worker that answers `/_edge/stats`,
`/_edge/metrics` or the dashboard sums the snapshots of every live worker (`merge`), with
its own taken fresh at that moment.

Where the snapshots live (`WorkerBoard`): one small JSON file per worker process,
``<node tier directory>/workers/<pid>.json``, replaced atomically (write, then
`os.replace`), so a reader sees a whole snapshot or the previous one. The node tier's
directory is the one place every worker of a node already shares (under ``/dev/shm`` for
a tier in memory); the files are apart from its LMDB environment, which stays the cache's.
A file older than `STALE_SECONDS` is a worker that is gone: it is left out of the sums
and deleted. When the node tier is off there is nothing shared: the numbers are the
answering worker's own (run one worker then, as `edge serve` does by default).

The history (`History`): each worker appends the node-wide sums once a second to a ring
of `HISTORY_SECONDS` samples; `/_edge/history` turns it into per-second rates (requests,
hits, misses, bytes, origin fetches and errors, collapsed) for the dashboard's charts.
A counter that went down (a worker replaced, its numbers gone) gives 0 for that second.

Across nodes (`Presence`): with Redis on, each node writes a short summary every
`PRESENCE_SECONDS` under ``{prefix}:node:{name}`` (expiring) and its name in the sorted
set ``{prefix}:nodes``; `nodes()` lists those seen in the last `PRESENCE_TTL` seconds.
The summary carries the purge generation the node's workers applied and how many purge
acknowledgements they sent; the last purge taken anywhere, with its acknowledgements,
is kept under ``{prefix}:last-purge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from edge.base.observe import TOP_PUBLISH
from edge.base.shutdown import cancel_all

if TYPE_CHECKING:
    from edge.engine.engine import Engine
    from edge.store.redis_conn import Client

log = logging.getLogger("edge.ops.nodeview")

PUBLISH_SECONDS = 1.0
STALE_SECONDS = 5.0
HISTORY_SECONDS = 600
PRESENCE_SECONDS = 2.0
PRESENCE_TTL = 15
BOARD_DIR = "workers"

Snapshot = dict[str, Any]


class WorkerBoard:
    """The per-worker snapshot files of one node (see the module docstring).
    `directory=None`: no sharing (the node tier is off); `read` returns nothing."""

    def __init__(self, directory: str | None, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock

    @classmethod
    def for_node_tier(cls, node_path: str | None) -> WorkerBoard:
        return cls(None if node_path is None else os.path.join(node_path, BOARD_DIR))

    def _file(self, pid: int) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"{pid}.json")

    def publish(self, snapshot: Snapshot) -> None:
        """Replace this worker's file with `snapshot` (which must carry `pid`)."""
        if self.directory is None:
            return
        final = self._file(int(snapshot["pid"]))
        tmp = final + ".tmp"
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        for attempt in (1, 2):
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, final)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
                os.makedirs(self.directory, exist_ok=True)

    def read(self, exclude_pid: int | None = None) -> list[Snapshot]:
        """The snapshots of the live workers (fresher than STALE_SECONDS), by pid; stale
        files are deleted."""
        if self.directory is None:
            return []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        now = self._clock()
        out = []
        for name in sorted(names):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as f:
                    snap = json.loads(f.read())
            except (OSError, ValueError):
                continue
            if not isinstance(snap, dict) or "pid" not in snap:
                continue
            if now - float(snap.get("at", 0)) > STALE_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            if snap["pid"] != exclude_pid:
                out.append(snap)
        return out

    def withdraw(self, pid: int) -> None:
        if self.directory is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._file(pid))

    @staticmethod
    def remove(node_path: str) -> None:
        """Delete the board of a node tier directory (before `NodeTier.remove`)."""
        shutil.rmtree(os.path.join(node_path, BOARD_DIR), ignore_errors=True)


# -- sums ---------------------------------------------------------------------------------


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Sum `other` into `into`: numbers add, dicts recurse, lists of numbers add by index."""
    for k, v in other.items():
        if isinstance(v, bool):
            into.setdefault(k, v)
        elif isinstance(v, int | float):
            into[k] = into.get(k, 0) + v
        elif isinstance(v, dict):
            _add(into.setdefault(k, {}), v)
        elif isinstance(v, list) and all(isinstance(x, int | float) for x in v):
            mine = into.setdefault(k, [0] * len(v))
            if len(mine) == len(v):
                into[k] = [a + b for a, b in zip(mine, v, strict=True)]


def _top(lists: Iterable[list[list[Any]]], n: int = TOP_PUBLISH) -> list[list[Any]]:
    total: Counter[str] = Counter()
    for rows in lists:
        for url, count in rows:
            total[url] += count
    return [[u, c] for u, c in total.most_common(n)]


def hit_ratio(results: dict[str, int]) -> float:
    hits = results.get("HIT", 0) + results.get("STALE", 0) + results.get("REVALIDATED", 0)
    lookups = hits + results.get("MISS", 0) + results.get("EXPIRED", 0)
    return round(hits / lookups, 4) if lookups else 0.0


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """The node-wide view of worker snapshots: counters summed (the hit ratio recomputed
    from the sums, the uptime the longest), latency buckets added, top URLs merged."""
    counters: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    connections: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    bus: dict[str, Any] = {}
    images: dict[str, Any] = {}  # conversions (edge.engine.images)
    for snap in snapshots:
        c = dict(snap.get("counters", {}))
        c.pop("hit_ratio", None)
        c.pop("uptime_seconds", None)
        _add(counters, c)
        _add(latency, snap.get("latency", {}))
        _add(connections, snap.get("connections", {}))
        _add(kept, snap.get("kept", {}))
        _add(images, snap.get("images", {}))
    if snapshots:
        counters["hit_ratio"] = hit_ratio(counters.get("results", {}))
        counters["uptime_seconds"] = max(
            float(s.get("counters", {}).get("uptime_seconds", 0)) for s in snapshots
        )
    gens = [s["bus"]["applied_generation"] for s in snapshots if s.get("bus")]
    if gens:
        known = [g for g in gens if g is not None]
        bus = {
            # the node has applied every purge up to the lowest of its workers' generations
            "applied_generation": min(known) if len(known) == len(gens) else None,
            "acks_sent": sum(int(s["bus"].get("acks_sent", 0)) for s in snapshots if s.get("bus")),
        }
    return {
        "counters": counters,
        "latency": latency,
        "connections": connections,
        "kept": kept,
        "images": images,
        "bus": bus or None,
        "top_hits": _top(s.get("top_hits", []) for s in snapshots),
        "top_bytes": _top(s.get("top_bytes", []) for s in snapshots),
        "workers": len(snapshots),
    }


def worker_row(snap: Snapshot) -> dict[str, Any]:
    """One line of the per-worker table of /_edge/stats."""
    c = snap.get("counters", {})
    return {
        "pid": snap.get("pid"),
        "age_seconds": round(max(0.0, time.time() - float(snap.get("at", 0))), 2),
        "uptime_seconds": c.get("uptime_seconds"),
        "requests": c.get("requests", 0),
        "hits": c.get("hits", 0),
        "misses": c.get("misses", 0),
        "hit_ratio": c.get("hit_ratio", 0.0),
        "bytes_served": c.get("bytes_served", 0),
        "origin_fetches": c.get("origin_fetches", 0),
        "open_connections": snap.get("connections", {}).get("open", 0),
    }


# -- history ------------------------------------------------------------------------------

SERIES = ("requests", "hits", "misses", "bytes", "origin_fetches", "origin_errors", "collapsed")


def sample_of(merged: Snapshot, t: float) -> dict[str, float]:
    c = merged["counters"]
    return {
        "t": round(t, 3),
        "requests": c.get("requests", 0),
        "hits": c.get("hits", 0),
        "misses": c.get("misses", 0),
        "bytes": c.get("bytes_served", 0),
        "origin_fetches": c.get("origin_fetches", 0),
        "origin_errors": sum(c.get("origin_errors", {}).values()),
        "collapsed": c.get("collapsed", 0),
    }


class History:
    """A ring of cumulative node-wide samples, one a second; `rates()` turns consecutive
    samples into per-second rates (each row: the time `t` it ends at, the `seconds` it
    spans, and a rate per series)."""

    def __init__(self, seconds: int = HISTORY_SECONDS) -> None:
        self.samples: deque[dict[str, float]] = deque(maxlen=seconds + 1)

    def add(self, sample: dict[str, float]) -> None:
        self.samples.append(sample)

    def rates(self, seconds: int | None = None) -> list[dict[str, float]]:
        samples = list(self.samples)
        if seconds is not None:
            samples = samples[-(seconds + 1) :]
        out = []
        for prev, cur in pairwise(samples):
            dt = cur["t"] - prev["t"]
            if dt <= 0:
                continue
            row: dict[str, float] = {"t": cur["t"], "seconds": round(dt, 3)}
            for name in SERIES:
                row[name] = round(max(0.0, cur[name] - prev[name]) / dt, 3)
            looked = row["hits"] + row["misses"]
            row["hit_ratio"] = round(row["hits"] / looked, 4) if looked else 0.0
            out.append(row)
        return out


# -- one worker's view of its node --------------------------------------------------------


def local_snapshot(engine: Engine, pid: int | None = None) -> Snapshot:
    """This worker's numbers now, as it publishes them."""
    engine.collect_hits()
    counters = engine.stats.as_dict({}, {})
    counters.pop("memory", None)
    counters.pop("redis", None)
    snap: Snapshot = {
        "pid": os.getpid() if pid is None else pid,
        "at": time.time(),
        "counters": counters,
        "connections": engine.guard.as_dict(),
        "kept": engine.ledger.as_dict(),
        "bus": None,
    }
    bus = engine.tiers.bus
    if bus is not None:
        snap["bus"] = {"applied_generation": bus.applied_generation, "acks_sent": bus.acks_sent}
    snap.update(engine.observer.snapshot())
    snap["images"] = engine.images.snapshot()  # conversions (edge.engine.images)
    return snap


# One hash tag: the MGET of every node's row stays in one slot of a Redis Cluster.
def _nodes_key(prefix: str) -> str:
    return f"{prefix}:nodes:{{{prefix}:nodes}}"


def _node_key(prefix: str, node: str) -> str:
    return f"{prefix}:node:{{{prefix}:nodes}}:{node}"


def _last_purge_key(prefix: str) -> str:
    return f"{prefix}:last-purge"


class NodeView:
    """A worker's window on its whole node (and, with Redis, on the other nodes)."""

    def __init__(
        self,
        engine: Engine,
        board: WorkerBoard,
        redis: Client | None = None,
        prefix: str = "edge",
    ) -> None:
        self.engine = engine
        self.board = board
        self.redis = redis
        self.prefix = prefix
        self.pid = os.getpid()
        self.history = History()
        self.last_purge: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    # snapshots

    def local(self) -> Snapshot:
        return local_snapshot(self.engine, self.pid)

    def workers(self) -> list[Snapshot]:
        """Every live worker's snapshot, this one's taken now, ordered by pid."""
        own = self.local()
        others = self.board.read(exclude_pid=self.pid)
        return sorted([own, *others], key=lambda s: int(s["pid"]))

    def node(self) -> tuple[Snapshot, list[Snapshot]]:
        snaps = self.workers()
        return merge(snaps), snaps

    def tick(self) -> Snapshot:
        """Publish this worker's snapshot and record the node's sums in the history."""
        own = self.local()
        try:
            self.board.publish(own)
        except OSError as exc:
            log.warning("cannot publish this worker's counters: %s", exc)
        merged = merge([own, *self.board.read(exclude_pid=self.pid)])
        self.history.add(sample_of(merged, own["at"]))
        return merged

    # the loop

    def start(self) -> None:
        self.tick()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nodeview")

    async def _run(self) -> None:
        next_presence = 0.0
        while True:
            await asyncio.sleep(PUBLISH_SECONDS - (time.time() % PUBLISH_SECONDS))
            try:
                merged = self.tick()
                if self.redis is not None and time.monotonic() >= next_presence:
                    next_presence = time.monotonic() + PRESENCE_SECONDS
                    await self.announce(merged)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the numbers stop the node
                log.exception("node view tick failed")

    async def stop(self) -> None:
        await cancel_all((self._task, *self._writes), "node view")
        self.board.withdraw(self.pid)

    # across nodes

    def summary(self, merged: Snapshot) -> dict[str, Any]:
        c = merged["counters"]
        tiers = self.engine.tiers.stats()
        rates = self.history.rates(10)
        rps = sum(r["requests"] for r in rates) / len(rates) if rates else 0.0
        return {
            "node": self.engine.cfg.node,
            "at": time.time(),
            "workers": merged["workers"],
            "requests": c.get("requests", 0),
            "hit_ratio": c.get("hit_ratio", 0.0),
            "requests_per_second": round(rps, 2),
            "cache_bytes": tiers.get("bytes", 0),
            "cache_entries": tiers.get("entries", 0),
            "purge_generation": (merged["bus"] or {}).get("applied_generation"),
            "purge_acks_sent": (merged["bus"] or {}).get("acks_sent", 0),
            "origins": self.engine.upstream.status(),
        }

    async def announce(self, merged: Snapshot) -> None:
        if self.redis is None:
            return
        summary = self.summary(merged)
        try:
            async with asyncio.timeout(1.0):
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(
                    _node_key(self.prefix, summary["node"]),
                    json.dumps(summary),
                    ex=PRESENCE_TTL,
                )
                pipe.zadd(_nodes_key(self.prefix), {summary["node"]: summary["at"]})
                pipe.zremrangebyscore(_nodes_key(self.prefix), 0, time.time() - PRESENCE_TTL)
                await pipe.execute()
        except Exception as exc:  # RedisError, OSError, TimeoutError
            log.debug("cannot announce this node: %r", exc)

    async def nodes(self) -> dict[str, Any]:
        """The nodes sharing the Redis, and the last purge any of them took (with its
        acknowledgements). Without Redis: this node alone."""
        merged, _ = self.node()
        own = self.summary(merged)
        if self.redis is None:
            return {"redis": "off", "nodes": [own], "last_purge": self.last_purge}
        try:
            async with asyncio.timeout(1.0):
                names = await self.redis.zrangebyscore(
                    _nodes_key(self.prefix), time.time() - PRESENCE_TTL, "+inf"
                )
                keys = [
                    _node_key(self.prefix, _text(n)) for n in names if isinstance(n, bytes | str)
                ]
                raw = await self.redis.mget(keys) if keys else []
                last = await self.redis.get(_last_purge_key(self.prefix))
        except Exception as exc:  # RedisError, OSError, TimeoutError
            return {
                "redis": f"down: {exc!r}",
                "nodes": [own],
                "last_purge": self.last_purge,
            }
        rows = {own["node"]: own}
        for item in raw:
            if item is None:
                continue
            with contextlib.suppress(ValueError):
                row = json.loads(item)
                if isinstance(row, dict) and row.get("node") not in rows:
                    rows[str(row.get("node"))] = row
        last_purge = self.last_purge
        if last is not None:
            with contextlib.suppress(ValueError):
                last_purge = json.loads(last)
        return {
            "redis": "up",
            "nodes": sorted(rows.values(), key=lambda r: str(r.get("node"))),
            "last_purge": last_purge,
        }

    def record_purge(self, result: dict[str, Any]) -> None:
        """Remember a purge this worker took (the purge API's answer), for the dashboard."""
        record = {
            "at": time.time(),
            "by": self.engine.cfg.node,
            "kind": result.get("kind"),
            "soft": result.get("soft"),
            "generation": result.get("generation"),
            "memory": result.get("memory"),
            "shared": result.get("shared"),
            "acks": result.get("acks"),
            "nodes": result.get("nodes"),
            "error": result.get("error"),
        }
        self.last_purge = record
        if self.redis is None:
            return
        redis = self.redis

        async def write() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await redis.set(_last_purge_key(self.prefix), json.dumps(record), ex=86400)

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


def _text(value: bytes | str) -> str:  # redis-py answers bytes (no decode_responses)
    return value.decode() if isinstance(value, bytes) else value
