"""One origin fetch, shared by every client waiting for the same key.

The leader of a miss starts a `Fetch`; collapsed requests for the same key join it.
The fetch reads the origin once, writes each chunk to every client attached to it
(so the first byte of a 5 MB miss reaches clients before the last leaves the origin),
keeps the bytes when the answer may be stored, and stores it when complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from multidict import CIMultiDict, MultiMapping

from edge.cache import policy
from edge.cache.entry import Entry
from edge.cache.keys import vary_values
from edge.upstream.client import OriginUnavailable, Upstream, end_to_end
from edge.upstream.origin_conn import OriginResponse

log = logging.getLogger("edge.upstream.fetch")
CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024  # read whole before answering: one write to the client, no streaming
LEADER_GRACE = 30.0  # seconds a fetch waits for its leader's `leader_ready` at most


# Sent by the client, they would change what the origin answers to the shared fetch:
# the edge asks for the whole, current object and answers the client's conditions itself.
# A shared fetch carries no body either (a body on a GET is outside the cache key), so
# neither does it carry the body's framing: a Content-Length without its bytes would leave
# the origin waiting on a pooled connection, reading the next request as the body.
NOT_FOR_SHARED_FETCH = (
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
    "Content-Length",
    "Content-Type",
    "Content-Encoding",
)


@dataclass(slots=True)
class Head:
    """What the origin answered, known before the body arrives."""

    kind: Literal["stream", "entry", "error"]
    status: int = 0
    headers: CIMultiDict[str] | None = None
    decision: policy.StoreDecision | None = None
    entry: Entry | None = None  # kind "entry": a 304-refreshed or shared-tier entry to serve
    error: OriginUnavailable | None = None
    origin_ms: float = 0.0
    vary: tuple[tuple[str, str], ...] = ()
    length: int | None = None  # the origin's Content-Length, when it sent one
    body: bytes | None = None  # a small body, read whole before the head was published


class Sink(Protocol):
    """Where a client's copy of the body goes (a connection, or a Range window on one)."""

    async def write(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class FetchSpec:
    key: str
    path_qs: str
    headers: CIMultiDict[str]
    request_headers: MultiMapping[str]  # the leader's, for Vary and the storage decision
    rule: policy.RuleTerms
    tags: tuple[str, ...]
    stale: Entry | None  # a stored response being revalidated, if any


Store = Callable[[Entry, float], None]
Hold = Callable[[str], Callable[[], None] | None]
"""Marks a key as about to be stored by this worker, for the node's other workers (its
release, or None): `edge.store.tiers.Tiers.hold_store`."""


class Fetch:
    def __init__(self, spec: FetchSpec, max_object_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        self.spec = spec
        self.head: asyncio.Future[Head] = loop.create_future()
        self._leaders_head: asyncio.Future[Head] | None = None  # `leader_head`
        self.done: asyncio.Future[Entry | None] = loop.create_future()
        self.failed = False
        self.max_object_bytes = max_object_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._buffering = False
        self._listeners: list[Sink] = []
        self._reading = False
        self.followers = 0
        # The body is read once the leader is ready to receive it (or has given up on it):
        # a future made only when the fetch waits for it (`_until_leader_ready`).
        self._leader_ready = False
        self._leader_waiter: asyncio.Future[None] | None = None
        # A small body read whole, to be stored once the leader has answered (`_small`).
        self._pending_store: Callable[[], None] | None = None

    def leader_ready(self) -> None:
        """The leader attached, or will not: the body may be read now. A small body's
        leader calls it once its answer is written: the body is stored then, at once."""
        self._leader_ready = True
        waiter = self._leader_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.store_now()

    async def _until_leader_ready(self) -> None:
        """Until `leader_ready` (30 s at most: a leader that never says so is a bug; a timer
        handle, not `asyncio.timeout`, which costs a miss more than the wait itself)."""
        if self._leader_ready:
            return
        loop = asyncio.get_running_loop()
        waiter = self._leader_waiter = loop.create_future()
        guard = loop.call_later(LEADER_GRACE, self.leader_ready)
        try:
            await waiter
        finally:
            guard.cancel()

    def store_now(self) -> None:
        """Store the small body read whole, if that is still to do (once). It runs in the
        leader's stack: a failure is this fetch's (logged, nothing stored), never the
        leader's, and no one waiting for the entry is left hanging."""
        pending, self._pending_store = self._pending_store, None
        if pending is None:
            return
        try:
            pending()
        except Exception:
            log.exception("storing %s failed", self.spec.key)
            self.failed = True
            self._finish(None)

    async def entry(self) -> Entry | None:
        """The stored entry, once the fetch is complete (None: not stored)."""
        self.store_now()
        return await asyncio.shield(self.done)

    async def run(
        self,
        upstream: Upstream,
        defaults: policy.Defaults,
        store: Store,
        hold: Hold | None = None,
    ) -> None:
        """Fetch from the origin, publish the head, stream and store the body. `hold`: what
        marks a small answer's key from its head to its store, for the node's other workers
        (`_small`)."""
        spec = self.spec
        try:
            t0 = time.monotonic()
            request_time = time.time()
            try:
                resp = await upstream.request("GET", spec.path_qs, spec.headers)
            except OriginUnavailable as exc:
                self._set_head(Head("error", error=exc))
                self._finish(None)
                return
            response_time = time.time()
            origin_ms = (time.monotonic() - t0) * 1000
            try:
                await self._consume(
                    resp, defaults, store, hold, request_time, response_time, origin_ms
                )
            finally:
                resp.release()
        except Exception as exc:  # a bug must not leave waiters hanging
            log.exception("fetch of %s failed", spec.key)
            self.failed = True
            if not self.head.done():
                self._set_head(Head("error", error=OriginUnavailable("protocol", str(exc))))
            self._finish(None)

    async def _consume(
        self,
        resp: OriginResponse,
        defaults: policy.Defaults,
        store: Store,
        hold: Hold | None,
        request_time: float,
        response_time: float,
        origin_ms: float,
    ) -> None:
        spec = self.spec
        headers = CIMultiDict(end_to_end(resp.headers))
        if resp.status == 304 and spec.stale is not None:
            entry = self._freshen(spec.stale, headers, defaults, request_time, response_time)
            if entry is not None:
                store(entry, entry.response_time + entry.meta["keep"])
            self._set_head(
                Head("entry", status=304, entry=entry or spec.stale, origin_ms=origin_ms)
            )
            self._finish(entry)
            return
        decision = policy.decide_store(
            "GET", resp.status, spec.request_headers, headers, spec.rule, defaults, response_time
        )
        length = resp.content_length
        if decision.store and length is not None and length > self.max_object_bytes:
            decision = policy.StoreDecision(False, "too-big")
        vary = vary_values(policy.vary_names(headers), spec.request_headers)
        if length is not None and length <= SMALL_BODY and resp.status != 204:
            await self._small(resp, headers, decision, vary, store, hold, request_time, origin_ms)
            return
        self._buffering = decision.store
        self._set_head(
            Head(
                "stream",
                resp.status,
                headers,
                decision,
                origin_ms=origin_ms,
                vary=vary,
                length=length,
            )
        )
        self._reading = True
        try:
            await self._until_leader_ready()
            async for chunk in resp.chunks():
                if self._buffering:
                    self._size += len(chunk)
                    if self._size > self.max_object_bytes:
                        self._buffering = False
                        self._chunks.clear()
                    else:
                        self._chunks.append(chunk)
                if self._listeners:
                    await self._broadcast(chunk)
                elif not self._buffering:
                    break  # nobody listens and nothing will be stored: stop reading
            else:
                self._reading = False
        except (OSError, TimeoutError) as exc:
            log.warning("origin body of %s broke off: %s", spec.key, exc)
            self.failed = True
            self._finish(None)
            return
        finally:
            self._reading = False
        if not self._buffering or self.failed:
            self._finish(None)
            return
        body = b"".join(self._chunks)
        if length is not None and len(body) != length:
            self.failed = True
            self._finish(None)
            return
        self._store(resp.status, headers, decision, vary, body, store, request_time, response_time)

    async def _small(
        self,
        resp: OriginResponse,
        headers: CIMultiDict[str],
        decision: policy.StoreDecision,
        vary: tuple[tuple[str, str], ...],
        store: Store,
        hold: Hold | None,
        request_time: float,
        origin_ms: float,
    ) -> None:
        """A body of known, small length: read it whole, then publish the head with it (the
        clients get one write each) and store it once the leader has written its answer
        (`leader_ready`): the storing, most of a miss's own work, runs while the answer
        travels, not before it. The worker does nothing else in between, so its next request
        finds the entry. From the head to the store the key is held in the node (`hold`):
        another worker asked for it in that moment waits for the store and
        serves it as a hit (`Collapser.stored_elsewhere`), so that once a client has the
        answer every worker of the node finds it."""
        response_time = time.time()
        try:
            body = await resp.read()
        except (OSError, TimeoutError) as exc:
            log.warning("origin body of %s broke off: %s", self.spec.key, exc)
            self.failed = True
            self._finish(None)
            return
        if len(body) != resp.content_length:
            self.failed = True
            self._finish(None)
            return
        head = Head("stream", resp.status, headers, decision, origin_ms=origin_ms, vary=vary)
        head.length, head.body = len(body), body
        if not decision.store:
            self._set_head(head)
            self._finish(None)
            return
        self._pending_store = functools.partial(
            self._store,
            resp.status,
            headers,
            decision,
            vary,
            body,
            store,
            request_time,
            response_time,
        )
        release = hold(self.spec.key) if hold is not None else None
        try:
            self._set_head(head)
            await self._until_leader_ready()
            self.store_now()
        finally:
            if release is not None:
                release()

    def _store(
        self,
        status: int,
        headers: CIMultiDict[str],
        decision: policy.StoreDecision,
        vary: tuple[tuple[str, str], ...],
        body: bytes,
        store: Store,
        request_time: float,
        response_time: float,
    ) -> None:
        age0 = policy.initial_age(headers, request_time, response_time)
        meta = decision.meta(age0)
        meta["keep"] = decision.keep_seconds()
        entry = Entry(
            key=self.spec.key,
            status=status,
            headers=tuple(headers.items()),
            body=body,
            request_time=request_time,
            response_time=response_time,
            vary=vary,
            tags=self.spec.tags + _origin_tags(headers),
            meta=meta,
        )
        store(entry, response_time + meta["keep"])
        self._finish(entry)

    def _freshen(
        self,
        stale: Entry,
        headers_304: CIMultiDict[str],
        defaults: policy.Defaults,
        request_time: float,
        response_time: float,
    ) -> Entry | None:
        """RFC 9111 section 4.3.4: a 304 refreshes the stored response's headers and age."""
        if not policy.freshen_matches(stale, headers_304):
            return None
        merged = policy.merged_headers(stale.headers, headers_304.items())
        merged_view = CIMultiDict(merged)
        decision = policy.decide_store(
            "GET",
            stale.status,
            self.spec.request_headers,
            merged_view,
            self.spec.rule,
            defaults,
            response_time,
        )
        if not decision.store:
            return None
        meta = decision.meta(policy.initial_age(headers_304, request_time, response_time))
        meta["keep"] = decision.keep_seconds()
        return Entry(
            key=stale.key,
            status=stale.status,
            headers=merged,
            body=stale.body,
            request_time=request_time,
            response_time=response_time,
            vary=stale.vary,
            tags=stale.tags,
            meta=meta,
        )

    async def _broadcast(self, chunk: bytes) -> None:
        listeners = list(self._listeners)
        results = await asyncio.gather(*(r.write(chunk) for r in listeners), return_exceptions=True)
        for resp, result in zip(listeners, results, strict=True):
            if isinstance(result, BaseException):
                with contextlib.suppress(ValueError):
                    self._listeners.remove(resp)

    def can_attach(self) -> bool:
        """A client can still get the whole body: nothing was dropped from the buffer yet."""
        return not self.failed and (self._buffering or (self._size == 0 and not self.done.done()))

    async def attach(self, resp: Sink) -> bool:
        """Send what was read so far, then every further chunk, to `resp`; False when the
        client went away. Returns once the whole body has been sent."""
        sent = 0
        while True:
            if sent < len(self._chunks) and self._buffering:
                for chunk in self._chunks[sent:]:
                    await resp.write(chunk)
                    sent += 1
                continue
            if not self._reading or self.done.done():
                break
            self._listeners.append(resp)
            break
        self.leader_ready()
        if resp in self._listeners:
            await asyncio.shield(self.done)
            if resp not in self._listeners:
                return False
            self._listeners.remove(resp)
        else:
            # The body was complete before this client attached: send the rest from the buffer.
            await asyncio.shield(self.done)
            for chunk in self._chunks[sent:]:
                await resp.write(chunk)
        return not self.failed

    def serve_entry(self, entry: Entry) -> None:
        """Another node filled the shared tier: everyone waiting gets that entry."""
        self._set_head(Head("entry", status=200, entry=entry))
        self._finish(entry)

    def leader_head(self) -> asyncio.Future[Head]:
        """The head, for the client that started this fetch: a future of its own, which
        that client going away (its task cancelled) cannot cancel for the others (what
        `asyncio.shield` does, without its extra turn of the loop)."""
        waiter = self._leaders_head
        if waiter is None:
            waiter = self._leaders_head = asyncio.get_running_loop().create_future()
            if self.head.done():
                waiter.set_result(self.head.result())
        return waiter

    def _set_head(self, head: Head) -> None:
        if not self.head.done():
            self.head.set_result(head)
            waiter = self._leaders_head
            if waiter is not None and not waiter.done():
                waiter.set_result(head)

    def _finish(self, entry: Entry | None) -> None:
        if not self.head.done():
            self._set_head(Head("error", error=OriginUnavailable("protocol", "no answer")))
        if not self.done.done():
            self.done.set_result(entry)


def _origin_tags(headers: MultiMapping[str]) -> tuple[str, ...]:
    """Surrogate-Key / Cache-Tag values (space- or comma-separated) as purge tags."""
    tags: list[str] = []
    for name in ("Surrogate-Key", "Cache-Tag"):
        for value in headers.getall(name, []):
            for tag in value.replace(",", " ").split():
                if tag not in tags and len(tag) <= 256:
                    tags.append(tag)
    return tuple(tags[:64])
