"""The node tier: one cache shared by every worker process of an edge node, in LMDB.

Every worker opens the same LMDB environment (a directory: under ``/dev/shm`` for a tier in
memory, or on disk for one that survives a restart). LMDB is memory-mapped: a read is a
lookup in shared pages, readers never block, and one writer at a time commits (the writer
lock is a robust mutex in ``lock.mdb``, recovered when its holder dies). Everything here is
synchronous: a read costs a few microseconds, so it runs on the event loop.

The interface is `MemoryTier`'s (same `get`/`put`/`purge`/`stats` semantics, the same
`PurgePattern` kinds), plus what sharing between processes needs:

- `generation`: a purge generation shared by the processes of the node, moved by every
  purge, invalidation, delete and clear (never by a plain put, an eviction or an expiry).
  Reading it costs about 0.12 µs (timeit, this machine: a property reading a 64-bit
  counter with `struct.unpack_from` from a small mmap'd file; an LMDB read transaction
  would cost ~1 µs). A per-worker hot copy in front of this tier reads it on every hit; when
  it moved, the hot copy re-checks what it holds with `valid(entry)` (one LMDB read), or
  drops it. Read the generation *before* re-checking: the counter is written after the
  purge's commit and before `purge()` returns, so once a purge has been answered every
  worker sees the moved generation on its next hit, and a re-check that follows it sees
  the purge's effect.
- `try_lock`/`unlock`/`wait_for_fill`: a fill lock per key, to collapse misses across the
  workers of the node (across nodes, the Redis tier's lock). A lock whose holder process
  died (same host: pid and process start time recorded, checked in ``/proc``) or whose
  ttl passed is taken over.
- `hold`/`drop_hold`/`held_elsewhere`: a key about to be stored by this process (a small
  miss is stored the moment after its answer is written): a byte-range lock on the
  ``holds`` file at the key's hash (0.3 µs a call; the kernel drops it when the process
  dies). Another worker asked for the key meanwhile waits for the store (`Tiers.wait_held`).
- `prepare(path, node_name)`, run once by the supervisor before it forks workers: checks
  the format version and the files (a corrupt or older tier is deleted and started empty,
  with a warning, never a crash), records which node owns the tier and refuses a path owned
  by another live node.

Layout (named LMDB databases of one environment; ``lk`` is the key's UTF-8 bytes, or for a
key longer than 400 bytes its first 360 bytes, ``0xff`` and a SHA-256 prefix):

========  ==========================  ===================================================
db        key                         value
========  ==========================  ===================================================
meta      ``format``, ``owner``,      format version; owner JSON (node, host, pid,
          ``totals``                  heartbeat); counters (bytes, keys, entries, ...,
                                      sequence, LRU tick, generation, tags)
slots     lk                          the key and its variants (variant id, body
                                      sequence number, keep-until, size, request and
                                      response times, invalidated, tags): `_dump_slot`
bodies    sequence (u64 BE)           `Entry.dumps()` of one stored variant (immutable;
                                      a soft purge marks the slot, it never rewrites this)
atime     lk                          the key's LRU tick (u64 BE)
lru       tick (u64 BE)               lk: walked from the oldest to evict
exp       keep-until (f64 BE), seq    lk: walked from the earliest to expire
tags      tag (dupsort)               lk of every key one of whose variants has the tag
purged    ``a``/``k``+lk/``t``+tag,   time of the last hard purge of everything / a key / a
          ``p``                       tag; JSON list of recent patterns (refuse_late)
locks     lk                          JSON fill lock: token, pid, start time, host, expiry
========  ==========================  ===================================================

LRU: hits never open a write transaction. `get` (and `touch`, for hits the engine served
from its hot copy) records the key in process memory; `touch_flush()` (the engine calls it
about once a second; `put` does it too, in its own transaction) gives each recorded key a
new tick from the node-wide counter, in this process's access order. Eviction walks the
``lru`` index from the oldest tick until the stored bytes fit `max_bytes`. The order is
therefore approximate to the flush period: a key touched in one worker since the last
flush counts as older than it is until that worker flushes.

Expiry: `get` never returns a variant past its keep-until, but removes nothing (it does
not write); `put`, `touch_flush` and `expire` drop expired variants through the ``exp``
index (and count them in ``expirations``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import mmap
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import lmdb

from edge.cache.entry import MAGIC, Entry, EntryFormatError
from edge.store.fill_wait import SharedPollers
from edge.store.memory import MiB
from edge.store.storage import PURGE_MEMORY_SECONDS, Built, Place, Purge, PurgePattern

if TYPE_CHECKING:
    from edge.config.settings import EdgeConfig
    from edge.store.locks import NodeLocks

log = logging.getLogger("edge.store.node")

FORMAT_VERSION = 2
"""Version of this module's layout, recorded in ``meta/format``. Another value (an older
release) makes `prepare` start the tier empty. 2: slot records in binary, not JSON."""
FORMAT_RECORD = b"woodytoys-edge node tier %d" % FORMAT_VERSION

OWNER_STALE_SECONDS = 10.0
"""An owner whose heartbeat is older than this is gone: another node may take the tier (a
node that stops cleanly releases it at once: `release`)."""
HEARTBEAT_SECONDS = 1.0
"""How often the engine should call `heartbeat()` (well under OWNER_STALE_SECONDS)."""

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
GENERATION_FILE = "generation"
HOLDS_FILE = "holds"  # empty: only byte-range locks at keys' hashes (`NodeTier.hold`)
_FILES = (DATA_FILE, LOCK_FILE, GENERATION_FILE, HOLDS_FILE)
_FLOCK = struct.Struct("@hhqqi4x")  # struct flock (Linux, 64-bit): type, whence, start, len, pid

_GEN_MAGIC = b"WTGEN01\n"
_GEN_SIZE = 16  # magic, then the counter (u64, native order) at offset 8
_U64 = struct.Struct(">Q")
_GEN = struct.Struct("@Q")
"""The published generation: native order and size, because only the native struct codes
read and write the 8 bytes in one load (`memcpy` of a constant size); the standard ones go
byte by byte, and a reader could see a torn value. The file never leaves the host."""
_EXP = struct.Struct(">dQ")
_F64 = struct.Struct(">d")
_TOTALS = struct.Struct("<9q")
_ENTRY_LEN = struct.Struct(">I")

_KEY_MAX = 400  # LMDB keys (and dupsort values) are at most 511 bytes
_KEY_CUT = 360
_TOUCH_MAX = 65536  # pending touches kept between flushes (the oldest are dropped)
_EXPIRE_BATCH = 1000  # keys expired per write transaction
_MAX_READERS = 256
_MAX_DBS = 16
_DBS = ("meta", "slots", "bodies", "atime", "lru", "exp", "tags", "purged", "locks")

# Indexes in a variant record (a list, as `_slot` reads it).
_VID, _SEQ, _KU, _SIZE, _RQ, _RS, _INV, _TAGS = range(8)
# A slot record (read on every get, written on every put: JSON cost 5 times as much, most
# of it in writing the floats): the key's length and the number of variants, the key, then
# per variant its numbers, the length of its id and its number of tags, its id, and each
# tag's length and text.
_SLOT_HEAD = struct.Struct("<II")
_SLOT_VAR = struct.Struct("<QdQddBII")  # seq, keep-until, size, rq, rs, invalidated, id, tags
_SLOT_TAG = struct.Struct("<I")

_OPEN: weakref.WeakSet[NodeTier] = weakref.WeakSet()
_T = TypeVar("_T")


class NodeStats(TypedDict):
    """`MemoryTier.stats()`'s keys (node-wide counters), plus where the tier lives."""

    keys: int
    entries: int
    bytes: int
    max_bytes: int
    max_object_bytes: int
    evictions: int
    expirations: int
    tags: int
    path: str
    persistent: bool


class NodeTierError(RuntimeError):
    """The node tier cannot be used: owned by another node, inherited across fork, closed,
    or its files are from an incompatible version (run `NodeTier.prepare`)."""


