"""Compression at the edge: br, zstd and gzip, negotiated from Accept-Encoding.

Pure parts (no I/O): which coding a request gets (`negotiate`), whether an answer may be
compressed at all (`eligible`), the headers and ETag of an encoded variant (`variant_fields`,
with `edge.http.validators.variant_etag`), the encoded variant of a stored entry
(`encoded_entry`) and the choice among the stored variants on a hit (`select`). The I/O
parts are small: `StreamEncoder` compresses an answer as it streams to one client (a miss,
or an answer that is not stored), and the engine compresses each stored object once per
coding after it is stored (`encode_all`, in a thread), keeping the codings as variants of
the one entry. A hit never compresses.

How the variants are kept. The identity entry stays what the origin sent, plus
`Vary: Accept-Encoding` (RFC 9110 section 12.5.3: downstream caches must not hand a `br`
body to a client that did not ask for it). Each encoded copy is an `Entry` under the same
key whose `vary` adds the pseudo-field `~coding` (so `keys.select_variant` never picks one by
itself: a request never carries that field) and whose `meta["of"]` is the identity's
`response_time`: a coded copy of an older identity is never served (after a refill or a
revalidation it is ignored until it is encoded again). Purging the key purges every copy.

ETags (RFC 9110 section 8.8.3): a strong ETag `"x"` becomes `"x-br"` (`"x-zstd"`, `"x-gzip"`)
on the coded variant, so If-None-Match against a coded copy is answered right, and a strong
validator never names two different byte sequences. A weak one `W/"x"` stays weak and is
suffixed the same way.

Range on an encoded variant: not served. A request with Range is answered from the identity
entry (its bytes are what the offsets address, as nginx's gzip filter also leaves ranges to
identity); the 206 says `Vary: Accept-Encoding`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace

import brotli
import zstandard

from edge.base.ledger import DEFAULT_LIMITS, ITEM_OVERHEAD, MAX_KEPT_VALUE, Account
from edge.cache.entry import Entry
from edge.config.settings import CODING_NAMES, Compression
from edge.http.answer import Answer
from edge.http.validators import variant_etag
from edge.http.weights import weighted
from edge.store.tiers import Tiers
from edge.upstream.fetch import Sink

log = logging.getLogger("edge.engine.compress")

CODING_FIELD = "~coding"  # the pseudo request field naming an encoded variant
CODINGS = CODING_NAMES  # the edge's preference among those the client accepts
Settings = Compression


# -- negotiation (RFC 9110 section 12.5.3) ------------------------------------------------


def accepted(accept_encoding: str | None) -> dict[str, float]:
    """Each coding named in Accept-Encoding with its weight (x-gzip counts as gzip)."""
    out: dict[str, float] = {}
    if not accept_encoding:
        return out
    for name, q in weighted(accept_encoding):
        out["gzip" if name == "x-gzip" else name] = max(0.0, min(1.0, q))
    return out


def negotiate(accept_encoding: str | None, offered: Sequence[str]) -> str | None:
    """The coding to send, or None for identity. Highest weight first, then the edge's order.
    12.5.3: "*" matches any coding not listed; q=0 means "not acceptable"."""
    weights = accepted(accept_encoding)
    if not weights:
        return None
    star = weights.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity_q = weights.get("identity", star if star is not None else 1.0)
    return best if best_q >= identity_q or identity_q == 0 else None


MAX_PICKS = 4096
# All that `negotiate` reads of Accept-Encoding, whatever the edge offers: the weights of
# the codings it makes, of "*" and of "identity".
CLASS_NAMES = (*CODINGS, "*", "identity")


def accept_class(accept_encoding: str) -> str:
    """Accept-Encoding reduced to what the choice depends on, in one canonical form:
    `negotiate` answers the same for it as for the value, for any codings offered. A value
    of any length (a client's own) comes to a few dozen bytes."""
    weights = accepted(accept_encoding)
    return ",".join(f"{n};q={weights[n]!r}" for n in CLASS_NAMES if n in weights)


class Choices:
    """The coding choices of one worker, kept for the hits: Accept-Encoding values (short
    ones only) and their class, the coding chosen for each class among what is offered, and
    the coded copy picked for an identity and a class (`VariantMaker.hit_variant`). Counted
    in the worker's ledger (kind "codings"); past its bound, all dropped (each is made again
    by its next request)."""

    def __init__(self, account: Account | None = None) -> None:
        self.account = (
            account if account is not None else Account("codings", DEFAULT_LIMITS["codings"])
        )
        self.classes: dict[bytes, bytes] = {}  # a short Accept-Encoding value -> its class
        self.chosen: dict[tuple[str, tuple[str, ...]], str | None] = {}
        # (key, identity's response_time, class) -> the coded copy a hit sends
        self.picks: dict[tuple[str, float, bytes], Entry] = {}

    def accept_class(self, value: bytes) -> bytes:
        """`accept_class` of a request's Accept-Encoding as sent."""
        cls = self.classes.get(value)
        if cls is None:
            cls = accept_class(value.decode("latin-1")).encode("ascii")
            if len(value) <= MAX_KEPT_VALUE and self.make_room(len(value) + len(cls)):
                self.classes[value] = cls
        return cls

    def negotiate(self, accept_encoding: str | None, offered: tuple[str, ...]) -> str | None:
        """`negotiate`, kept for short values (a class is one)."""
        if not accept_encoding or len(accept_encoding) > MAX_KEPT_VALUE:
            return negotiate(accept_encoding, offered)
        slot = (accept_encoding, offered)
        if slot in self.chosen:
            return self.chosen[slot]
        coding = negotiate(accept_encoding, offered)
        if self.make_room(len(accept_encoding) + 16 * len(offered)):
            self.chosen[slot] = coding
        return coding

    def keep_pick(self, slot: tuple[str, float, bytes], picked: Entry) -> None:
        if len(self.picks) >= MAX_PICKS:
            self.clear()
        if self.make_room(len(slot[0]) + len(slot[2])):
            self.picks[slot] = picked

    def make_room(self, size: int) -> bool:
        """Count one more kept item of `size` bytes; all dropped first when it does not fit."""
        size += ITEM_OVERHEAD
        if self.account.take(size):
            return True
        self.clear()
        return self.account.take(size)

    def clear(self) -> None:
        self.classes.clear()
        self.chosen.clear()
        self.picks.clear()
        self.account.reset()


# -- what may be compressed ----------------------------------------------------------------


def eligible(
    status: int, fields: Iterable[tuple[str, str]], length: int | None, settings: Settings
) -> bool:
    """May this answer be sent compressed? Not images or video (anything but the text-like
    types), not already encoded, not `no-transform` (RFC 9111 section 5.2.2.6), not a body
    known to be under `min_size`, not a 206 (its bytes are a range of the identity).
    One pass over the fields (every miss asks)."""
    if not settings.enabled or status != 200:
        return False
    if length is not None and length < settings.min_size:
        return False
    ctype = ""
    for k, v in fields:
        name = k.lower()
        if name == "content-type":
            if not ctype:
                ctype = v.split(";")[0].strip().lower()
        elif name == "content-encoding":
            if v and v.strip().lower() != "identity":
                return False
        elif name == "content-range" or (name == "cache-control" and "no-transform" in v.lower()):
            return False
    return bool(ctype) and any(ctype.startswith(t) for t in settings.types)


# -- headers of an encoded variant -----------------------------------------------------------


def with_vary(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields with Accept-Encoding added to Vary (once)."""
    out = list(fields)
    names = [n.strip().lower() for k, v in out if k.lower() == "vary" for n in v.split(",")]
    if "accept-encoding" in names or "*" in names:
        return out
    return [*out, ("Vary", "Accept-Encoding")]  # RFC 9110 5.3: field lines combine


def variant_fields(fields: Iterable[tuple[str, str]], coding: str) -> list[tuple[str, str]]:
    """The identity's fields as they are for the `coding` variant: Content-Encoding set,
    ETag suffixed, Vary naming Accept-Encoding, no Content-Length (the body's own counts)."""
    out: list[tuple[str, str]] = []
    for k, v in with_vary(fields):
        lname = k.lower()
        if lname in ("content-length", "content-encoding", "accept-ranges"):
            continue
        if lname == "etag":
            v = variant_etag(v, coding)
        out.append((k, v))
    out.append(("Content-Encoding", coding))
    return out


# -- whole-body compression (stored objects) -------------------------------------------------


def encode(body: bytes | memoryview, coding: str, level: int) -> bytes:
    if coding == "br":
        return bytes(brotli.compress(body, quality=level))
    if coding == "zstd":
        return bytes(zstandard.ZstdCompressor(level=level).compress(body))
    if coding == "gzip":
        return gzip_bytes(body, level)
    raise ValueError(f"unknown coding {coding!r}")


def gzip_bytes(body: bytes | memoryview, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(body) + c.flush()


def is_coded(entry: Entry) -> bool:
    return any(name == CODING_FIELD for name, _ in entry.vary)


def coding_of(entry: Entry) -> str | None:
    for name, value in entry.vary:
        if name == CODING_FIELD:
            return value
    return None


def identity_with_vary(entry: Entry) -> Entry:
    """The identity entry as stored when it has coded siblings: Vary names Accept-Encoding."""
    fields = tuple(with_vary(entry.headers))
    return entry if fields == entry.headers else replace(entry, headers=fields)


def encoded_entry(identity: Entry, coding: str, body: bytes) -> Entry:
    """The `coding` variant of a stored identity entry, sharing its times and freshness."""
    meta = dict(identity.meta)
    meta["of"] = identity.response_time
    return replace(
        identity,
        headers=tuple(variant_fields(identity.headers, coding)),
        body=body,
        vary=(*identity.vary, (CODING_FIELD, coding)),
        meta=meta,
    )


def encode_all(identity: Entry, settings: Settings) -> list[Entry]:
    """Every worthwhile coded variant of `identity` (CPU-bound: the engine runs it in a
    thread; brotli, zstandard and zlib release the GIL while they compress). A coding that
    does not make the body smaller is not kept."""
    out: list[Entry] = []
    for coding in settings.codings:
        body = encode(identity.body, coding, settings.level(coding, stored=True))
        if len(body) < len(identity.body):
            out.append(encoded_entry(identity, coding, body))
    return out


def select(
    identity: Entry | None,
    entries: Sequence[Entry],
    accept_encoding: str | None,
    now: float,
    choices: Choices | None = None,
) -> Entry | None:
    """On a hit: the coded sibling of `identity` this client should get, else `identity`.
    Only a fresh identity's own copies (same response_time, same other Vary'd values).
    `choices`: the worker's kept choices (none: negotiated now)."""
    if identity is None or identity.status != 200 or identity.invalidated:
        return identity
    siblings = {
        c: e
        for e in entries
        if (c := coding_of(e)) is not None
        and e.meta.get("of") == identity.response_time
        and e.vary[:-1] == identity.vary
    }
    if not siblings:
        return identity
    from edge.cache import policy

    if policy.fresh_until(identity) <= now:
        return identity  # a revalidation uses the identity's own validators
    offered = tuple(c for c in CODINGS if c in siblings)
    if choices is not None:
        coding = choices.negotiate(accept_encoding, offered)
    else:
        coding = negotiate(accept_encoding, offered)
    return siblings[coding] if coding is not None else identity


def identities(entries: Sequence[Entry]) -> list[Entry]:
    return [e for e in entries if not is_coded(e)]


# -- streaming (answers compressed as they go to one client) ----------------------------------


class StreamEncoder:
    """Compresses one streamed body; each `write` flushes so the client gets bytes as the
    origin sends them (a slow origin still shows progress)."""

    def __init__(self, coding: str, level: int) -> None:
        self.coding = coding
        if coding == "br":
            self._br = brotli.Compressor(quality=level)
        elif coding == "zstd":
            self._zstd = zstandard.ZstdCompressor(level=level).compressobj()
        elif coding == "gzip":
            self._gz = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        else:
            raise ValueError(f"unknown coding {coding!r}")

    def feed(self, data: bytes) -> bytes:
        if self.coding == "br":
            return bytes(self._br.process(data)) + bytes(self._br.flush())
        if self.coding == "zstd":
            return bytes(self._zstd.compress(data)) + bytes(
                self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            )
        return self._gz.compress(data) + self._gz.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        if self.coding == "br":
            return bytes(self._br.finish())
        if self.coding == "zstd":
            return bytes(self._zstd.flush())
        return self._gz.flush()


class EncodingSink:
    """A sink (see `edge.upstream.fetch.Sink`) that compresses what it writes to `out`."""

    def __init__(self, out: Sink, coding: str, level: int) -> None:
        self.out = out
        self.encoder = StreamEncoder(coding, level)
        self.sent = 0

    async def write(self, data: bytes) -> None:
        piece = self.encoder.feed(data)
        if piece:
            self.sent += len(piece)
            await self.out.write(piece)

    async def finish(self) -> None:
        piece = self.encoder.finish()
        if piece:
            self.sent += len(piece)
            await self.out.write(piece)


def stream_reply(reply: Answer, coding: str | None) -> Answer:
    """The head of a compressible answer being streamed: coded (no Content-Length, the body
    is chunked) when the client takes `coding`, identity otherwise; Vary says which."""
    if coding is None:
        return Answer(reply.status, with_vary(reply.fields), reply.body, reply.length, reply.close)
    return Answer(reply.status, variant_fields(reply.fields, coding), b"", None, reply.close)


class VariantMaker:
    """Compresses each stored compressible object once per coding, in a thread, and stores
    the coded copies beside it (the hook `Collapser.on_store` calls `stored`)."""

    def __init__(self, settings: Settings, tiers: Tiers, choices: Choices | None = None) -> None:
        self.settings = settings
        self.tiers = tiers
        self.choices = choices if choices is not None else Choices()
        self.made = 0  # coded variants stored
        self.seconds = 0.0  # CPU-seconds spent making them (thread time)
        self._tasks: set[asyncio.Task[None]] = set()
        self._making: set[tuple[str, float]] = set()  # identities whose copies are on the way

    def stored(self, entry: Entry, until: float) -> Entry:
        """The entry as it is to be stored. Its coded variants are made on first demand (the
        first hit that accepts a coding, `hit_variant`): an object nobody asks again for is
        never compressed (a miss costs no compression work)."""
        if is_coded(entry) or not eligible(
            entry.status, entry.headers, len(entry.body), self.settings
        ):
            return entry
        identity = identity_with_vary(entry)
        identity.meta["cz"] = 1.0  # coded copies follow on demand: workers look for them
        identity.meta["keep_until"] = until
        return identity

    def demand(self, identity: Entry) -> None:
        """Make the coded copies of `identity` in the background, once per worker."""
        slot = (identity.key, identity.response_time)
        if slot in self._making or "cz" not in identity.meta:
            return
        if len(self._making) >= MAX_PICKS:
            self._making.clear()
        self._making.add(slot)
        until = identity.meta.get("keep_until", identity.response_time + 3600.0)
        task = asyncio.get_running_loop().create_task(self._make(identity, until))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _make(self, identity: Entry, until: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            variants, seconds = await loop.run_in_executor(
                None, _timed_encode_all, identity, self.settings
            )
        except Exception as exc:  # a codec error must not take the worker down
            log.warning("compressing %s failed: %r", identity.key, exc)
            return
        self.seconds += seconds
        for variant in variants:
            self.tiers.store(variant, until)
            self.made += 1

    def hit_variant(
        self, entries: list[Entry], accept_encoding: bytes | None, has_range: bool
    ) -> Entry | None:
        """On the engine's hit path: the entry for a request that carries nothing the answer
        depends on but (maybe) Accept-Encoding, when the stored entries are one identity
        without other Vary and its coded copies; None when they are anything else (the full
        lookup decides)."""
        identity: Entry | None = None
        for e in entries:
            if not is_coded(e):
                if identity is not None or e.vary:
                    return None
                identity = e
        if identity is None:
            return None
        if accept_encoding is None or has_range or "cz" not in identity.meta:
            return identity
        choices = self.choices
        slot = (identity.key, identity.response_time, accept_encoding)
        picked = choices.picks.get(slot)
        if picked is not None and not picked.invalidated and not identity.invalidated:
            return picked  # freshness is checked by the caller, on the entry returned
        picked = self.choose(identity, entries, accept_encoding.decode("latin-1"))
        if picked is not None and picked is not identity:
            choices.keep_pick(slot, picked)  # a coded copy of this very identity: stays right
        return picked

    def choose(self, identity: Entry, entries: list[Entry], accept_encoding: str | None) -> Entry:
        """The entry a client with this Accept-Encoding gets among `identity` and its coded
        copies (`select`); identity on the first demand, which has the copies made."""
        entries = self.entries_for(identity, entries)
        picked = select(identity, entries, accept_encoding, time.time(), self.choices) or identity
        if picked is identity:
            self.demand(identity)  # first demand: identity now, coded copies soon
        return picked

    def entries_for(self, identity: Entry, entries: list[Entry]) -> list[Entry]:
        """`entries`, or, when the identity's coded copies are not among them yet (another
        worker made them after this worker's hot copy was taken), the local storages'."""
        if any(e.meta.get("of") == identity.response_time for e in entries):
            return entries
        tiers = self.tiers
        if not tiers.local:
            return entries
        fresh = tiers.stored(identity.key)
        if not any(e.meta.get("of") == identity.response_time for e in fresh):
            return entries
        tiers.refresh_hot(fresh)
        return fresh

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


def _timed_encode_all(identity: Entry, settings: Settings) -> tuple[list[Entry], float]:
    t0 = time.thread_time()
    variants = encode_all(identity, settings)
    return variants, time.thread_time() - t0
