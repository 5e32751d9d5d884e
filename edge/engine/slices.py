"""Large objects in slices: fixed-size ranges fetched from the origin with Range, in parallel.

nginx's `slice`, Traffic Server's `slice` plugin and Fastly's segmented caching do this; so
does Gcore with 10 MB chunks. An object is sliced when its rule says `slice:` or, by default,
once the edge has seen it is larger than `slices.above`.

What is stored, for an object at key K (pure helpers below):

- the **manifest** at `K#slices`: an `Entry` with the object's headers as a 200 would carry
  them (no Content-Range, no Content-Length) and an empty body; `meta` holds `total` (the
  object's length), `slice` (the slice size) and `fill` (which fill made it). Its freshness
  is the object's (RFC 9111 rules on the first slice's headers).
- each **slice** i at `K#slice/<size>/<i>`: the bytes `i*size .. min(total, (i+1)*size)-1`,
  no stored value larger than a slice. A slice is only used with the manifest of its own
  fill (`meta["of"] == manifest.meta["fill"]`): after a purge or expiry of the manifest, old
  slices are unreachable at once and age out of the LRU. A purge of K also purges `K#slices`
  (`purged_with`); a tag purge reaches every slice (they carry the object's tags).

Agreement (RFC 9111 section 3.4, combining partial content): every slice's 206 must carry
the manifest's validator (a strong ETag, else Last-Modified) and total length. If a slice
disagrees the object changed during the fill: the fill starts again from a new manifest
(once; if nothing was sent to the client yet it does not notice, otherwise its connection
is cut so it never gets a body made of two versions). An origin that answers a sliced Range
with a 200 (it ignores Range) gets a whole fill through the normal miss path, and the key is
not sliced again for an hour.

How a request is answered (`Slicer.serve`): the slices it needs, in order. Each comes from
the tiers when stored, from a fill in flight in this worker (shared by every client that
needs it), or from a new fill; up to `parallel` fills run ahead of the one being sent, so a
cold full request starts answering as soon as the first slice's bytes arrive (they are
streamed on as they come) and memory holds at most about `parallel` slices for it. A cold
`Range` fetches only the slices that cover it.

Slices are stored in the node tier and Redis only, not in each worker's hot copy, so a
worker's own memory stays bounded by its fills in flight (without a node tier they go to the
hot tier, which is then the only copy).

Slices are how an object is stored, not how its hits are served: once every slice of a fill
is at hand (a whole GET just sent, or a hit that finds them all stored), the worker keeps the
object assembled whole in its hot tier (`Tiers.keep_hot`), under the object's own key, as
long as the manifest is fresh and no purge happened. The engine's hit path then answers it
like any whole object: one write, a Range cut from the same bytes, kept hits. An object too
large for half the hot tier is not assembled (its hits go on slice by slice).

Honest numbers: parallel slices multiply a per-response rate limit such as the lab's
`limit_rate 300k` (8 slices at once: 8 x 300 KB/s); they do not beat a link's real bandwidth,
and against an origin without a per-response limit they mainly add requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache
from multidict import CIMultiDict

from edge.cache import flow, policy, respond
from edge.cache.entry import Entry
from edge.cache.slicing import (
    Shape,
    bounds,
    count,
    covering,
    manifest_key,
    parse_content_range,
    slice_key,
    validator,
    whole_fields,
)
from edge.config.settings import SlicePolicy
from edge.http.answer import Answer, Responder
from edge.http.ranges import if_range_allows, plan_ranges
from edge.store.storage import Purge
from edge.upstream.client import OriginUnavailable, end_to_end
from edge.upstream.origin_conn import BrokeOff

if TYPE_CHECKING:
    from edge.engine.engine import Engine
    from edge.http.request import Request

log = logging.getLogger("edge.engine.slices")
CHUNK = 64 * 1024
RESTARTS = 1


class Changed(Exception):
    """A slice disagreed with the manifest: the object changed during the fill."""


class IgnoresRange(Exception):
    """The origin answered the slice's Range with a 200."""


class NotSliceable(Exception):
    """The origin's answer cannot be sliced (no validator, an error status...): whole fill."""


# -- one slice fetched ---------------------------------------------------------------------