@dataclasses.dataclass(slots=True)
class _Totals:
    """Node-wide counters, one record rewritten by every write transaction."""

    size: int = 0
    keys: int = 0
    entries: int = 0
    evictions: int = 0
    expirations: int = 0
    seq: int = 0
    tick: int = 0
    generation: int = 0
    tags: int = 0

    @classmethod
    def load(cls, raw: bytes | memoryview | None) -> _Totals:
        if raw is None or len(raw) != _TOTALS.size:
            return cls()
        return cls(*_TOTALS.unpack(raw))

    def dump(self) -> bytes:
        return _TOTALS.pack(
            self.size,
            self.keys,
            self.entries,
            self.evictions,
            self.expirations,
            self.seq,
            self.tick,
            self.generation,
            self.tags,
        )


def _hold_offset(key: str) -> int:
    """Where `key`'s hold lies in the holds file (a collision only makes a waiter wait for
    another key's store)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def _lkey(text: str) -> bytes:
    """The LMDB key of a primary key or tag (prefix-ordered; long ones cut and hashed)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= _KEY_MAX:
        return raw
    # 0xff never occurs in UTF-8, so a cut key never equals a whole one.
    return raw[:_KEY_CUT] + b"\xff" + hashlib.sha256(raw).digest()[:20]


def _unlkey(raw: bytes) -> str | None:
    """The primary key of an LMDB key, or None when it was cut (read the slot record)."""
    if b"\xff" in raw:
        return None
    return raw.decode("utf-8", "surrogatepass")


