"""The request flow of an edge node, in the vocabulary Varnish users know:

  recv     -> is it a method and path we may cache? (`handle`)
  hash     -> the primary key and the Vary'd variant (`edge.keys`)
  hit      -> fresh, or stale but allowed: deliver from the stored entry (`edge.deliver`)
  miss     -> fetch once for everyone waiting (`edge.fetch`), stream, store
  pass     -> straight to the origin and back, nothing stored (`pass_through`)
  deliver  -> with X-Cache, Cache-Status, Age, Via, X-Served-By

The decisions themselves come from the pure core in `edge.policy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from cachetools import TTLCache
from multidict import CIMultiDict

from edge import policy
from edge.config import EdgeConfig, QueryPolicy, Rule
from edge.deliver import Identity, client_headers, error_response, from_entry, hit_status, mark
from edge.entry import Entry
from edge.fetch import CHUNK, Fetch, FetchSpec, Head
from edge.keys import cache_key, query_names, select_variant, vary_values
from edge.stats import Stats
from edge.tiers import Tiers
from edge.upstream import OriginUnavailable, Upstream, end_to_end, forward_headers

log = logging.getLogger("edge.proxy")

# Sent by the client, they would change what the origin answers to the shared fetch:
# the edge asks for the whole, current object and answers the client's conditions itself.
CLIENT_CONDITIONALS = (
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
)
NO_RULE = Rule(match="/*")
SAFE_METHODS = frozenset({"GET", "HEAD"})


class EdgeNode:
    """Everything one edge process needs to answer requests."""

    def __init__(self, cfg: EdgeConfig, tiers: Tiers, upstream: Upstream) -> None:
        self.cfg = cfg
        self.tiers = tiers
        self.upstream = upstream
        self.ident = Identity(cfg.node, cfg.keep_tag_headers)
        self.stats = Stats()
        self.flights: dict[str, Fetch] = {}
        self.refreshing: set[str] = set()
        # Keys whose last answer was stored: later misses on them are collapsed.
        self.cacheable: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=3600)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- recv ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        if method not in SAFE_METHODS:
            return await self.pass_through(request, "method")
        url = request.rel_url
        raw_path, raw_query = url.raw_path, url.raw_query_string
        names = query_names(raw_query)
        rule = self.cfg.rule_for(raw_path, names)
        if rule is not None and rule.bypass:
            return await self.pass_through(request, "bypass")
        rule = rule or NO_RULE
        key = cache_key(raw_path, raw_query, rule.query)
        req_cc = policy.parse_request(request.headers)
        entries = await self.tiers.get(key)
        entry = select_variant(entries, request.headers) if entries else None
        now = time.time()
        if entry is not None:
            how = policy.reuse(entry, req_cc, now)
            if how is policy.Reuse.FRESH:
                return self.deliver(request, entry, "HIT", hit_status(entry, now), now)
            if how is policy.Reuse.STALE_ALLOWED:
                status = hit_status(entry, now, "detail=max-stale")
                return self.deliver(request, entry, "STALE", status, now)
            if how is policy.Reuse.STALE_WHILE_REVALIDATE:
                self.refresh_in_background(key, entry, request, rule)
                status = hit_status(entry, now, "detail=stale-while-revalidate")
                return self.deliver(request, entry, "STALE", status, now)
        if req_cc.only_if_cached:
            # RFC 9111 section 5.2.1.7: "respond ... with a 504 (Gateway Timeout)".
            return self.answer_error(
                504, "not in cache (only-if-cached)", "MISS", "detail=only-if-cached"
            )
        if method == "HEAD" or ("Range" in request.headers and entry is None):
            # Answer this one from the origin, and fetch the whole object for the next
            # clients (a HEAD or a Range never fills the cache by itself).
            if entry is None and self.collapsible(key, rule, entry):
                self.fill_in_background(key, request, rule)
            return await self.pass_through(request, "range" if method == "GET" else "head")
        fwd = "stale" if entry is not None else ("vary-miss" if entries else "uri-miss")
        if req_cc.no_cache or req_cc.max_age is not None:
            fwd = "request" if entry is not None else fwd
        return await self.miss(request, key, rule, entry, fwd)

    def collapsible(self, key: str, rule: Rule, entry: Entry | None) -> bool:
        """Collapse only what is expected to be cacheable: a rule with a TTL names it, a copy
        is stored, or its last answer was stored. A write behind GET is never any of these,
        so it is never collapsed (each client's request reaches the origin)."""
        return rule.terms.ttl is not None or entry is not None or key in self.cacheable

    # -- hit -------------------------------------------------------------------------------

    def deliver(
        self,
        request: web.Request,
        entry: Entry,
        x_cache: str,
        status: str,
        now: float,
        origin_ms: float | None = None,
    ) -> web.Response:
        resp = from_entry(request, entry, self.ident, x_cache, status, now, origin_ms)
        self.stats.record(x_cache, len(resp.body) if isinstance(resp.body, bytes) else 0)
        return resp

    def answer_error(
        self, status: int, message: str, x_cache: str, cache_status: str
    ) -> web.Response:
        self.stats.record(x_cache, 0)
        return error_response(status, message, self.ident, x_cache, cache_status)

    # -- miss ------------------------------------------------------------------------------

    def origin_headers(self, request: web.Request, drop: tuple[str, ...] = ()) -> CIMultiDict[str]:
        """The headers this client's request carries to the origin (X-Forwarded-*, Via)."""
        return forward_headers(
            request.headers,
            peer=client_ip(request),
            scheme=request.scheme,
            host=request.host,
            via=self.ident.via,
            drop=drop,
        )

    def fetch_spec(
        self, key: str, request: web.Request, rule: Rule, stale: Entry | None
    ) -> FetchSpec:
        headers = self.origin_headers(request, drop=CLIENT_CONDITIONALS)
        if stale is not None:
            headers.update(policy.validators_for(stale))
        path_qs = _origin_target(request, rule.query)
        return FetchSpec(
            key=key,
            path_qs=path_qs,
            headers=headers,
            request_headers=request.headers,
            rule=rule.terms,
            tags=rule.tags,
            stale=stale,
        )

    def start_fetch(self, spec: FetchSpec, collapsible: bool) -> Fetch:
        fetch = Fetch(spec, self.tiers.memory.max_object_bytes)
        if collapsible:
            self.flights[spec.key] = fetch
        self.spawn(self.run_fetch(fetch, collapsible))
        return fetch

    async def run_fetch(self, fetch: Fetch, collapsible: bool) -> None:
        key = fetch.spec.key
        token: str | None = None
        try:
            redis = self.tiers.redis
            if collapsible and redis is not None and redis.status == "up":
                token = await redis.try_lock(key, self.cfg.collapse_timeout)
                if token is None and await self.wait_for_other_node(fetch):
                    return
            self.stats.origin_fetches += 1
            await fetch.run(self.upstream, self.cfg.defaults, self.store)
            head = fetch.head.result()
            if head.error is not None:
                self.stats.origin_errors[head.error.kind] += 1
            else:
                self.stats.origin_seconds += head.origin_ms / 1000
        finally:
            if self.flights.get(key) is fetch:
                del self.flights[key]
            if token is not None and self.tiers.redis is not None:
                with contextlib.suppress(Exception):
                    await self.tiers.redis.unlock(key, token)

    async def wait_for_other_node(self, fetch: Fetch) -> bool:
        """Another node holds the fill lock: wait for what it stores in the shared tier."""
        redis = self.tiers.redis
        assert redis is not None
        spec = fetch.spec
        newer = spec.stale.response_time if spec.stale is not None else None
        entries = await redis.wait_for_fill(
            spec.key, timeout=self.cfg.collapse_timeout, newer_than=newer
        )
        entry = select_variant(entries, spec.request_headers) if entries else None
        if entry is None:
            return False  # the other node's answer was not stored: fetch ourselves
        self.tiers.memory.put(entry, entry.response_time + entry.meta.get("keep", 0.0))
        fetch.serve_entry(entry)
        return True

    def store(self, entry: Entry, until: float) -> None:
        self.tiers.store(entry, until)
        self.cacheable[entry.key] = True
        self.stats.stored += 1

    async def miss(
        self,
        request: web.Request,
        key: str,
        rule: Rule,
        stale: Entry | None,
        fwd: str,
        private: bool = False,
    ) -> web.StreamResponse:
        """Fetch from the origin, joining a fetch in flight for the same key when the answer
        is expected to be shareable. `private`: this client's own fetch, never joined."""
        collapsible = not private and self.collapsible(key, rule, stale)
        fetch = self.flights.get(key) if collapsible else None
        follower = fetch is not None and fetch.can_attach()
        if fetch is None or not follower:
            fetch = self.start_fetch(self.fetch_spec(key, request, rule, stale), collapsible)
        else:
            self.stats.collapsed += 1
        try:
            head = await asyncio.wait_for(
                asyncio.shield(fetch.head), self.cfg.collapse_timeout + self.cfg.read_timeout
            )
            return await self.serve_fetched(request, fetch, head, stale, fwd, follower, rule)
        finally:
            if not follower:
                fetch.leader_ready()

    async def serve_fetched(
        self,
        request: web.Request,
        fetch: Fetch,
        head: Head,
        stale: Entry | None,
        fwd: str,
        follower: bool,
        rule: Rule,
    ) -> web.StreamResponse:
        now = time.time()
        collapsed = "; collapsed" if follower else ""
        if head.kind == "error":
            assert head.error is not None
            return self.origin_failed(request, fetch.spec.key, stale, head.error, fwd)
        if head.kind == "entry":
            assert head.entry is not None
            if head.status == 304:
                status = f"fwd={fwd}; fwd-status=304; ttl={_ttl(head.entry, now)}{collapsed}"
                return self.deliver(request, head.entry, "REVALIDATED", status, now, head.origin_ms)
            status = f"fwd={fwd}; collapsed; detail=shared-fill"
            return self.deliver(request, head.entry, "MISS", status, now)
        assert head.headers is not None and head.decision is not None
        if head.status >= 500 and stale is not None:
            req_cc = policy.parse_request(request.headers)
            if policy.can_serve_stale_on_error(stale, req_cc, now):
                status = f"fwd=stale; fwd-status={head.status}; detail=stale-if-error"
                return self.deliver(request, stale, "STALE", status, now)
        if follower:
            mine = vary_values(policy.vary_names(head.headers), request.headers)
            if not head.decision.store or mine != head.vary:
                # The answer is not shareable with this client: a fetch of its own.
                return await self.miss(request, fetch.spec.key, rule, None, fwd, private=True)
        x_cache = "EXPIRED" if stale is not None else "MISS"
        parts = [f"fwd={fwd}", f"fwd-status={head.status}"]
        if head.decision.store:
            parts += ["stored", f"ttl={int(head.decision.lifetime)}"]
        elif head.decision.reason:
            parts.append(f"detail={head.decision.reason}")
        if follower:
            parts.append("collapsed")
        headers = client_headers(head.headers, self.ident)
        mark(headers, self.ident, x_cache, "; ".join(parts), None, head.origin_ms)
        if "Age" in head.headers:
            headers["Age"] = head.headers["Age"]
        if head.status == 200 and _has_conditionals(request):
            probe = Entry(
                key="",
                status=200,
                headers=tuple(head.headers.items()),
                body=b"",
                request_time=now,
                response_time=now,
            )
            if policy.not_modified_for(request.headers, probe):
                keep = set(policy.HEADERS_IN_304) | {
                    "x-cache",
                    "cache-status",
                    "x-served-by",
                    "via",
                }
                self.stats.record(x_cache, 0)
                return web.Response(
                    status=304,
                    headers=CIMultiDict((k, v) for k, v in headers.items() if k.lower() in keep),
                )
        if follower and not fetch.can_attach():
            entry = await asyncio.shield(fetch.done)
            if entry is None:
                return await self.miss(request, fetch.spec.key, rule, None, fwd, private=True)
            return self.deliver(request, entry, "MISS", "; ".join(parts), time.time())
        resp = web.StreamResponse(status=head.status, headers=headers)
        length = head.headers.get("Content-Length")
        if length is not None and length.isdigit():
            resp.content_length = int(length)
        await resp.prepare(request)
        ok = await fetch.attach(resp)
        if not ok:
            # The origin's body broke off: close the connection so the client sees it short.
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        self.stats.record(x_cache, resp.body_length)
        return resp

    def origin_failed(
        self,
        request: web.Request,
        key: str,
        stale: Entry | None,
        error: OriginUnavailable,
        fwd: str,
    ) -> web.StreamResponse:
        """RFC 5861 section 4: serve stale when allowed; otherwise a short 502/504."""
        now = time.time()
        req_cc = policy.parse_request(request.headers)
        candidates = [stale] if stale is not None else []
        candidates += select_all(self.tiers.untrusted_memory(key), request)
        for entry in candidates:
            if policy.can_serve_stale_on_error(entry, req_cc, now):
                status = f"fwd={fwd}; fwd-status={502 if error.kind != 'timeout' else 504}; "
                status += "detail=stale-if-error"
                return self.deliver(request, entry, "STALE", status, now)
        code = 504 if error.kind == "timeout" else 502
        return self.answer_error(code, str(error), "MISS", f"fwd={fwd}; detail={error.kind}")

    # -- background fetches ----------------------------------------------------------------

    def refresh_in_background(
        self, key: str, entry: Entry, request: web.Request, rule: Rule
    ) -> None:
        """RFC 5861 section 3: revalidate once in the background while serving stale."""
        if key in self.refreshing or key in self.flights:
            return
        self.refreshing.add(key)
        self.stats.background_refreshes += 1
        fetch = self.start_fetch(self.fetch_spec(key, request, rule, entry), True)
        fetch.leader_ready()
        fetch.done.add_done_callback(lambda _: self.refreshing.discard(key))

    def fill_in_background(self, key: str, request: web.Request, rule: Rule) -> None:
        """A Range request on a cold key: fetch the whole object for the next clients."""
        if key in self.flights:
            return
        fetch = self.start_fetch(self.fetch_spec(key, request, rule, None), True)
        fetch.leader_ready()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        await self.tiers.drain()

    # -- pass ------------------------------------------------------------------------------

    async def pass_through(self, request: web.Request, reason: str) -> web.StreamResponse:
        """Straight to the origin and back, streaming both ways, nothing stored or replayed."""
        method = request.method
        headers = self.origin_headers(request)
        body = request.content if request.body_exists else None
        t0 = time.monotonic()
        self.stats.origin_fetches += 1
        replayable = reason in ("head", "range")
        try:
            origin = await self.upstream.request(
                method, request.rel_url.raw_path_qs, headers, body, replayable=replayable
            )
        except OriginUnavailable as exc:
            self.stats.origin_errors[exc.kind] += 1
            code = 504 if exc.kind == "timeout" else 502
            return self.answer_error(code, str(exc), "BYPASS", f"fwd={reason}; detail={exc.kind}")
        origin_ms = (time.monotonic() - t0) * 1000
        try:
            if 200 <= origin.status < 400:
                await self.invalidate_after(request, origin.status, origin.headers)
            out_headers = client_headers(CIMultiDict(end_to_end(origin.headers)), self.ident)
            x_cache = "BYPASS" if reason in ("method", "bypass") else "MISS"
            mark(
                out_headers,
                self.ident,
                x_cache,
                f"fwd={reason if reason != 'head' else 'method'}; fwd-status={origin.status}",
                None,
                origin_ms,
            )
            if "Age" in origin.headers:
                out_headers["Age"] = origin.headers["Age"]
            resp = web.StreamResponse(status=origin.status, headers=out_headers)
            if origin.content_length is not None:
                resp.content_length = origin.content_length
            await resp.prepare(request)
            sent = 0
            if method != "HEAD":
                async for chunk in origin.content.iter_chunked(CHUNK):
                    await resp.write(chunk)
                    sent += len(chunk)
            await resp.write_eof()
            self.stats.record(x_cache, sent)
            return resp
        finally:
            origin.release()

    # -- invalidation ----------------------------------------------------------------------

    def key_for(self, url: str) -> str:
        """The cache key a URL path (with its query) is stored under."""
        path, _, query = url.partition("?")
        rule = self.cfg.rule_for(path, query_names(query))
        return cache_key(path, query, rule.query if rule else QueryPolicy())

    async def invalidate_after(
        self, request: web.Request, status: int, origin_headers: Any
    ) -> None:
        """RFC 9111 section 4.4 for unsafe methods, and the config's invalidation rules."""
        urls = policy.invalidation_targets(
            request.method, status, request.rel_url.raw_path_qs, origin_headers, request.host
        )
        prefixes: list[str] = []
        tags: list[str] = []
        names = query_names(request.rel_url.raw_query_string)
        for inv in self.cfg.invalidations:
            if inv.matches(request.rel_url.raw_path, names):
                urls += inv.urls
                prefixes += inv.prefixes
                tags += inv.tags
        if urls or prefixes or tags:
            await self.purge(urls=urls, prefixes=prefixes, tags=tags, kind="invalidation")

    async def purge(
        self,
        urls: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        tags: Iterable[str] = (),
        all: bool = False,
        soft: bool = False,
        kind: str = "api",
    ) -> dict[str, Any]:
        """Apply a purge here, in the shared tier, and announce it to every node.

        Answers what went where: ``memory`` (this node, at once), ``shared`` (the Redis
        tier), and ``nodes``: one row per node process that applied it and acknowledged
        within `ACK_WAIT` (``acks`` says how many of the bus's receivers did). Without the
        shared tier, or when it is unreachable (``error``), only this node is purged.
        """
        from edge.purge_bus import RedisUnavailable

        t0 = time.monotonic()
        keys = sorted({self.key_for(u) for u in urls})
        prefixes, tags = list(prefixes), list(tags)
        mine = self.tiers.memory.purge(keys, prefixes, tags, all=all, soft=soft)
        self.stats.purges[kind] += 1
        self.stats.purged_entries += mine
        me: dict[str, Any] = {"node": self.cfg.node, "pid": os.getpid(), "entries": mine}
        result: dict[str, Any] = {"node": self.cfg.node, "kind": kind, "soft": soft}
        result["memory"] = mine
        redis, bus = self.tiers.redis, self.tiers.bus
        if redis is None:
            result.update(shared=None, nodes=[me], ms=_ms_since(t0))
            return result
        try:
            # The shared tier's purge also announces it on the purge bus, in the same
            # transaction, so every node drops its memory copies.
            shared, announced = await redis.purge_announced(keys, prefixes, tags, all, soft)
        except RedisUnavailable as exc:
            self.stats.purge_failures += 1
            result["error"] = f"shared tier unavailable ({exc}): purged on this node only"
            result.update(shared=None, nodes=[me], ms=_ms_since(t0))
            return result
        result["shared"] = shared
        result["generation"] = announced.generation
        acks: list[dict[str, Any]] = []
        if bus is not None and announced.receivers:
            acks = await bus.collect_acks(announced.generation, announced.receivers)
        nodes = [me]
        for ack in acks:
            if ack.get("node") == me["node"] and ack.get("pid") == me["pid"]:
                me["entries"] += int(ack.get("entries", 0))  # our own echo from the bus
            else:
                nodes.append(ack)
        result["nodes"] = sorted(nodes, key=lambda n: (str(n.get("node")), n.get("pid", 0)))
        result["acks"] = {"expected": announced.receivers, "received": len(acks)}
        result["ms"] = _ms_since(t0)
        return result


def select_all(entries: list[Entry], request: web.Request) -> list[Entry]:
    chosen = select_variant(entries, request.headers) if entries else None
    return [chosen] if chosen is not None else []


def client_ip(request: web.Request) -> str | None:
    """The client's address; behind the front door (a Unix socket) the front tells it."""
    remote = request.remote
    if not remote:
        return request.headers.get("X-Edge-Peer") or None
    return remote


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 2)


def _ttl(entry: Entry, now: float) -> int:
    return int(entry.meta.get("lifetime", 0.0) - policy.current_age(entry, now))


def _has_conditionals(request: web.Request) -> bool:
    h = request.headers
    return "If-None-Match" in h or "If-Modified-Since" in h


def _origin_target(request: web.Request, query: QueryPolicy) -> str:
    """What the shared fetch asks of the origin: exactly what the key says (so a parameter
    the key ignores cannot change what other clients get)."""
    from edge.keys import normalized_query

    url = request.rel_url
    q = normalized_query(url.raw_query_string, query)
    return f"{url.raw_path}?{q}" if q else url.raw_path