class SliceFill:
    """One slice's fetch; its bytes are readable as they arrive by every client needing it."""

    def __init__(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.head: asyncio.Future[CIMultiDict[str]] = loop.create_future()
        self.done: asyncio.Future[bytes] = loop.create_future()
        self.chunks: list[bytes] = []
        self.size = 0
        self._more: asyncio.Future[None] = loop.create_future()

    def _fail(self, exc: BaseException) -> None:
        for fut in (self.head, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a fill nobody reads must not log a warning
        self._wake()

    def _wake(self) -> None:
        if not self._more.done():
            self._more.set_result(None)
        self._more = asyncio.get_running_loop().create_future()

    async def chunks_from(self, start: int) -> tuple[list[bytes], bool]:
        """Chunks from index `start` on, waiting for at least one unless the fill is over;
        and whether it is over (raises what the fill failed with)."""
        while start >= len(self.chunks) and not self.done.done():
            await asyncio.shield(self._more)
        if self.done.done():
            self.done.result()  # raises on failure
            return self.chunks[start:], True
        return self.chunks[start:], False


# -- the slicer of one worker --------------------------------------------------------------


class Slicer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cfg = engine.cfg
        self.tiers = engine.tiers
        self.fills: dict[str, SliceFill] = {}
        self.large: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=3600)
        self.ignores_range: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=3600)
        self.buffered = 0  # bytes held by this worker's fills in flight
        self.peak_buffered = 0
        self.slices_fetched = 0
        self.assembled = 0  # whole copies made from slices (`assemble`)
        self._assembly_tried: dict[str, float] = {}  # key -> the fill last tried
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- which requests -------------------------------------------------------------------

    def policy_for(self, route: flow.Lookup) -> SlicePolicy | None:
        """The slicing of this key: its rule's, or the default once it is known large."""
        key = route.key
        if key in self.ignores_range:
            return None
        rule = route.rule.slice
        if rule is not None:
            return rule if rule.size else None
        default = self.cfg.slicing
        if not default.above:
            return None
        if key in self.large or self._stored_manifest(key) is not None:
            return SlicePolicy(default.size, default.parallel)
        return None

    def learn(self, route: flow.Lookup, length: int | None, storable: bool) -> None:
        """A whole answer larger than `slices.above`: slice this key from the next miss on."""
        above = self.cfg.slicing.above
        if storable and above and length is not None and length > above and not route.rule.slice:
            self.large[route.key] = True

    # -- storage --------------------------------------------------------------------------

    def _stored_manifest(self, key: str) -> Entry | None:
        entries = self.tiers.stored(manifest_key(key))
        return entries[0] if entries else None

    async def _manifest(self, key: str) -> Entry | None:
        found = self._stored_manifest(key)
        if found is None:
            entries = await self.tiers.get_shared(manifest_key(key))
            found = entries[0] if entries else None
        return found

    def _local_slice(self, key: str, manifest: Entry, index: int) -> bytes | memoryview | None:
        """Slice `index` of this manifest's fill, if this node holds it."""
        skey = slice_key(key, int(manifest.meta["slice"]), index)
        for entry in self.tiers.stored(skey):
            if entry.meta.get("of") == manifest.meta["fill"]:
                return entry.body
        return None

    async def _stored_slice(
        self, key: str, manifest: Entry, index: int
    ) -> bytes | memoryview | None:
        """Slice `index` of this manifest's fill: from this node's storages, else from a
        shared one (then kept in the local ones: another node filled it)."""
        body = self._local_slice(key, manifest, index)
        if body is not None:
            return body
        skey = slice_key(key, int(manifest.meta["slice"]), index)
        fill = manifest.meta["fill"]
        for entry in await self.tiers.get_shared(skey):
            if entry.meta.get("of") == fill:
                self.tiers.put_local(entry, entry.response_time + entry.meta.get("keep", 0.0))
                return entry.body
        return None

    def assemble(
        self, key: str, manifest: Entry, parts: list[bytes | memoryview] | None = None
    ) -> Entry | None:
        """Keep the object whole in this worker's hot tier, from `parts` (every slice in
        order) or from the slices stored in this node (tried once per fill and worker). The
        whole entry, or None (not storable, too large, a slice missing, tried already)."""
        fill = manifest.meta["fill"]
        total = int(manifest.meta["total"])
        if not manifest.meta.get("store") or total > self.tiers.hot.max_bytes // 2:
            return None
        size = int(manifest.meta["slice"])
        if parts is None:
            if self._assembly_tried.get(key) == fill:
                return None
            if len(self._assembly_tried) >= 10_000:
                self._assembly_tried.clear()
            self._assembly_tried[key] = fill
            parts = []
            for index in range(count(total, size)):
                stored = self._local_slice(key, manifest, index)
                if stored is None:
                    return None  # not all here (a Range fill, or evicted): slice by slice
                parts.append(stored)
        body = b"".join(parts)
        if len(body) != total:
            return None
        meta = {k: v for k, v in manifest.meta.items() if k not in _SLICE_META}
        whole = Entry(
            key=key,
            status=200,
            headers=tuple((k, v) for k, v in manifest.headers if k.lower() != "x-edge-validator"),
            body=body,
            request_time=manifest.request_time,
            response_time=manifest.response_time,
            tags=manifest.tags,
            meta=meta,
        )
        if not self.tiers.keep_hot(whole, manifest.response_time + manifest.meta["keep"]):
            return None
        self.assembled += 1
        return whole

    # -- origin ---------------------------------------------------------------------------

    def _start_fill(
        self, req: Request, route: flow.Lookup, size: int, index: int, total: int | None
    ) -> SliceFill:
        skey = slice_key(route.key, size, index)
        fill = self.fills.get(skey)
        if fill is not None:
            return fill
        fill = SliceFill(index)
        self.fills[skey] = fill
        first = index * size
        last = first + size - 1 if total is None else bounds(index, size, total)[1]
        task = asyncio.get_running_loop().create_task(self._fetch(req, route, fill, first, last))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._forget(skey, fill))
        return fill

    def _forget(self, skey: str, fill: SliceFill) -> None:
        if self.fills.get(skey) is fill:
            del self.fills[skey]
        self.buffered -= fill.size

    async def _fetch(
        self, req: Request, route: flow.Lookup, fill: SliceFill, first: int, last: int
    ) -> None:
        from edge.upstream.fetch import NOT_FOR_SHARED_FETCH

        headers = self.engine.origin_headers(req, drop=(*NOT_FOR_SHARED_FETCH, "Accept-Encoding"))
        headers["Range"] = f"bytes={first}-{last}"
        headers["Accept-Encoding"] = "identity"  # the offsets address the identity bytes
        stats = self.engine.stats
        stats.origin_fetches += 1
        self.slices_fetched += 1
        try:
            resp = await self.engine.upstream.request("GET", route.target, headers)
        except OriginUnavailable as exc:
            stats.origin_errors[exc.kind] += 1
            fill._fail(exc)
            return
        try:
            got = CIMultiDict(end_to_end(resp.headers))
            got["X-Edge-Fetched-At"] = repr(time.time())
            if resp.status == 200:
                fill._fail(IgnoresRange())
                return
            if resp.status != 206:
                fill._fail(NotSliceable(f"origin answered {resp.status} to a slice"))
                return
            fill.head.set_result(got)
            async for chunk in resp.chunks():
                fill.chunks.append(chunk)
                fill.size += len(chunk)
                self.buffered += len(chunk)
                self.peak_buffered = max(self.peak_buffered, self.buffered)
                fill._wake()
                if fill.size > last - first + 1:
                    raise BrokeOff("slice longer than its range", False)
            body = b"".join(fill.chunks)
            if len(body) != last - first + 1:
                raise BrokeOff(f"slice of {len(body)} bytes, {last - first + 1} asked", False)
            fill.done.set_result(body)
            fill._wake()
        except (OSError, TimeoutError) as exc:
            log.warning("slice %d of %s broke off: %s", fill.index, route.key, exc)
            fill._fail(exc)
        finally:
            resp.release()

    # -- serving --------------------------------------------------------------------------

    async def serve(self, req: Request, conn: Responder, route: flow.Lookup) -> None:
        """Answer a GET or HEAD of a sliced object."""
        pol = self.policy_for(route)
        assert pol is not None
        for attempt in range(RESTARTS + 1):
            sent = [False]
            try:
                await self._serve(req, conn, route, pol, sent)
                return
            except Changed:
                log.info("%s changed during a sliced fill (attempt %d)", route.key, attempt + 1)
                self.tiers.purge_here(Purge(urls=[manifest_key(route.key)]))
                if sent[0]:
                    conn.abort()
                    return
            except IgnoresRange:
                self.ignores_range[route.key] = True
                if sent[0]:
                    conn.abort()
                    return
                await self.engine.miss(req, conn, route, flow.Miss("uri-miss", None, True), _NO_CC)
                return
            except NotSliceable as exc:
                if sent[0]:
                    conn.abort()
                    return
                log.info("%s: %s; passing through", route.key, exc)
                await self.engine.pass_through(req, conn, "slice", replayable=True)
                return
            except OriginUnavailable as exc:
                if sent[0]:
                    conn.abort()
                    return
                code = 504 if exc.kind == "timeout" else 502
                self.engine.reject(
                    req, conn, flow.Reject(code, str(exc), "MISS", f"detail={exc.kind}")
                )
                return
            except (ConnectionError, OSError, TimeoutError):
                conn.abort()
                return
        conn.abort()

    async def _serve(
        self,
        req: Request,
        conn: Responder,
        route: flow.Lookup,
        pol: SlicePolicy,
        sent: list[bool],
    ) -> None:
        now = time.time()
        from edge.http.fields import F_CACHE_CONTROL

        req_cc = (
            policy.parse_request(req.headers) if req.flags & F_CACHE_CONTROL else flow.NO_REQUEST_CC
        )
        manifest = await self._manifest(route.key)
        if manifest is not None and (
            manifest.invalidated
            or int(manifest.meta.get("slice", 0)) != pol.size
            or policy.reuse(manifest, req_cc, now) is not policy.Reuse.FRESH
        ):
            manifest = None  # expired or purged softly: a new fill (slices are not revalidated)
        fills: dict[int, SliceFill | bytes | memoryview] = {}
        if manifest is None and req_cc.only_if_cached:
            self.engine.reject(req, conn, flow.NOT_CACHED)
            return
        if manifest is None:
            manifest, first_fill = await self._new_manifest(req, route, pol)
            fills[first_fill.index] = first_fill
            x_cache, status = "MISS", "fwd=uri-miss; detail=sliced"
        else:
            whole = self.assemble(route.key, manifest)
            if whole is not None:
                # Kept whole from now on: this hit and the next are the engine's, as for
                # any whole object (edge.engine.engine: deliver, and its hit path).
                self.engine.deliver(req, conn, whole, "HIT", "", now)
                return
            x_cache = "HIT"
            status = respond.hit_status(manifest, now, "detail=sliced")
        total = int(manifest.meta["total"])
        size = int(manifest.meta["slice"])
        shape = Shape(total, str(manifest.header("X-Edge-Validator") or ""))
        fields = respond.client_fields(
            [(k, v) for k, v in manifest.headers if k.lower() != "x-edge-validator"],
            self.engine.ident,
        )
        fields += respond.cache_fields(
            self.engine.ident, x_cache, status, policy.current_age(manifest, now)
        )
        respond.add_accept_ranges(fields)
        headers = req.headers
        if flow.wants_304(headers, manifest):
            reply = Answer(304, respond.not_modified(fields))
            conn.send(req, reply)
            self.engine.stats.record(x_cache, 0)
            self.engine.log(req, 304, 0, x_cache)
            return
        if total == 0:
            raise NotSliceable("an empty object")
        first, last, code = 0, total - 1, 200
        range_header = headers.get("Range")
        if range_header is not None and if_range_allows(
            headers.get("If-Range"),
            manifest.header("ETag"),
            manifest.header("Last-Modified"),
            manifest.header("Date"),
        ):
            plan = plan_ranges(range_header, total)
            if plan.unsatisfiable:
                refused = respond.unsatisfiable(fields, total)
                conn.send(req, refused)
                self.engine.log(req, 416, refused.length or 0, x_cache)
                return
            if not plan.whole and len(plan.ranges) == 1:  # several ranges: the whole (14.2)
                first, last = plan.ranges[0]
                code = 206
                fields.append(("Content-Range", f"bytes {first}-{last}/{total}"))
        reply = Answer(code, fields, b"", last - first + 1)
        if req.method == "HEAD":
            conn.start(req, reply)
            conn.end()
            self.engine.stats.record(x_cache, 0)
            self.engine.log(req, code, 0, x_cache)
            return
        needed = covering(first, last, size)
        sources: dict[int, SliceFill | bytes | memoryview] = dict(fills)
        parts: list[bytes | memoryview] | None = [] if code == 200 else None
        conn.start(req, reply)
        sent[0] = True
        written = 0
        for pos, index in enumerate(needed):
            # Up to `parallel` slices ahead of the one being sent: stored, or being fetched.
            for ahead in needed[pos : pos + pol.parallel]:
                if ahead not in sources:
                    body = await self._stored_slice(route.key, manifest, ahead)
                    sources[ahead] = (
                        body
                        if body is not None
                        else self._start_fill(req, route, size, ahead, total)
                    )
            lo, hi = bounds(index, size, total)
            cut_lo, cut_hi = max(first, lo) - lo, min(last, hi) - lo
            source = sources.pop(index)
            if not isinstance(source, SliceFill):  # stored: bytes, or a view of a memfd
                await conn.write(source[cut_lo : cut_hi + 1])
                written += cut_hi - cut_lo + 1
                if parts is not None:
                    parts.append(source)
                continue
            await self._check_head(source, shape, size)
            written += await self._relay(source, conn, cut_lo, cut_hi)
            body = await asyncio.shield(source.done)
            self._store_slice(route, manifest, index, body)
            if parts is not None:
                parts.append(body)
        conn.end()
        if parts is not None:
            self.assemble(route.key, manifest, parts)  # the next hits: the engine's hit path
        self.engine.stats.record(x_cache, written)
        self.engine.log(req, code, written, x_cache)

    async def _relay(self, fill: SliceFill, conn: Responder, lo: int, hi: int) -> int:
        """Bytes lo..hi of a slice being fetched, passed on as they arrive."""
        offset, index, written = 0, 0, 0
        while True:
            chunks, over = await fill.chunks_from(index)
            for chunk in chunks:
                index += 1
                start, end = offset, offset + len(chunk)
                offset = end
                if end <= lo or start > hi:
                    continue
                piece = chunk[max(0, lo - start) : hi + 1 - start]
                await conn.write(piece)
                written += len(piece)
            if over:
                return written

    async def _check_head(self, fill: SliceFill, shape: Shape, size: int) -> None:
        """The slice belongs to the same object as the manifest (RFC 9111 section 3.4)."""
        head = await asyncio.shield(fill.head)
        if not shape.agrees(head, fill.index, size):
            raise Changed()

    def _store_slice(self, route: flow.Lookup, manifest: Entry, index: int, body: bytes) -> None:
        if not manifest.meta.get("store"):
            return
        size = int(manifest.meta["slice"])
        skey = slice_key(route.key, size, index)
        if any(e.meta.get("of") == manifest.meta["fill"] for e in self.tiers.stored(skey)):
            return
        entry = Entry(
            key=skey,
            status=206,
            headers=(),
            body=body,
            request_time=manifest.request_time,
            response_time=manifest.response_time,
            tags=manifest.tags,
            meta={**manifest.meta, "of": manifest.meta["fill"]},
        )
        self.tiers.store_below(entry, manifest.response_time + manifest.meta["keep"])

    async def _new_manifest(
        self, req: Request, route: flow.Lookup, pol: SlicePolicy
    ) -> tuple[Entry, SliceFill]:
        """Fetch the first slice the request needs; its head makes the manifest."""
        index = 0
        range_header = req.headers.get("Range")
        if range_header is not None:
            m = re.match(r"^\s*bytes\s*=\s*(\d+)\s*-", range_header)
            if m is not None:
                index = int(m.group(1)) // pol.size
        request_time = time.time()
        fill = self._start_fill(req, route, pol.size, index, None)
        head = await asyncio.shield(fill.head)
        got = parse_content_range(head.get("Content-Range"))
        tag = validator(head)
        if got is None or tag is None:
            raise NotSliceable("no Content-Range or no validator: slices could not be combined")
        first, last, total = got
        if (first, last) != bounds(index, pol.size, total):
            raise NotSliceable(f"origin answered bytes {first}-{last}/{total} to a slice")
        response_time = float(head.pop("X-Edge-Fetched-At", time.time()))
        fields = whole_fields(head)
        whole = CIMultiDict(fields)
        decision = policy.decide_store(
            "GET",
            200,
            req.headers,
            whole,
            route.rule.terms,
            self.cfg.defaults,
            response_time,
        )
        if policy.vary_names(whole):
            decision = policy.StoreDecision(False, "vary")  # slices of one variant only
        age0 = policy.initial_age(whole, request_time, response_time)
        meta = decision.meta(age0)
        meta.update(
            keep=decision.keep_seconds(),
            total=float(total),
            slice=float(pol.size),
            fill=response_time,
            store=1.0 if decision.store else 0.0,
        )
        manifest = Entry(
            key=manifest_key(route.key),
            status=200,
            headers=(*fields, ("X-Edge-Validator", tag)),
            body=b"",
            request_time=request_time,
            response_time=response_time,
            tags=route.rule.tags,
            meta=meta,
        )
        if decision.store:
            self.tiers.store_below(manifest, response_time + meta["keep"])
        return manifest, fill

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._tasks), timeout=timeout)


_NO_CC = flow.NO_REQUEST_CC
# A manifest's meta that describes the slicing, not the object.
_SLICE_META = frozenset({"total", "slice", "fill", "store", "of"})