def _map_size(max_bytes: int, max_object_bytes: int) -> int:
    """The LMDB map (the largest the data file may grow): the budget, plus LMDB's own
    overhead (B-tree pages at worst half full for small values, whole pages for large ones)
    and room for free pages that readers of older snapshots still pin, plus two of the
    largest objects so one can be written while the one it replaces is still referenced."""
    size = 2 * max_bytes + 2 * max_object_bytes + 32 * MiB
    return -(-size // MiB) * MiB


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process from ``/proc``, None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ("?", -1)
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return (fields[0].decode(), int(fields[19]))
    except (IndexError, ValueError):
        return ("?", -1)


def _alive(pid: int, start: int) -> bool:
    """Whether the process that recorded (pid, start) on this host still runs."""
    info = _proc_start(pid)
    if info is None:
        return False
    state, started = info
    if state in ("Z", "X"):
        return False  # a zombie: dead, not yet reaped
    if started >= 0 and start >= 0:
        return started == start  # a different start time: the pid was reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host_id() -> str:
    """This host as lock records name it: the hostname and the pid namespace (pids of a lock
    are checked only where they mean the same process)."""
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{socket.gethostname()}/{ns}"


def _my_start() -> int:
    info = _proc_start(os.getpid())
    return info[1] if info else -1


def _on_tmpfs(path: str) -> bool:
    """Whether `path` lives on a memory file system (tmpfs, ramfs)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        return real.startswith("/dev/shm/")
    return kind in ("tmpfs", "ramfs")


def _memory_dir() -> str:
    base = "/dev/shm"
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        base = tempfile.gettempdir()
    return tempfile.mkdtemp(prefix="woody-node-", dir=base)


def _load_entry(data: bytes | memoryview) -> Entry:
    """`Entry.loads` on a buffer of the map, copying the body once (not twice)."""
    view = memoryview(data)
    start = len(MAGIC) + _ENTRY_LEN.size
    if len(view) < start:
        raise EntryFormatError("not an edge entry")
    (n,) = _ENTRY_LEN.unpack_from(view, len(MAGIC))
    entry = Entry.loads(bytes(view[: start + n]))  # validates the head; the body is empty
    entry.body = bytes(view[start + n :])
    return entry


def _after_fork_in_child() -> None:
    """A forked child must not use its parent's environments (LMDB's rule). Close them, so
    the child can open its own (py-lmdb refuses a second open of the same files)."""
    for tier in list(_OPEN):
        tier._abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class NodeTier:
    """The node tier (see the module docstring). Synchronous, one instance per process.

    `NodeTier(path, ...)` opens the environment at `path` in this process: open it in each
    worker after the fork (an instance inherited across fork is closed in the child, and
    raises `NodeTierError`). `path=None`: a fresh directory under ``/dev/shm`` (or the
    temporary directory when there is none), for this process only; to share a tier in
    memory between workers, let the supervisor call ``NodeTier.prepare(None, node)`` and
    pass the returned path to every worker. `NodeTier.remove(path)` deletes it.

    The LRU order is approximate to the `touch_flush` period (about a second): hits are
    recorded in process memory and written in batches, never by the hit itself.

    `map_size` overrides the LMDB map (default: from `max_bytes`, see `_map_size`). When the
    map fills anyway (free-page fragmentation), a write evicts the least recently used keys
    and retries; a put that still cannot fit returns False.

    Measured on this machine (2 shared cores, `timeit`, best of 5, a tier of 10,000 keys;
    the same on /dev/shm and on ext4): `generation` 0.12 µs (`generation_reader()` 0.05 µs);
    `touch` 0.1 µs; a miss 1 µs; `valid` 4 µs; `get` of a 1 KB entry 11 µs, of a 5 MB entry
    0.1 ms (one copy of the body into bytes); `put` of 1 KB 23 µs, of 5 MB 0.3 ms; a URL
    purge 11 µs; a soft tag purge of 100 keys 0.9 ms; a glob purge scanning 10,000 keys
    22 ms; `touch_flush` of 1,000 keys 2 ms; `try_lock` + `unlock` 11 µs.

    A `LocalStorage` of `edge.store.storage`, `Coherent` (its purge generation), `Locking`
    (its fill lock) and with `Notes`; the section `node_cache` (`from_config`).
    """

    name = "node_cache"
    local = True
    _ticks = 0

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        max_bytes: int = 256 * MiB,
        max_object_bytes: int = 16 * MiB,
        clock: Callable[[], float] = time.time,
        max_variants: int = 16,
        refuse_late: bool = False,
        *,
        map_size: int | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self.max_variants = max_variants
        self.refuse_late = refuse_late
        """Refuse puts of responses requested before a hard purge of them, made by any
        worker of the node (see `purge`)."""
        self.refused_late = 0
        self.corrupt = 0
        """Stored values that did not parse (treated as misses and removed)."""
        self.corrupt_dropped = 0
        self._clock = clock
        self._created = path is None
        self.path = _memory_dir() if path is None else os.fspath(path)
        self.persistent = not self._created and not _on_tmpfs(self.path)
        self.map_size = map_size or _map_size(max_bytes, self.max_object_bytes)
        self._pid = os.getpid()
        self._start = _my_start()
        self._host = _host_id()
        self._touched: dict[str, None] = {}
        self._broken: set[bytes] = set()  # keys whose records did not parse, to remove
        self._patterns: tuple[bytes, list[Any]] = (b"", [])  # refuse_late's, as last parsed
        self._pollers = SharedPollers()
        self._closed: str | None = None
        os.makedirs(self.path, exist_ok=True)
        data = os.path.join(self.path, DATA_FILE)
        if os.path.exists(data):
            problem, _ = _check_data_file(data)  # a truncated map would SIGBUS a reader
            if problem is not None:
                raise NodeTierError(
                    f"node tier at {self.path}: {problem}; NodeTier.prepare starts it empty"
                )
        try:
            self._env = _open_env(self.path, self.map_size)
        except lmdb.Error as exc:
            raise NodeTierError(
                f"node tier at {self.path}: cannot open it ({exc}); NodeTier.prepare "
                "checks and repairs it before workers start"
            ) from exc
        try:
            self._dbs = {name: self._env.open_db(name.encode()) for name in _DBS[:6]}
            self._dbs["tags"] = self._env.open_db(b"tags", dupsort=True)
            for name in _DBS[7:]:
                self._dbs[name] = self._env.open_db(name.encode())
            self._meta, self._slots, self._bodies = (self._dbs[n] for n in _DBS[:3])
            self._atime, self._lru, self._exp = (self._dbs[n] for n in _DBS[3:6])
            self._tags, self._purged, self._locks = (self._dbs[n] for n in _DBS[6:])
            with self._env.begin(write=True) as txn:
                fmt = txn.get(b"format", db=self._meta)
                if fmt is None:
                    if txn.stat(self._slots)["entries"]:
                        raise NodeTierError(
                            f"node tier at {self.path}: no format record; NodeTier.prepare "
                            "starts it empty"
                        )
                    txn.put(b"format", FORMAT_RECORD, db=self._meta)
                elif bytes(fmt) != FORMAT_RECORD:
                    raise NodeTierError(
                        f"node tier at {self.path}: format {bytes(fmt)!r}, this edge writes "
                        f"{FORMAT_RECORD!r}; NodeTier.prepare starts it empty"
                    )
                generation = _Totals.load(txn.get(b"totals", db=self._meta)).generation
                owner = _owner(txn.get(b"owner", db=self._meta))
                self._owner_id = None if owner is None else _owner_id(owner)
                self._owner_lost = False
            self._env.reader_check()  # slots of dead readers would pin old pages
            self._gen_fd, self._gen_map = _open_generation(self.path, generation)
            # Never opened twice by one process: closing any descriptor of a file drops the
            # process's byte-range locks on it.
            self._holds_fd = os.open(os.path.join(self.path, HOLDS_FILE), os.O_RDWR | os.O_CREAT)
            self._holds: dict[int, int] = {}  # offset -> this process's holds there
        except BaseException:
            self._env.close()
            raise
        _OPEN.add(self)

    # -- the purge generation -----------------------------------------------------------

    @property
    def generation(self) -> int:
        """The node's purge generation (0.12 µs: one unpack from a shared mmap)."""
        return int(_GEN.unpack_from(self._gen_map, 8)[0])

    def generation_reader(self) -> Callable[[], int]:
        """A function returning `generation` (0.05 µs: no attribute lookups)."""
        unpack, buf = _GEN.unpack_from, self._gen_map
        return lambda: unpack(buf, 8)[0]

    # -- reads --------------------------------------------------------------------------

    def get(self, key: str) -> list[Entry]:
        """Live variants of `key`, most recent response first; [] when none.

        Each entry is a new object with its own copy of the body (one copy from the map).
        Never writes: the access is recorded in memory for the next `touch_flush`.
        """
        self._check()
        lk = _lkey(key)
        now = self._clock()
        out: list[Entry] = []
        with self._env.begin(buffers=True) as txn:
            slot = self._read_slot(txn, lk, key)
            if slot is None:
                return out
            live = [v for v in slot["v"] if v[_KU] > now]
            live.sort(key=lambda v: (v[_RS], v[_SEQ]), reverse=True)
            for v in live:
                data = txn.get(_U64.pack(v[_SEQ]), db=self._bodies)
                try:
                    if data is None:
                        raise EntryFormatError("body missing")
                    entry = _load_entry(data)
                    if entry.key != key or entry.variant_id != v[_VID]:
                        raise EntryFormatError("an entry of another key or variant")
                except EntryFormatError as exc:
                    self._corrupt(lk, key, exc)
                    continue
                if v[_INV]:
                    entry.invalidated = True
                out.append(entry)
        if out:
            self.touch(key)
        return out

    def valid(self, entry: Entry) -> bool:
        """Whether this exact stored variant is still in the tier, not invalidated and not
        past its keep-until: same key, variant and request/response times (one LMDB read,
        no body). A hot copy re-checks what it holds with this after the generation moved."""
        self._check()
        lk = _lkey(entry.key)
        vid = entry.variant_id
        with self._env.begin(buffers=True) as txn:
            slot = self._read_slot(txn, lk, entry.key)
        if slot is None:
            return False
        now = self._clock()
        for v in slot["v"]:
            if v[_VID] == vid:
                return (
                    v[_RS] == entry.response_time
                    and v[_RQ] == entry.request_time
                    and not v[_INV]
                    and v[_KU] > now
                )
        return False

    def touch(self, key: str) -> None:
        """Record a hit on `key` (e.g. served from a hot copy) for the next `touch_flush`."""
        touched = self._touched
        touched.pop(key, None)
        touched[key] = None
        if len(touched) > _TOUCH_MAX:
            del touched[next(iter(touched))]

    def fits(self, size: int) -> bool:
        """Whether an object of `size` bytes may be stored (else it streams through)."""
        return 0 <= size <= self.max_object_bytes

    def __contains__(self, key: str) -> bool:
        self._check()
        with self._env.begin(buffers=True) as txn:
            return txn.get(_lkey(key), db=self._slots) is not None

    def __len__(self) -> int:
        """Number of primary keys held (node-wide)."""
        return self._totals().keys

    def stats(self) -> NodeStats:
        """MemoryTier's counters, node-wide, plus where the tier lives."""
        t = self._totals()
        return {
            "keys": t.keys,
            "entries": t.entries,
            "bytes": t.size,
            "max_bytes": self.max_bytes,
            "max_object_bytes": self.max_object_bytes,
            "evictions": t.evictions,
            "expirations": t.expirations,
            "tags": t.tags,
            "path": self.path,
            "persistent": self.persistent,
        }

    # -- writes -------------------------------------------------------------------------

    def put(self, entry: Entry, keep_until: float) -> bool:
        """Store `entry`, replacing the same variant of the same key. False when refused:
        too big (`fits`), already past `keep_until`, requested before a hard purge of it
        (`refuse_late`), or no room even after evicting everything."""
        self._check()
        size = entry.size
        if not self.fits(size):
            return False
        now = self._clock()
        if keep_until <= now:
            return False
        blob = entry.dumps()
        lk = _lkey(entry.key)
        for attempt in range(5):
            try:
                with self._env.begin(write=True) as txn:
                    t = self._begin(txn, now)
                    stored = self._put(txn, t, entry, lk, size, blob, keep_until, now)
                    txn.put(b"totals", t.dump(), db=self._meta)
                self._flushed()
                return stored
            except lmdb.MapFullError:
                # Free pages are too fragmented (or pinned by an old reader) for this
                # value: evict more than the byte bound asks, then try again.
                if not self._make_room(len(blob) * (2**attempt) + self.max_bytes * attempt // 4):
                    break
        log.warning(
            "node tier at %s: no room for %s (%d bytes) in a map of %d bytes",
            self.path,
            entry.key,
            len(blob),
            self.map_size,
        )
        return False

    def delete(self, key: str) -> int:
        """Drop every variant of `key`; returns how many were dropped. Moves the generation."""
        return self._purge_txn(lambda txn, t: self._drop_keys(txn, t, [_lkey(key)], False))

    def clear(self) -> int:
        """Drop everything; returns how many entries were dropped. Moves the generation."""
        return self._purge_txn(self._clear)

    def purge(self, purge: Purge) -> int:
        """Drop (or with `purge.soft`, mark `invalidated`) every variant of the keys `purge`
        selects, as `MemoryTier.purge`; returns the number of entries affected. With
        `refuse_late`, a remembered purge is recorded in the tier, as made at `purge.at`
        (default now), for `PURGE_MEMORY_SECONDS`: a later put, by any worker of the node, of
        a matching response requested before then is refused.

        One write transaction; the generation moves in it (even when nothing matched: a hot
        copy may hold what this tier has already evicted) and is published before this
        returns, so every worker sees the purge on its next hit.
        """
        stamp = purge.stamp(self._clock)

        def work(txn: lmdb.Transaction[bytes], t: _Totals) -> int:
            if purge.remembered(self.refuse_late):
                self._remember(txn, purge, stamp)
            if purge.all and not purge.soft:
                return self._clear(txn, t)
            return self._drop_keys(txn, t, self._match(txn, purge), purge.soft)

        return self._purge_txn(work)

    def expire(self, now: float | None = None) -> int:
        """Drop every variant past its keep-until (node-wide); returns entries dropped."""
        self._check()
        if now is None:
            now = self._clock()
        dropped = 0

        def work(txn: lmdb.Transaction[bytes]) -> tuple[int, bool]:
            t = _Totals.load(txn.get(b"totals", db=self._meta))
            result = self._expire(txn, t, now, _EXPIRE_BATCH)
            txn.put(b"totals", t.dump(), db=self._meta)
            return result

        while True:
            try:
                n, more = self._write(work)
            except NodeTierError as exc:
                log.warning("%s: expiry postponed", exc)
                return dropped
            dropped += n
            if not more:
                return dropped

    def touch_flush(self, now: float | None = None) -> int:
        """Write this process's recorded hits into the LRU index, drop expired variants and
        repair the published generation if a purger died before publishing it. The engine
        calls this about once a second; `put` flushes too. Returns the keys flushed."""
        self._check()
        if now is None:
            now = self._clock()
        n = len(self._touched)
        if n or self._broken or self._expiry_due(now):

            def work(txn: lmdb.Transaction[bytes]) -> None:
                t = self._begin(txn, now)
                txn.put(b"totals", t.dump(), db=self._meta)

            try:
                self._write(work)
            except NodeTierError as exc:
                log.warning("%s: %d recorded hits dropped", exc, n)
            self._flushed()
        self._repair_generation()
        return n

    def heartbeat(self) -> None:
        """Tell other nodes the owner of this tier is alive (every HEARTBEAT_SECONDS)."""
        self._check()

        def work(txn: lmdb.Transaction[bytes]) -> dict[str, Any] | None:
            owner = _owner(txn.get(b"owner", db=self._meta))
            if owner is None or _owner_id(owner) != self._owner_id:
                return owner
            owner["heartbeat"] = self._clock()
            txn.put(b"owner", json.dumps(owner).encode(), db=self._meta)
            return None

        try:
            other = self._write(work)
        except NodeTierError as exc:
            log.warning("%s: heartbeat not written", exc)
            return
        if other is not None and not self._owner_lost:
            self._owner_lost = True
            log.error(
                "node tier at %s: now owned by node %r (host %r), which took it over from "
                "this node: two nodes share one node_cache.path",
                self.path,
                other.get("node"),
                other.get("host"),
            )
        self._env.reader_check()

    # -- cross-process fill lock --------------------------------------------------------

    def try_lock(self, key: str, ttl: float) -> str | None:
        """Take the fill lock of `key` for `ttl` seconds: a token, or None while another
        live holder has it. A lock past its ttl, or held by a process of this host that is
        gone (killed, crashed), is taken over."""
        self._check()
        lk = _lkey(key)
        now = self._clock()
        token = secrets.token_hex(16)
        record = {"t": token, "p": self._pid, "s": self._start, "h": self._host, "e": now + ttl}

        def work(txn: lmdb.Transaction[bytes]) -> str | None:
            if self._lock_holder(txn, lk, now) is not None:
                return None
            txn.put(lk, json.dumps(record).encode(), db=self._locks)
            return token

        try:
            return self._write(work)
        except NodeTierError as exc:  # the caller waits, and wait_for_fill sees no lock
            log.warning("%s: no fill lock", exc)
            return None

    def unlock(self, key: str, token: str) -> bool:
        """Release the lock if `token` still holds it."""
        self._check()
        lk = _lkey(key)

        def work(txn: lmdb.Transaction[bytes]) -> bool:
            record = _json(txn.get(lk, db=self._locks))
            if not isinstance(record, dict) or record.get("t") != token:
                return False
            return txn.delete(lk, db=self._locks)

        try:
            return self._write(work)
        except NodeTierError as exc:  # the lock expires with its ttl
            log.warning("%s: fill lock not released", exc)
            return False

    def locked(self, key: str) -> bool:
        """Whether a live holder has the fill lock of `key`."""
        self._check()
        with self._env.begin() as txn:
            return self._lock_holder(txn, _lkey(key), self._clock()) is not None

    async def wait_for_fill(
        self,
        key: str,
        timeout: float,
        newer_than: float | None = None,
        poll: float = 0.01,
    ) -> list[Entry]:
        """Wait while another worker fills `key`: its variants as soon as one appears (only
        responses received after `newer_than`, if given), or what is stored when the lock is
        released or abandoned (possibly []), or [] on timeout. Waiters of this process on the
        same key share one poller and one list of entries (one copy of the body)."""
        self._check()
        return await self._pollers.wait(
            (key, newer_than),
            timeout,
            lambda budget: self._poll_fill(key, budget, poll, newer_than),
        )

    # -- holds: a key about to be stored ------------------------------------------------

    def hold(self, key: str) -> bool:
        """Mark `key` as about to be stored by this process; False when another process
        holds it (or the tier is closed). End it with `drop_hold`."""
        if self._closed is not None:
            return False
        offset = _hold_offset(key)
        count = self._holds.get(offset, 0)
        if count == 0:
            try:
                fcntl.lockf(self._holds_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError:
                return False
        self._holds[offset] = count + 1
        return True

    def drop_hold(self, key: str) -> None:
        """End this process's hold of `key` (never raises)."""
        offset = _hold_offset(key)
        count = self._holds.pop(offset, 0)
        if count > 1:
            self._holds[offset] = count - 1
        elif count == 1 and self._closed is None:
            with contextlib.suppress(OSError):
                fcntl.lockf(self._holds_fd, fcntl.LOCK_UN, 1, offset)

    def held_elsewhere(self, key: str) -> bool:
        """Whether another process holds `key` (or a key of the same hash) now."""
        if self._closed is not None:
            return False
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _hold_offset(key), 1, 0)
        answer = fcntl.fcntl(self._holds_fd, fcntl.F_GETLK, query)
        return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)

    # -- lifecycle ----------------------------------------------------------------------

    def note(self, name: str) -> bytes | None:
        """A small value the node keeps beside its objects (say the purge bus generation it
        last applied, so that a restarted node knows what it missed)."""
        self._check()
        with self._env.begin(db=self._meta) as txn:
            value = txn.get(b"note:" + name.encode())
            return bytes(value) if value is not None else None

    def set_note(self, name: str, value: bytes) -> None:
        self._check()
        with self._env.begin(db=self._meta, write=True) as txn:
            txn.put(b"note:" + name.encode(), value)

    def tick(self) -> None:
        """Housekeeping, about once a second (`Tiers.watch`): the recorded hits into the LRU
        (`touch_flush`), the owner's heartbeat, and every 10th tick a sync to disk."""
        self._ticks += 1
        self.touch_flush()
        self.heartbeat()
        if self._ticks % 10 == 0:
            self.sync()

    def health(self) -> str:
        """Where it is: what /_edge/health says under `node_cache`."""
        return self.path

    def locks(self) -> NodeLocks:
        """Its fill lock, across the workers of this node."""
        from edge.store.locks import NodeLocks

        return NodeLocks(self)

    @property
    def closed(self) -> bool:
        """Closed (or shut after an error): every call but `close` raises NodeTierError."""
        return self._closed is not None

    def sync(self) -> None:
        """Flush the map to disk (the environment commits without fsync, for speed)."""
        self._check()
        self._env.sync(True)

    def close(self) -> None:
        """Flush pending touches, sync, close. Idempotent. Does not delete the files."""
        if self._closed is not None:
            return
        try:
            if self._touched:
                self.touch_flush()
            self._env.sync(True)
        except (lmdb.Error, NodeTierError) as exc:
            log.warning("node tier at %s: closing: %s", self.path, exc)
        self._shut("closed")

    def __enter__(self) -> NodeTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(path: str | os.PathLike[str]) -> None:
        """Delete a tier's files and its directory when that leaves it empty (for tiers in
        memory; no process may have it open)."""
        path = os.fspath(path)
        for name in _FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        with contextlib.suppress(OSError):
            os.rmdir(path)

    @staticmethod
    def release(path: str | os.PathLike[str], node_name: str) -> None:
        """The node stopped (every worker closed the tier): mark its ownership as gone, so
        the next node on this path (a replaced Swarm task, under another name) takes it at
        once instead of waiting OWNER_STALE_SECONDS."""
        path = os.fspath(path)
        if not os.path.exists(os.path.join(path, "data.mdb")):
            return
        try:
            env = _open_env(path, 64 * MiB)
        except lmdb.Error as exc:
            log.warning("node tier at %s: ownership not released: %s", path, exc)
            return
        try:
            meta = env.open_db(b"meta")
            with env.begin(write=True) as txn:
                owner = _owner(txn.get(b"owner", db=meta))
                if owner is not None and owner.get("node") == node_name:
                    owner["heartbeat"] = 0.0
                    txn.put(b"owner", json.dumps(owner).encode(), db=meta)
            env.sync(True)
        finally:
            env.close()

    @staticmethod
    def prepare(
        path: str | os.PathLike[str] | None,
        node_name: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> str:
        """Make the tier at `path` ready for the workers of node `node_name`; returns its
        path (`path=None`: a new directory in memory, as for `NodeTier(None)`).

        Run once by the supervisor before it forks workers (no worker may have it open):

        - a data file that is not LMDB, truncated, unreadable (checked by opening it and
          walking every index in a child process, so even a crash inside LMDB is caught), or
          written by another format version is deleted with a warning: start empty;
        - ownership: if the tier is owned by another node whose heartbeat is recent (less
          than OWNER_STALE_SECONDS), raise `NodeTierError` (two nodes on one path); a stale
          owner is taken over with a warning; the node name, host and time are recorded;
        - leftover fill locks are dropped (their holders are gone), dead readers cleared.
        """
        try:
            path = _memory_dir() if path is None else os.fspath(path)
            os.makedirs(path, exist_ok=True)
            return _prepare(path, node_name, clock)
        except (OSError, lmdb.Error) as exc:
            raise NodeTierError(f"node_cache.path {path}: cannot use it: {exc}") from exc

    # -- internals: transactions --------------------------------------------------------

    def _check(self) -> None:
        if self._closed is not None:
            raise NodeTierError(f"node tier at {self.path}: {self._closed}")

    def _shut(self, reason: str) -> None:
        self._closed = reason
        _OPEN.discard(self)
        with contextlib.suppress(lmdb.Error):
            self._env.close()
        with contextlib.suppress(BufferError, ValueError):
            self._gen_map.close()
        with contextlib.suppress(OSError):
            os.close(self._gen_fd)
        with contextlib.suppress(OSError, AttributeError):
            os.close(self._holds_fd)

    def _abandon(self) -> None:
        """In a forked child: close what was inherited, never use it."""
        if self._closed is None and os.getpid() != self._pid:
            self._shut(
                f"opened in process {self._pid} before a fork: open a NodeTier in each "
                "worker after forking"
            )

    def _totals(self) -> _Totals:
        self._check()
        with self._env.begin(buffers=True) as txn:
            return _Totals.load(txn.get(b"totals", db=self._meta))

    def _begin(self, txn: lmdb.Transaction[bytes], now: float) -> _Totals:
        """Start of every put and flush: load the counters, write the recorded touches,
        remove broken records and a batch of expired variants."""
        t = _Totals.load(txn.get(b"totals", db=self._meta))
        for key in self._touched:
            lk = _lkey(key)
            old = txn.get(lk, db=self._atime)
            if old is not None:
                self._stamp(txn, t, lk, old)
        for lk in self._broken:
            slot = _slot(txn.get(lk, db=self._slots))
            self._replace(txn, t, lk, slot["v"] if slot else [], [], {})
            if slot is None:  # unreadable: its counts and bodies are lost
                self.corrupt_dropped += 1
        self._expire(txn, t, now, _EXPIRE_BATCH)
        return t

    def _flushed(self) -> None:
        """After the commit of a `_begin`: what it wrote is no longer pending."""
        if self._touched:
            self._touched = {}
        if self._broken:
            self._broken = set()

    def _purge_txn(self, work: Callable[[lmdb.Transaction[bytes], _Totals], int]) -> int:
        """Run `work` in a write transaction that moves the generation, then publish the
        generation. Purgers serialize on a lock of the generation file, taken before the
        LMDB writer lock, so the published counter never goes backwards."""
        self._check()
        fcntl.flock(self._gen_fd, fcntl.LOCK_EX)
        try:
            for attempt in range(3):
                try:
                    with self._env.begin(write=True) as txn:
                        t = _Totals.load(txn.get(b"totals", db=self._meta))
                        count = work(txn, t)
                        t.generation += 1
                        txn.put(b"totals", t.dump(), db=self._meta)
                    break
                except lmdb.MapFullError as exc:
                    # Deleting needs free pages too (copy on write): make room, retry.
                    if attempt == 2 or not self._make_room(self.max_bytes // 2 + 1):
                        raise NodeTierError(
                            f"node tier at {self.path}: the map ({self.map_size} bytes) is "
                            "full: the purge was not applied"
                        ) from exc
            _publish(self._gen_map, t.generation)
        finally:
            fcntl.flock(self._gen_fd, fcntl.LOCK_UN)
        return count

    def _repair_generation(self) -> None:
        """Publish the committed generation if it is ahead of the published one (a purger
        died between its commit and its publication)."""
        if self._totals().generation <= self.generation:
            return
        fcntl.flock(self._gen_fd, fcntl.LOCK_EX)
        try:
            committed = self._totals().generation
            if committed > self.generation:
                _publish(self._gen_map, committed)
        finally:
            fcntl.flock(self._gen_fd, fcntl.LOCK_UN)

    def _write(self, work: Callable[[lmdb.Transaction[bytes]], _T]) -> _T:
        """Run `work` in a write transaction; when the map is full, evict and retry.
        NodeTierError when even that fails."""
        for _ in range(3):
            try:
                with self._env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                if not self._make_room(self.max_bytes // 4 + MiB):
                    break
        raise NodeTierError(f"node tier at {self.path}: the map ({self.map_size} bytes) is full")

    def _make_room(self, nbytes: int) -> bool:
        """Evict least recently used keys until `nbytes` fewer are stored (or the budget
        has `nbytes` free); False when there was nothing left to evict."""
        self._env.reader_check()
        try:
            with self._env.begin(write=True) as txn:
                t = _Totals.load(txn.get(b"totals", db=self._meta))
                if t.keys == 0:
                    return False
                target = max(0, min(t.size, self.max_bytes) - nbytes)
                self._evict(txn, t, target, None)
                txn.put(b"totals", t.dump(), db=self._meta)
        except lmdb.MapFullError:  # even deleting needs a few free pages
            return False
        return True

    # -- internals: records -------------------------------------------------------------

    def _read_slot(self, txn: lmdb.Transaction[Any], lk: bytes, key: str) -> dict[str, Any] | None:
        raw = txn.get(lk, db=self._slots)
        if raw is None:
            return None
        slot = _slot(raw)
        if slot is None:
            self._corrupt(lk, key, EntryFormatError("unreadable slot record"))
            return None
        if slot["k"] != key:  # another key cut to the same LMDB key
            return None
        return slot

    def _corrupt(self, lk: bytes, key: str, exc: Exception) -> None:
        self.corrupt += 1
        self._broken.add(lk)
        log.warning("node tier at %s: %s: %s; treated as a miss", self.path, key, exc)

    def _stamp(
        self, txn: lmdb.Transaction[bytes], t: _Totals, lk: bytes, old: bytes | None
    ) -> None:
        """Make `lk` the most recently used key (`old`: its tick, as read from ``atime``)."""
        t.tick += 1
        if old is not None:
            txn.delete(old, db=self._lru)
        tick = _U64.pack(t.tick)
        txn.put(tick, lk, db=self._lru)
        txn.put(lk, tick, db=self._atime)

    def _replace(
        self,
        txn: lmdb.Transaction[bytes],
        t: _Totals,
        lk: bytes,
        old: list[list[Any]],
        new: list[list[Any]],
        slot: dict[str, Any],
    ) -> None:
        """Replace the variants of `lk` (`old`, as stored) by `new`, keeping the bodies, the
        expiry and tag indexes, the LRU index and the counters consistent. New variants'
        bodies are written by the caller; removed ones' are deleted here."""
        new_seqs = {v[_SEQ] for v in new}
        old_seqs = {v[_SEQ] for v in old}
        for v in old:
            if v[_SEQ] not in new_seqs:
                txn.delete(_U64.pack(v[_SEQ]), db=self._bodies)
                txn.delete(_EXP.pack(v[_KU], v[_SEQ]), db=self._exp)
            t.size -= v[_SIZE]
        for v in new:
            if v[_SEQ] not in old_seqs:
                txn.put(_EXP.pack(v[_KU], v[_SEQ]), lk, db=self._exp)
            t.size += v[_SIZE]
        old_tags = {tag for v in old for tag in v[_TAGS]}
        new_tags = {tag for v in new for tag in v[_TAGS]}
        if old_tags != new_tags:
            for tag in old_tags - new_tags:
                tk = _lkey(tag)
                txn.delete(tk, lk, db=self._tags)
                if txn.get(tk, db=self._tags) is None:
                    t.tags -= 1
            for tag in new_tags - old_tags:
                tk = _lkey(tag)
                if txn.get(tk, db=self._tags) is None:
                    t.tags += 1
                txn.put(tk, lk, db=self._tags)
        t.entries += len(new) - len(old)
        if new:
            slot["v"] = new
            txn.put(lk, _dump_slot(slot), db=self._slots)
            if not old:
                t.keys += 1
        else:
            if txn.delete(lk, db=self._slots) and old:
                t.keys -= 1
            tick = txn.pop(lk, db=self._atime)
            if tick is not None:
                txn.delete(tick, db=self._lru)

    def _put(
        self,
        txn: lmdb.Transaction[bytes],
        t: _Totals,
        entry: Entry,
        lk: bytes,
        size: int,
        blob: bytes,
        keep_until: float,
        now: float,
    ) -> bool:
        """`put` in its transaction: `lk` is the key's LMDB key, `size` its `Entry.size`."""
        if self.refuse_late and self._purged_since(txn, entry, lk):
            self.refused_late += 1
            return False
        key = entry.key
        vid = entry.variant_id
        slot = _slot(txn.get(lk, db=self._slots))
        old: list[list[Any]] = []
        variants: list[list[Any]] = []
        if slot is None or slot["k"] != key:
            if slot is not None:  # a cut key's collision: replace it
                self._replace(txn, t, lk, slot["v"], [], {})
            slot = {"k": key}
        else:
            old = slot["v"]
            variants = [v for v in old if v[_KU] > now]
            t.expirations += len(old) - len(variants)
            variants = sorted((v for v in variants if v[_VID] != vid), key=lambda v: v[_SEQ])
            while len(variants) >= self.max_variants:  # drop the oldest stored variant
                variants.pop(0)
                t.evictions += 1
        t.seq += 1
        record = [
            vid,
            t.seq,
            keep_until,
            size,
            entry.request_time,
            entry.response_time,
            1 if entry.invalidated else 0,
            list(dict.fromkeys(entry.tags)),
        ]
        variants.append(record)
        if sum(v[_SIZE] for v in variants) > self.max_bytes:
            # The new variant fits alone but not with its siblings: keep only it.
            t.evictions += len(variants) - 1
            variants = [record]
        txn.put(_U64.pack(t.seq), blob, db=self._bodies)
        self._replace(txn, t, lk, old, variants, slot)
        self._stamp(txn, t, lk, txn.get(lk, db=self._atime))
        self._evict(txn, t, self.max_bytes, lk)
        return True

    def _evict(
        self, txn: lmdb.Transaction[bytes], t: _Totals, target: int, keep: bytes | None
    ) -> None:
        """Evict least recently used keys (never `keep`, the newest) until bytes <= target."""
        if t.size <= target:
            return
        cursor = txn.cursor(db=self._lru)
        while t.size > target and cursor.first():
            tick, lk = cursor.item()
            if lk == keep:
                break
            slot = _slot(txn.get(lk, db=self._slots))
            if slot is None:  # an index entry without its slot: drop it
                txn.delete(tick, db=self._lru)
                txn.delete(lk, db=self._atime)
                continue
            t.evictions += len(slot["v"])
            self._replace(txn, t, lk, slot["v"], [], slot)

    def _expire(
        self, txn: lmdb.Transaction[bytes], t: _Totals, now: float, limit: int
    ) -> tuple[int, bool]:
        """Drop variants past keep-until (up to `limit` keys); (dropped, more to do)."""
        cursor = txn.cursor(db=self._exp)
        if not cursor.first() or _EXP.unpack(cursor.key())[0] > now:
            return 0, False  # the usual case: nothing is due
        due: dict[bytes, list[bytes]] = {}
        more = False
        for ek, lk in cursor:
            if _EXP.unpack(ek)[0] > now:
                break
            if lk not in due and len(due) >= limit:
                more = True
                break
            due.setdefault(lk, []).append(ek)
        dropped = 0
        for lk, eks in due.items():
            slot = _slot(txn.get(lk, db=self._slots))
            if slot is not None:
                keep = [v for v in slot["v"] if v[_KU] > now]
                dropped += len(slot["v"]) - len(keep)
                self._replace(txn, t, lk, slot["v"], keep, slot)
            for ek in eks:  # anything left was a stale index entry
                txn.delete(ek, db=self._exp)
        t.expirations += dropped
        return dropped, more

    def _expiry_due(self, now: float) -> bool:
        with self._env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=self._exp)
            return cursor.first() and _EXP.unpack(bytes(cursor.key()))[0] <= now

    def _clear(self, txn: lmdb.Transaction[bytes], t: _Totals) -> int:
        n = t.entries
        for db in (self._slots, self._bodies, self._atime, self._lru, self._exp, self._tags):
            txn.drop(db, delete=False)
        t.size = t.keys = t.entries = t.tags = 0
        return n

    def _drop_keys(
        self, txn: lmdb.Transaction[bytes], t: _Totals, lks: Iterable[bytes], soft: bool
    ) -> int:
        count = 0
        for lk in dict.fromkeys(lks):
            slot = _slot(txn.get(lk, db=self._slots))
            if slot is None:
                continue
            count += len(slot["v"])
            if soft:
                new = [[*v[:_INV], 1, v[_TAGS]] for v in slot["v"]]
                self._replace(txn, t, lk, slot["v"], new, slot)
            else:
                self._replace(txn, t, lk, slot["v"], [], slot)
        return count

    def _match(self, txn: lmdb.Transaction[bytes], purge: Purge) -> list[bytes]:
        """The LMDB keys of the slots `purge` selects (through the indexes: the tags, the
        ordered keys for a full-URL prefix; a scan for path prefixes and globs)."""
        if purge.all:
            return list(txn.cursor(db=self._slots).iternext(keys=True, values=False))
        found = [_lkey(u) for u in purge.urls]
        for tag in purge.tags:
            cursor = txn.cursor(db=self._tags)
            tk = _lkey(tag)
            if cursor.set_key(tk):
                found += list(cursor.iternext_dup(keys=False, values=True))
        scan = [p for p in purge.patterns if p.by_path]
        ranged = [p for p in purge.patterns if not p.by_path]
        for p in ranged:
            head = _lkey(p.literal)[:_KEY_CUT]
            cursor = txn.cursor(db=self._slots)
            if not cursor.set_range(head):
                continue
            for lk in cursor.iternext(keys=True, values=False):
                if not lk.startswith(head):
                    break
                key = self._key_of(txn, lk)
                if key is not None and p.matches(key):
                    found.append(lk)
        if scan:
            for lk in txn.cursor(db=self._slots).iternext(keys=True, values=False):
                key = self._key_of(txn, lk)
                if key is not None and any(p.matches(key) for p in scan):
                    found.append(lk)
        return found

    def _key_of(self, txn: lmdb.Transaction[bytes], lk: bytes) -> str | None:
        key = _unlkey(lk)
        if key is not None:
            return key
        slot = _slot(txn.get(lk, db=self._slots))
        return str(slot["k"]) if slot is not None else None

    # -- internals: refuse_late ---------------------------------------------------------

    def _remember(self, txn: lmdb.Transaction[bytes], purge: Purge, at: float) -> None:
        horizon = self._clock() - PURGE_MEMORY_SECONDS

        def mark(name: bytes) -> None:
            old = txn.get(name, db=self._purged)
            if old is None or _F64.unpack(old)[0] < at:
                txn.put(name, _F64.pack(at), db=self._purged)

        if purge.all:
            mark(b"a")
        for key in purge.urls:
            mark(b"k" + _lkey(key))
        for tag in purge.tags:
            mark(b"t" + _lkey(tag))
        if purge.patterns:
            listed = _json(txn.get(b"p", db=self._purged))
            old_list: list[list[Any]] = listed if isinstance(listed, list) else []
            kept = [[a, p] for a, p in old_list if a > horizon]
            kept += [[at, p] for p in purge.prefixes]
            txn.put(b"p", json.dumps(kept[-256:]).encode(), db=self._purged)
        if txn.stat(self._purged)["entries"] > 4096:  # forget what is old
            cursor = txn.cursor(db=self._purged)
            stale = [
                k
                for k, v in cursor.iternext()
                if k != b"p" and len(v) == 8 and _F64.unpack(v)[0] <= horizon
            ]
            for k in stale:
                txn.delete(k, db=self._purged)

    def _purged_since(self, txn: lmdb.Transaction[bytes], entry: Entry, lk: bytes) -> bool:
        """Whether a hard purge matching `entry` (LMDB key `lk`) was made after its request
        was sent."""
        sent = entry.request_time
        get, db = txn.get, self._purged
        names = [b"a", b"k" + lk]
        names += [b"t" + _lkey(tag) for tag in entry.tags]
        for name in names:
            raw = get(name, db=db)
            if raw is not None and _F64.unpack(raw)[0] >= sent:
                return True
        raw = txn.get(b"p", db=self._purged)
        if raw is None:
            return False
        if raw != self._patterns[0]:  # parsed again only when a purge (any worker's) wrote it
            listed = _json(raw)
            self._patterns = (raw, listed if isinstance(listed, list) else [])
        return any(
            a >= sent and PurgePattern.parse(p).matches(entry.key) for a, p in self._patterns[1]
        )

    # -- internals: locks ---------------------------------------------------------------

    def _lock_holder(
        self, txn: lmdb.Transaction[Any], lk: bytes, now: float
    ) -> dict[str, Any] | None:
        """The live lock record of `lk`, or None (absent, expired, or its holder is dead)."""
        record = _json(txn.get(lk, db=self._locks))
        if not isinstance(record, dict):
            return None
        try:
            if float(record["e"]) <= now:
                return None
            if record["h"] == self._host and not _alive(int(record["p"]), int(record["s"])):
                return None
        except (KeyError, TypeError, ValueError):
            return None
        return record

    async def _poll_fill(
        self, key: str, budget: float, poll: float, newer_than: float | None
    ) -> list[Entry] | None:
        """The shared poller: entries or [] (final answers), None when `budget` ran out.
        Each probe reads the slot record and the lock (no body)."""
        lk = _lkey(key)
        deadline = time.monotonic() + budget
        while True:
            if self._closed is not None:
                return []
            now = self._clock()
            with self._env.begin(buffers=True) as txn:
                slot = self._read_slot(txn, lk, key)
                ready = slot is not None and any(
                    v[_KU] > now and (newer_than is None or v[_RS] > newer_than) for v in slot["v"]
                )
                locked = self._lock_holder(txn, lk, now) is not None
            if ready or not locked:
                entries = self.get(key)
                if newer_than is not None:
                    entries = [e for e in entries if e.response_time > newer_than]
                if entries or not locked:
                    return entries
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(poll)

    # -- internals for tests and diagnostics --------------------------------------------

    def _slot_records(self) -> Iterator[tuple[str, list[list[Any]]]]:
        """(key, variant records) of every slot, without touching the LRU."""
        with self._env.begin() as txn:
            for _, raw in txn.cursor(db=self._slots):
                slot = _slot(raw)
                if slot is not None:
                    yield slot["k"], slot["v"]

    def _tag_index(self) -> dict[str, set[str]]:
        """The tag -> keys index, resolved to full keys (for tests and diagnostics)."""
        names = {
            _lkey(tag): tag for _, v in self._slot_records() for var in v for tag in var[_TAGS]
        }
        out: dict[str, set[str]] = {}
        with self._env.begin() as txn:
            for tk, lk in txn.cursor(db=self._tags):
                key = self._key_of(txn, lk)
                out.setdefault(names.get(tk, tk.decode(errors="replace")), set()).add(key or "?")
        return out

    def _audit(self) -> list[str]:
        """Every inconsistency between the slots, the indexes and the counters ([] when
        none). Tests call it after every operation."""
        problems: list[str] = []
        slots = list(self._slot_records())
        t = self._totals()
        if t.keys != len(slots):
            problems.append(f"keys {t.keys} != {len(slots)}")
        if t.entries != sum(len(v) for _, v in slots):
            problems.append(f"entries {t.entries} != {sum(len(v) for _, v in slots)}")
        if t.size != sum(var[_SIZE] for _, v in slots for var in v):
            problems.append(f"bytes {t.size} != {sum(var[_SIZE] for _, v in slots for var in v)}")
        tags: dict[str, set[str]] = {}
        for key, v in slots:
            for var in v:
                for tag in var[_TAGS]:
                    tags.setdefault(tag, set()).add(key)
        if self._tag_index() != tags:
            problems.append(f"tag index {self._tag_index()} != {tags}")
        if t.tags != len(tags):
            problems.append(f"tags {t.tags} != {len(tags)}")
        with self._env.begin() as txn:
            seqs = {var[_SEQ] for _, v in slots for var in v}
            bodies = {_U64.unpack(k)[0] for k in txn.cursor(db=self._bodies).iternext(values=False)}
            if seqs != bodies:
                problems.append(f"bodies {sorted(bodies)} != variants {sorted(seqs)}")
            exp = {_EXP.unpack(k) for k in txn.cursor(db=self._exp).iternext(values=False)}
            want = {(var[_KU], var[_SEQ]) for _, v in slots for var in v}
            if exp != want:
                problems.append(f"expiry index {sorted(exp)} != {sorted(want)}")
            lru = {lk for _, lk in txn.cursor(db=self._lru)}
            atime = set(txn.cursor(db=self._atime).iternext(values=False))
            held = {_lkey(k) for k, _ in slots}
            if lru != held or atime != held:
                problems.append("LRU index does not match the slots")
        return problems


# -- module helpers -------------------------------------------------------------------------


def _json(raw: bytes | memoryview | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(bytes(raw))
    except (ValueError, RecursionError):
        return None


def _dump_slot(slot: dict[str, Any]) -> bytes:
    """The record of a slot: {"k": key, "v": variant records} (`_SLOT_HEAD`)."""
    key = slot["k"].encode("utf-8", "surrogatepass")
    out = [_SLOT_HEAD.pack(len(key), len(slot["v"])), key]
    for vid, seq, ku, size, rq, rs, inv, tags in slot["v"]:
        text = vid.encode("utf-8", "surrogatepass")
        out += (_SLOT_VAR.pack(seq, ku, size, rq, rs, inv, len(text), len(tags)), text)
        for tag in tags:
            text = tag.encode("utf-8", "surrogatepass")
            out += (_SLOT_TAG.pack(len(text)), text)
    return b"".join(out)


def _slot(raw: bytes | memoryview | None) -> dict[str, Any] | None:
    """A slot record read back (`_dump_slot`), or None when absent or malformed (a malformed
    one is dropped by whoever rewrites the key)."""
    if raw is None:
        return None
    data = bytes(raw)
    try:
        nkey, count = _SLOT_HEAD.unpack_from(data)
        pos = _SLOT_HEAD.size + nkey
        key = data[_SLOT_HEAD.size : pos].decode("utf-8", "surrogatepass")
        variants: list[list[Any]] = []
        for _ in range(count):
            seq, ku, size, rq, rs, inv, n, ntags = _SLOT_VAR.unpack_from(data, pos)
            pos += _SLOT_VAR.size
            vid = data[pos : pos + n].decode("utf-8", "surrogatepass")
            pos += n
            tags = []
            for _ in range(ntags):
                (n,) = _SLOT_TAG.unpack_from(data, pos)
                pos += _SLOT_TAG.size
                tags.append(data[pos : pos + n].decode("utf-8", "surrogatepass"))
                pos += n
            variants.append([vid, seq, ku, size, rq, rs, inv, tags])
    except (struct.error, UnicodeDecodeError):
        return None
    if pos != len(data):  # truncated (a slice past the end is short, not an error) or longer
        return None
    return {"k": key, "v": variants}


def _owner(raw: bytes | memoryview | None) -> dict[str, Any] | None:
    owner = _json(raw)
    return owner if isinstance(owner, dict) else None


def _owner_id(owner: dict[str, Any]) -> tuple[Any, Any]:
    """Which owner a record names: the node and when it took the tier (heartbeats aside)."""
    return (owner.get("node"), owner.get("since"))


def _prepare(path: str, node_name: str, clock: Callable[[], float]) -> str:
    """`NodeTier.prepare` on an existing directory."""
    data = os.path.join(path, DATA_FILE)
    generation = _read_generation(path)
    map_size = 0
    if os.path.exists(data):
        problem, map_size = _check_data_file(data)
        if problem is None:
            problem = _verify_in_child(path)
        if problem is not None:
            log.warning("node tier at %s: %s; deleting it and starting empty", path, problem)
            for name in _FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))
    if not os.path.exists(data):
        map_size = 0  # workers open it with the size their budget needs
    env = _open_env(path, max(map_size, 64 * MiB))
    try:
        meta = env.open_db(b"meta")
        locks = env.open_db(b"locks")
        with env.begin(write=True) as txn:
            owner = _owner(txn.get(b"owner", db=meta))
            now = clock()
            host = socket.gethostname()
            if owner is not None and owner.get("node") != node_name:
                age = now - float(owner.get("heartbeat", 0.0))
                if age < OWNER_STALE_SECONDS:
                    raise NodeTierError(
                        f"node_cache.path {path} is in use by node {owner.get('node')!r}"
                        f" (host {owner.get('host')!r}, heartbeat {age:.0f} s ago), so "
                        f"node {node_name!r} cannot use it: give each node its own "
                        "node_cache.path"
                    )
                log.warning(
                    "node tier at %s: taking it over from node %r (host %r, silent for "
                    "%.0f s) for node %r",
                    path,
                    owner.get("node"),
                    owner.get("host"),
                    age,
                    node_name,
                )
            record = {
                "node": node_name,
                "host": host,
                "pid": os.getpid(),
                "since": now,
                "heartbeat": now,
            }
            txn.put(b"owner", json.dumps(record).encode(), db=meta)
            if txn.get(b"format", db=meta) is None:
                txn.put(b"format", FORMAT_RECORD, db=meta)
            totals = _Totals.load(txn.get(b"totals", db=meta))
            if totals.generation < generation:
                totals.generation = generation + 1  # a wiped tier: hot copies re-check
                txn.put(b"totals", totals.dump(), db=meta)
            txn.drop(locks, delete=False)
        env.reader_check()
        fd, gen_map = _open_generation(path, totals.generation)
        gen_map.close()
        os.close(fd)
        env.sync(True)
    finally:
        env.close()
    return path


def _open_env(path: str, map_size: int) -> lmdb.Environment:
    """Open the environment with this module's options (see the py-lmdb documentation)."""
    return lmdb.open(
        path,
        map_size=map_size,
        subdir=True,
        max_dbs=_MAX_DBS,
        max_readers=_MAX_READERS,
        sync=False,  # commits do not fsync: a crash of the OS may lose the last commits;
        metasync=False,  # sync() flushes (periodically, and at close)
        readahead=True,  # the budget fits in RAM: read-ahead helps large bodies
        writemap=True,  # commits write into the map: a 5 MB put costs 0.3 ms, not 5 ms
        lock=True,  # several processes
        lib_version=0,  # LMDB 0.9 data format, readable by the mdb_* tools
    )


def _open_generation(path: str, committed: int) -> tuple[int, mmap.mmap]:
    """Open (or create, or repair) the generation file; publish at least `committed`."""
    name = os.path.join(path, GENERATION_FILE)
    fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            head = os.pread(fd, _GEN_SIZE, 0)
            current = 0
            if len(head) == _GEN_SIZE and head.startswith(_GEN_MAGIC):
                current = _GEN.unpack_from(head, 8)[0]
            if len(head) != _GEN_SIZE or not head.startswith(_GEN_MAGIC) or current < committed:
                os.ftruncate(fd, _GEN_SIZE)
                os.pwrite(fd, _GEN_MAGIC + _GEN.pack(max(current, committed)), 0)
            gen_map = mmap.mmap(fd, _GEN_SIZE)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except BaseException:
        os.close(fd)
        raise
    return fd, gen_map


def _publish(gen_map: mmap.mmap, generation: int) -> None:
    """Write the counter with one 8-byte store (a slice assignment copies 8 aligned bytes at
    once; `pack_into` would zero the field first, and readers would see 0)."""
    gen_map[8:16] = _GEN.pack(generation)


def _read_generation(path: str) -> int:
    try:
        with open(os.path.join(path, GENERATION_FILE), "rb") as f:
            head = f.read(_GEN_SIZE)
    except OSError:
        return 0
    if len(head) == _GEN_SIZE and head.startswith(_GEN_MAGIC):
        return int(_GEN.unpack_from(head, 8)[0])
    return 0


_META = struct.Struct("<QHHHH" + "II" + "QQ" + "IHHQQQQQ" * 2 + "QQ")
"""An LMDB 0.9 meta page (64-bit): page header (pgno, pad, flags, lower, upper), magic,
version, address, map size, the free and main databases, last page, transaction id."""
_LMDB_MAGIC = 0xBEEFC0DE


def _check_data_file(data: str) -> tuple[str | None, int]:
    """What is wrong with an LMDB data file, read without mapping it (a truncated map would
    crash the reader with SIGBUS): None when its meta pages are sound and the file holds
    every page they name; and the map size the file records."""
    try:
        with open(data, "rb") as f:
            head = f.read(_META.size)
            if len(head) < _META.size:
                return f"{DATA_FILE} is truncated ({len(head)} bytes)", 0
            fields = _META.unpack(head)
            if fields[5] != _LMDB_MAGIC:
                return f"{DATA_FILE} is not an LMDB file", 0
            if fields[6] != 1:
                return f"{DATA_FILE} is LMDB data format {fields[6]}, not 1", 0
            psize = fields[9]  # the free database's md_pad holds the page size
            if psize < 512 or psize & (psize - 1):
                return f"{DATA_FILE} has a corrupt meta page", 0
            best = None
            for page in (0, 1):
                f.seek(page * psize)
                raw = f.read(_META.size)
                if len(raw) < _META.size:
                    return f"{DATA_FILE} is truncated", 0
                m = _META.unpack(raw)
                if m[5] == _LMDB_MAGIC and (best is None or m[-1] > best[-1]):
                    best = m
            assert best is not None
            size = os.fstat(f.fileno()).st_size
            needed = (best[-2] + 1) * psize
            if size < needed:
                return f"{DATA_FILE} is truncated ({size} bytes, its pages need {needed})", 0
    except OSError as exc:
        return f"{DATA_FILE} is unreadable ({exc})", 0
    return None, int(best[8])


_VERIFY = r"""
import sys, lmdb
path, record, names = sys.argv[1], sys.argv[2].encode(), sys.argv[3].split(",")
env = lmdb.open(path, readonly=True, max_dbs=64, lib_version=0)
with env.begin() as txn:
    dbs = list(txn.cursor().iternext(values=False))
    for n in list(dbs):
        if n.decode(errors="replace") not in names:
            print("unknown database %r" % n); sys.exit(3)
    if b"meta" in dbs:
        meta = env.open_db(b"meta", txn=txn, create=False)
        fmt = txn.get(b"format", db=meta)
        if fmt is not None and fmt != record:
            print("from another format version (%s, this edge writes %s)"
                  % (fmt.decode(errors="replace"), record.decode())); sys.exit(3)
        if fmt is None and len(dbs) > 1:
            print("without a format record (an older version)"); sys.exit(3)
    elif dbs:
        print("without a format record (an older version)"); sys.exit(3)
    for n in dbs:
        db = env.open_db(n, txn=txn, create=False, dupsort=(n == b"tags"))
        for _ in txn.cursor(db=db).iternext(values=(n != b"bodies")):
            pass
print("ok")
"""


def _verify_in_child(path: str) -> str | None:
    """Open the tier read-only in a child process and walk every index (not the bodies):
    None when sound, else what is wrong. A crash of the child is an answer too."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _VERIFY, path, FORMAT_RECORD.decode(), ",".join(_DBS)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"it could not be checked ({exc})"
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return f"reading it crashed a checker process (signal {-proc.returncode})"
    lines = (proc.stdout.strip() or proc.stderr.strip() or "unreadable").splitlines()
    return f"it is {lines[-1]}" if proc.returncode == 3 else f"it is unreadable ({lines[-1]})"


async def from_config(cfg: EdgeConfig, place: Place) -> Built | None:
    """The node tier of the section `node_cache` (`edge.store.backends`), opened in this
    worker at the directory the supervisor prepared (`place.node_path`)."""
    if not cfg.node_cache_enabled or place.node_path is None:
        return None
    # refuse_late: a fill that raced a purge (requested before it) is not stored
    tier = NodeTier(
        place.node_path, cfg.node_cache_bytes, cfg.memory_max_object_bytes, refuse_late=True
    )
    return Built(tier)
