"""The request engine of one worker: carries the flow core's decisions out.

    client bytes -> edge.protocol (parse once) -> Engine.serve -> edge.cache.flow: recv, lookup
       hit  -> deliver from the stored entry, at once (no await on the hit path; a plain
               HTTP/1.1 hit comes to Engine.fresh_hit straight from the parse, and a
               repeated one finds its lookup kept: edge.engine.fresh_hits)
       miss -> edge.upstream.collapse (one fetch per key: this worker, the node, then Redis)
               -> edge.upstream.fetch streams the origin's answer to every waiting client, stores it
       pass -> the origin and back (edge.upstream.client), then invalidate what the write names

Every answer is built by `edge.cache.respond`; every caching rule is `edge.cache.policy`
via `edge.cache.flow`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from edge.base.guard import ConnectionGuard
from edge.base.ledger import ITEM_OVERHEAD, Charged, Ledger
from edge.base.observe import Observer
from edge.base.stats import Stats
from edge.cache import flow, policy, respond
from edge.cache.entry import Entry
from edge.cache.keys import select_variant, vary_values
from edge.config.settings import EdgeConfig
from edge.engine import access_log, compress, hints, images, slices
from edge.engine.fresh_hits import FreshHits
from edge.engine.purger import Purger
from edge.http.answer import Answer, Responder, held_bytes
from edge.http.fields import (
    ANSWERED_FROM_CACHE,
    F_ACCEPT_ENCODING,
    F_CACHE_CONTROL,
    F_COND,
    F_RANGE,
    HIT_PATH,
    NEUTRAL,
)
from edge.http.ranges import if_range_allows, plan_ranges
from edge.http.request import ParsedHead, Request, host_name
from edge.store.tiers import Tiers
from edge.upstream.client import OriginUnavailable, Upstream, end_to_end, forward_headers
from edge.upstream.collapse import Collapser
from edge.upstream.fetch import NOT_FOR_SHARED_FETCH, Fetch, FetchSpec, Head

if TYPE_CHECKING:
    from edge.ops.nodeview import NodeView
    from edge.ops.reload import Reloader

log = logging.getLogger("edge.engine.engine")

MAX_ANSWERS_PER_ENTRY = 64
MAX_OWNED_ANSWER = 4096  # bytes of its own (not the entry's) a kept answer may hold
PER_REQUEST = frozenset({"Age", "Cache-Status"})  # stamped by answer_hit (respond.hit_stamp)
Run = Coroutine[Any, Any, None]


class Counted:
    """Passes a streamed body on to the client, counting the bytes (for stats and logs)."""

    def __init__(self, conn: Responder) -> None:
        self.conn = conn
        self.sent = 0

    async def write(self, chunk: bytes) -> None:
        self.sent += len(chunk)
        await self.conn.write(chunk)


class Window(Counted):
    """Passes on only bytes first..last of a streamed body (a Range answered from a fill)."""

    def __init__(self, conn: Responder, first: int, last: int) -> None:
        super().__init__(conn)
        self.first = first
        self.last = last
        self.offset = 0

    async def write(self, chunk: bytes) -> None:
        start, end = self.offset, self.offset + len(chunk)
        self.offset = end
        if end <= self.first or start > self.last:
            return
        await super().write(chunk[max(0, self.first - start) : self.last + 1 - start])


class Engine:
    """Everything one worker needs to answer requests."""

    def __init__(self, cfg: EdgeConfig, tiers: Tiers, upstream: Upstream) -> None:
        self.cfg = cfg
        self.tiers = tiers
        self.upstream = upstream
        self.ident = respond.Identity(cfg.node, cfg.keep_tag_headers)
        self.stats = Stats()
        self.guard = ConnectionGuard(cfg.max_connections)
        # What this worker keeps beyond one request, by kind, in bytes (edge.base.ledger).
        self.ledger = Ledger.with_limits(cfg.kept_limits)
        self.collapser = Collapser(cfg, tiers, upstream, self.stats)
        self.purger = Purger(cfg, tiers, self.stats)
        # The route of each request-target, counted in bytes (ledger "routes"); past the
        # bound, all dropped.
        self.routes: dict[str, flow.Route] = Charged(
            self.ledger.account("routes"), route_size, drop_all=True
        )
        # edge.protocol.http1's request heads kept with their parse (the same bytes parse the same
        # way under the same limits: dropped on reconfigure), counted (ledger "heads").
        self.request_heads: dict[bytes, ParsedHead] = Charged(
            self.ledger.account("heads"), head_size, drop_all=True
        )
        self.kept_hits = FreshHits(tiers, self.count_hits, self.ledger.account("hits"))
        tiers.count_stored_keys(self.ledger.account("stored_keys"))
        self.hosts = frozenset(h.lower() for h in cfg.hosts)
        self.access_log: logging.Logger | None = None
        # operations (see `reconfigure` and `log`): latency and top URLs, the node view
        self.access_format = "text"
        self.timed = True  # edge.protocol.http1 stamps request times: latency histograms, logs
        self.observer = Observer()
        self.view: NodeView | None = None
        # The `/_edge/` endpoints and `PURGE /path`: edge.ops, wired by edge.server (the
        # engine never imports the layer above it).
        self.admin: Callable[[Engine, Request, Responder, str], Run | None] | None = None
        self.purge_method: Callable[[Engine, Request, Responder], Run | None] | None = None
        self.reloader: Reloader | None = None
        # Delivery hook: stored compressible objects get their coded variants (compress).
        self.encoder = compress.VariantMaker(
            cfg.compression, tiers, compress.Choices(self.ledger.account("codings"))
        )
        self.collapser.on_store = self.encoder.stored
        # Delivery hook: large objects in slices (edge.engine.slices).
        self.slicer = slices.Slicer(self)
        # Delivery hook: 103 Early Hints learnt from pages' Link fields (edge.engine.hints).
        self.hints = hints.Hints()
        # Delivery hook: images as AVIF or WebP, sized to the screen (edge.engine.images).
        self.images = images.ImageMaker(cfg.images, tiers, self.ledger.account("images"))
        encoded = self.encoder.stored
        self.collapser.on_store = lambda e, until: self.images.stored(encoded(e, until), until)

    # -- recv ---------------------------------------------------------------------------

    def serve(self, req: Request, conn: Responder) -> Run | None:
        """Answer `req`: at once (returns None), or through the returned coroutine."""
        method = req.method
        flags = req.flags
        if (
            (flags | ANSWERED_FROM_CACHE | NEUTRAL) == HIT_PATH
            and (method == "GET" or method == "HEAD")
            and not req.hit_tried
        ):
            answer = self.fresh_hit(method, req.target, req.host, flags, req.special, req)
            if answer is not None:
                self._send_hit(req, conn, answer)
                return None
        if method == "GET" or method == "HEAD":
            route = self.routes.get(req.target)
            if route is None:
                route = flow.recv(method, req.target, self.cfg)
                route = self.images.route(route)  # Delivery hook: ?w= is no part of the key
                self.routes[req.target] = route
        else:
            route = flow.recv(method, req.target, self.cfg)
        if type(route) is flow.Admin:
            if self.admin is None:
                self.reject(req, conn, flow.Reject(404, "no admin endpoints here"))
                return None
            return self.admin(self, req, conn, route.path)
        if self.hosts and not self.host_allowed(req.host):
            # RFC 9110 section 15.5.20: "not able to produce a response" for this authority.
            names = ", ".join(sorted(self.hosts))
            self.reject(req, conn, flow.Reject(421, f"this edge serves {names} only"))
            return None
        if type(route) is flow.Lookup:
            return self.lookup(req, conn, route)
        if type(route) is flow.Pass:
            return self.pass_through(req, conn, route.reason)
        if type(route) is flow.Purge:
            if self.purge_method is None:
                self.reject(req, conn, flow.Reject(405, "purge is not served here"))
                return None
            return self.purge_method(self, req, conn)
        assert type(route) is flow.Reject
        self.reject(req, conn, route)
        return None

    def host_allowed(self, host: str) -> bool:
        """`host` is one of `hosts:` (checked only when the list is set)."""
        return forwarded_host(host, self.hosts) is not None

    def reject(self, req: Request, conn: Responder, r: flow.Reject) -> None:
        reply = respond.error(
            r.status, r.message, self.ident, r.x_cache, r.detail, r.allow, close=r.close
        )
        if r.x_cache:
            self.stats.record(r.x_cache, 0)
        conn.send(req, reply)
        self.log(req, reply.status, 0, r.x_cache or "-")

    # -- lookup and hit -----------------------------------------------------------------

    def lookup(self, req: Request, conn: Responder, route: flow.Lookup) -> Run | None:
        entries = self.tiers.get_now(route.key)
        if entries is None:
            return self.lookup_shared(req, conn, route)  # not in this node: ask Redis
        return self.decide(req, conn, route, entries)

    async def lookup_shared(self, req: Request, conn: Responder, route: flow.Lookup) -> None:
        entries = await self.tiers.get(route.key)
        run = self.decide(req, conn, route, entries)
        if run is not None:
            await run

    def decide(
        self, req: Request, conn: Responder, route: flow.Lookup, entries: list[Entry]
    ) -> Run | None:
        entry: Entry | None = None
        image: images.Pick | None = None
        if entries and self.images.enabled:
            # Delivery hook: an image's converted variant for this client (edge.engine.images).
            picked = self.images.pick(req, route, entries)
            if isinstance(picked, flow.Reject):
                self.reject(req, conn, picked)
                return None
            image = picked
            if image is not None and image.variant is None:
                entries = image.originals
        if not entries and self.slicer.policy_for(route) is not None:
            return self.slicer.serve(req, conn, route)  # Delivery hook: a sliced object
        if entries:
            first = entries[0]
            if len(entries) == 1 and not first.vary:
                entry = first
            else:
                entry = select_variant(entries, req.headers)
            if (
                entry is not None
                and "cz" in entry.meta
                and req.flags & F_ACCEPT_ENCODING
                and not req.flags & F_RANGE
            ):
                # Delivery hook: the coded variant this client takes (a hit never
                # compresses; a Range is answered from identity).
                entry = self.encoder.choose(entry, entries, req.headers.get("Accept-Encoding"))
        if image is not None and image.variant is not None:
            entry = image.variant
        req_cc = (
            policy.parse_request(req.headers) if req.flags & F_CACHE_CONTROL else flow.NO_REQUEST_CC
        )
        now = time.time()
        decision = flow.lookup(
            req.method,
            bool(req.flags & F_RANGE),
            req_cc,
            route.rule,
            entry,
            bool(entries),
            self.collapser.known_cacheable(route.key),
            now,
        )
        if type(decision) is flow.Hit:
            if decision.refresh:
                self.collapser.refresh(self.fetch_spec(req, route, decision.entry))
            if image is not None and image.detail and decision.x_cache == "HIT":
                # Delivery hook: the original while its variant is made (or refused).
                status = respond.hit_status(decision.entry, now, f"detail={image.detail}")
                self.deliver(req, conn, decision.entry, "HIT", "", now, status)
                return None
            if (
                image is not None
                and decision.x_cache == "HIT"
                and policy.fresh_for_any_request(decision.entry, now)
            ):
                # Delivery hook: the next requests alike take the kept hits (images).
                until = policy.fresh_until(decision.entry)
                key = self.images.kept_key(req)
                if key is not None:
                    self.kept_hits.keep(key, decision.entry, until, now)
            self.deliver(req, conn, decision.entry, decision.x_cache, decision.detail, now)
            return None
        if type(decision) is flow.Miss:
            return self.miss(req, conn, route, decision, req_cc)
        if type(decision) is flow.Pass:
            return self.pass_through(req, conn, decision.reason, replayable=True)
        assert type(decision) is flow.Reject
        self.reject(req, conn, decision)
        return None

    def deliver(
        self,
        req: Request,
        conn: Responder,
        entry: Entry,
        x_cache: str,
        detail: str,
        now: float,
        status: str | None = None,
        origin_ms: float | None = None,
    ) -> None:
        """Answer from a stored entry: a fresh hit from the answers kept on the entry
        (`answer_hit`); anything else (stale, revalidated, collapsed) builds its reply."""
        if x_cache == "HIT" and status is None and origin_ms is None:
            self.answer_hit(req, conn, entry, now)
            return
        if status is None:
            status = respond.hit_status(entry, now, detail)
        reply = respond.from_entry(
            entry, req.method, req.headers, self.ident, x_cache, status, now, origin_ms
        )
        conn.send(req, reply)
        size = 0 if req.method == "HEAD" or reply.status == 304 else len(reply.body)
        self.stats.record(x_cache, size)
        self.log(req, reply.status, size, x_cache)

    def fresh_hit(
        self,
        method: str,
        target: str,
        host: str,
        flags: int,
        special: tuple[tuple[bytes, bytes], ...],
        fields: Request | Sequence[tuple[bytes, bytes]],
    ) -> Answer | None:
        """The hit path, for a GET or HEAD without cache directives or a body: the answer
        when `target`'s stored entry is fresh (flow.lookup would say
        Hit; policy decides) and its answer for these conditional and Range fields is built;
        counted as a hit. None: `serve`'s general path answers. `fields`: the request, or
        the field lines HTTP/1.1 parsed before making one (edge.protocol.http1's hit), with which an
        answer not built yet is not built here."""
        if self.hosts and not self.host_allowed(host):
            return None
        now = time.time()
        kept = self.kept_hits.get(target, now)
        if kept is None and target in self.images.targets:
            # Delivery hook: an image's entry kept for these Accept and hint values (images).
            image_key = self.images.hit_key(target, fields)
            if image_key is not None:
                kept = self.kept_hits.get(image_key, now)
        coding: bytes | None = None
        if kept is None and not flags & F_RANGE:
            # An object with coded copies: the choice kept for this Accept-Encoding's
            # class (what the choice depends on: a client's long value is not a key), or
            # for none.
            if flags & F_ACCEPT_ENCODING:
                coding = self.encoder.choices.accept_class(
                    accept_encoding(fields.raw_headers if isinstance(fields, Request) else fields)
                )
            kept = self.kept_hits.get((target, coding), now)
        if kept is not None:
            entry = kept.entry
            stamped = kept.stamped.get(special)
            if stamped is None:
                stamped = self._stamped_answer(entry, special, fields, now)
                if stamped is None:
                    return None
                if special in entry.answers:  # not an answer built for this request alone
                    self.kept_hits.keep_stamped(kept, special, stamped)
            if self.access_log is None:  # counted on the kept hit (`collect_hits`)
                kept.hits += 1
                if method != "HEAD":
                    kept.sent += len(stamped.body)
                return stamped
        else:
            found = self._fresh_entry(target, flags, coding, now)
            if found is None:
                return None
            entry = found
            stamped = self._stamped_answer(entry, special, fields, now)
            if stamped is None:
                return None
        self._count_hit(entry.key, method, target, stamped.body)
        return stamped

    def _stamped_answer(
        self,
        entry: Entry,
        special: tuple[tuple[bytes, bytes], ...],
        fields: Request | Sequence[tuple[bytes, bytes]],
        now: float,
    ) -> Answer | None:
        """The answer for these conditional and Range fields, with Age and Cache-Status as
        of `now`; None when it is not built yet and `fields` is not a request."""
        answer = entry.answers.get(special)
        if answer is None:
            if not isinstance(fields, Request):
                return None  # built once from the header mapping: HTTP/1.1 makes the request
            answer = self.build_answer(fields, entry, now)
        return self._stamp(entry, answer, now)

    def _fresh_entry(
        self, target: str, flags: int, coding: bytes | None, now: float
    ) -> Entry | None:
        """`fresh_hit`'s lookup: the stored entry that answers this request fresh, if any,
        kept for the next hits (`edge.engine.fresh_hits`): on `target` when it answers any request
        for it (one identity, nothing to negotiate); else, without Range, on `target` and
        the request's Accept-Encoding (`coding`, None without the field) when that is all
        the choice depended on."""
        route = self.routes.get(target)
        if type(route) is not flow.Lookup:
            return None
        entries = self.tiers.get_now(route.key)
        if not entries:
            return None
        if self.images.enabled and self.images.involved(target, entries):
            return None  # Delivery hook: an image's variants are chosen by `decide`
        first = entries[0]
        entry: Entry | None = first
        single = len(entries) == 1 and not first.vary
        alone = single and "cz" not in first.meta
        if alone or (single and (not flags & F_ACCEPT_ENCODING or flags & F_RANGE)):
            pass  # one identity and nothing to negotiate: no coded copy applies
        elif len(entries) > 1 or "cz" in first.meta:
            # Delivery hook: an identity and its coded copies (edge.engine.compress).
            entry = self.encoder.hit_variant(entries, coding, bool(flags & F_RANGE))
        else:
            return None  # Vary: the general way selects the variant
        if entry is None or not policy.fresh_for_any_request(entry, now):
            return None
        if alone:
            self.kept_hits.keep(target, entry, policy.fresh_until(entry), now)
        elif not flags & F_RANGE and (coding is None or compress.is_coded(entry)):
            # The identity for a request without Accept-Encoding, or the coded copy made
            # for this one (not the identity while its copies are on the way).
            self.kept_hits.keep((target, coding), entry, policy.fresh_until(entry), now)
        return entry

    def answer_hit(self, req: Request, conn: Responder, entry: Entry, now: float) -> None:
        """A fresh hit: the answer for this request's conditional and Range fields is built
        once per entry (`respond.from_entry`), then only Age and Cache-Status are written
        per request."""
        answer = entry.answers.get(req.special)
        if answer is None:
            answer = self.build_answer(req, entry, now)
        stamped = self._stamp(entry, answer, now)
        self._count_hit(entry.key, req.method, req.target, stamped.body)
        self._send_hit(req, conn, stamped)

    def _send_hit(self, req: Request, conn: Responder, answer: Answer) -> None:
        """A stamped hit to a made request's connection, and its access-log line."""
        conn.send(req, answer)
        if self.access_log is not None:
            size = 0 if req.method == "HEAD" else len(answer.body)
            self.log(req, answer.status, size, "HIT")

    def _stamp(self, entry: Entry, answer: Answer, now: float) -> Answer:
        """A built answer with Age and Cache-Status as of `now` (the same for the rest of
        that second of its age: `edge.engine.fresh_hits` keeps it that long)."""
        return answer.stamped(respond.hit_stamp(entry, self.ident, now))

    def _count_hit(self, key: str, method: str, target: str, body: bytes | memoryview) -> None:
        """One fresh hit's counters (the access log, when on, is written by the caller,
        which holds the request, and counts it for the observer)."""
        size = 0 if method == "HEAD" else len(body)
        self.count_hits(target, key, 1, size, observed=self.access_log is None)

    def count_hits(
        self, target: str, key: str, hits: int, sent: int, observed: bool = True
    ) -> None:
        """Fresh hits on `target` (stored under `key`) and their body bytes, counted;
        `observed`: for the observer too (no clock read: a hit's latency is under its
        first bucket)."""
        stats = self.stats
        stats.hits += hits
        stats.bytes_served += sent
        self.tiers.hot_hits.add(key)
        if observed:
            self.observer.hit(target, sent, hits)

    def collect_hits(self) -> None:
        """The kept hits' counts into the counters (`edge.engine.fresh_hits`), and the kept hits
        that no longer stand dropped: before the counters are read, and about once a
        second (the node tier's LRU learns of hot hits then)."""
        self.kept_hits.collect()

    def build_answer(self, req: Request, entry: Entry, now: float) -> Answer:
        answer = respond.from_entry(entry, req.method, req.headers, self.ident, "HIT", "hit", now)
        answer.fields = [(k, v) for k, v in answer.fields if k not in PER_REQUEST]
        owned = owned_bytes(entry, answer.body)
        if owned <= MAX_OWNED_ANSWER and len(entry.answers) < MAX_ANSWERS_PER_ENTRY:
            # Kept only when its body is the entry's own (or a view of it), or small: a
            # multipart body is a copy of the ranges it names (edge.base.ledger "answers").
            answers = entry.answers
            if type(answers) is not Charged:
                answers = entry.answers = Charged(self.ledger.account("answers"))
            special = req.special
            size = held_bytes(answer) + owned + sum(len(k) + len(v) for k, v in special)
            size += ITEM_OVERHEAD
            answers.keep(special, answer, size)
        return answer

    # -- miss ---------------------------------------------------------------------------

    def origin_headers(
        self, req: Request, drop: tuple[str, ...] = (), shared: bool = False
    ) -> CIMultiDict[str]:
        """The headers this client's request carries to the origin (X-Forwarded-*, Via).

        `shared`: a fetch whose answer may be stored for every client. Nothing outside the
        cache key may shape it, so the origin is not told the client's scheme, nor its host
        unless `hosts:` names only one (the key holds neither: an answer made for https
        would be served on http, one host's to another)."""
        host = forwarded_host(req.host, self.hosts)
        headers = forward_headers(
            req.headers,
            peer=req.peer or None,
            scheme=None if shared else req.scheme,
            host=None if shared and len(self.hosts) != 1 else host,
            via=self.ident.via(req.version),
            drop=drop,
        )
        headers[access_log.HEADER] = access_log.request_id(req)
        return headers

    def fetch_spec(self, req: Request, route: flow.Lookup, stale: Entry | None) -> FetchSpec:
        headers = self.origin_headers(req, drop=NOT_FOR_SHARED_FETCH, shared=True)
        if stale is not None:
            headers.update(policy.validators_for(stale))
        return FetchSpec(
            key=route.key,
            path_qs=route.target,
            headers=headers,
            request_headers=req.headers,
            rule=route.rule.terms,
            tags=route.rule.tags,
            stale=stale,
        )

    async def miss(
        self,
        req: Request,
        conn: Responder,
        route: flow.Lookup,
        decision: flow.Miss,
        req_cc: policy.RequestCacheControl,
        private: bool = False,
    ) -> None:
        """Fetch from the origin, joining a fetch in flight for the same key when the answer
        is expected to be shareable. `private`: this client's own fetch, never joined."""
        if not decision.collapse and not private and decision.stale is None:
            # A key this worker does not know: another worker of the node may have answered
            # it and be storing it this instant. Once a client has an answer, every worker
            # finds it: this one waits for the store and serves it (a hit, usually).
            entries = await self.collapser.stored_elsewhere(route.key)
            if entries:
                run = self.decide(req, conn, route, entries)
                if run is not None:
                    await run
                return
        if self.cfg.early_hints and hints.may_send(req.version) and req.method == "GET":
            # Delivery hook: while the origin works, the page's learnt preload links first.
            stale = decision.stale
            links = self.hints.for_fetch(route.key, stale.headers if stale else None)
            if links:
                conn.interim(103, hints.interim_fields(links))
                self.hints.sent += 1
        collapse = decision.collapse and not private
        fetch, follower = self.collapser.join_or_start(
            self.fetch_spec(req, route, decision.stale), collapse
        )
        try:
            if follower:
                head = await asyncio.wait_for(
                    asyncio.shield(fetch.head), self.cfg.collapse_timeout + self.cfg.read_timeout
                )
            else:
                # Our own fetch always publishes a head (an error at worst, within the
                # origin timeouts); awaited through the leader's own future, so this client
                # going away cannot cancel it.
                head = await fetch.leader_head()
            await self.serve_fetched(req, conn, route, decision, req_cc, fetch, head, follower)
        finally:
            if not follower:
                fetch.leader_ready()

    async def serve_fetched(
        self,
        req: Request,
        conn: Responder,
        route: flow.Lookup,
        decision: flow.Miss,
        req_cc: policy.RequestCacheControl,
        fetch: Fetch,
        head: Head,
        follower: bool,
    ) -> None:
        now = time.time()
        stale, fwd = decision.stale, decision.fwd
        collapsed = "; collapsed" if follower else ""
        if head.kind == "error":
            assert head.error is not None
            self.origin_failed(req, conn, route.key, stale, head.error, fwd, req_cc)
            return
        if head.kind == "entry":
            assert head.entry is not None
            self.hints.learn(route.key, head.entry.headers)  # Delivery hook (edge.engine.hints)
            if head.status == 304:
                ttl = int(
                    head.entry.meta.get("lifetime", 0.0) - policy.current_age(head.entry, now)
                )
                status = f"fwd={fwd}; fwd-status=304; ttl={ttl}{collapsed}"
                self.deliver(req, conn, head.entry, "REVALIDATED", "", now, status, head.origin_ms)
                return
            status = f"fwd={fwd}; collapsed; detail=shared-fill"
            self.deliver(req, conn, head.entry, "MISS", "", now, status)
            return
        assert head.headers is not None and head.decision is not None
        if (
            head.status >= 500
            and stale is not None
            and policy.can_serve_stale_on_error(stale, req_cc, now)
        ):
            status = f"fwd=stale; fwd-status={head.status}; detail=stale-if-error"
            self.deliver(req, conn, stale, "STALE", "", now, status)
            return
        if follower:
            mine = vary_values(policy.vary_names(head.headers), req.headers)
            if not flow.may_share_with_follower(head.decision, head.vary, mine):
                # The answer is not shareable with this client: a request of its own.
                if decision.fill:
                    await self.pass_through(
                        req, conn, "method" if req.method == "HEAD" else "range"
                    )
                    return
                await self.miss(req, conn, route, flow.Miss(fwd, None, False), req_cc, True)
                return
        if 200 <= head.status < 300:  # Delivery hook: the page's preload links (edge.engine.hints)
            self.hints.learn(route.key, head.headers.items())
        if head.status == 200:  # Delivery hook: a large object is sliced from the next miss on
            decided = head.decision
            self.slicer.learn(route, head.length, decided.store or decided.reason == "too-big")
        x_cache = "EXPIRED" if stale is not None else "MISS"
        parts = [f"fwd={fwd}", f"fwd-status={head.status}"]
        if head.decision.store:
            parts += ["stored", f"ttl={int(head.decision.lifetime)}"]
        elif head.decision.reason:
            parts.append(f"detail={head.decision.reason}")
        if follower:
            parts.append("collapsed")
        length = head.length
        reply = respond.from_origin(
            head.status,
            head.headers,
            self.ident,
            x_cache,
            "; ".join(parts),
            head.origin_ms,
            length,
        )
        if head.status == 200:  # Delivery hook: a page asks for the Client Hints (images)
            self.images.page_fields(route.key, reply.fields)
        if head.status == 200 and req.flags & F_COND:
            probe = Entry("", 200, tuple(head.headers.items()), b"", now, now)
            if flow.wants_304(req.headers, probe):
                conn.send(req, Answer(304, respond.not_modified(reply.fields)))
                self.stats.record(x_cache, 0)
                self.log(req, 304, 0, x_cache)
                return
        if req.method == "HEAD":
            # A HEAD converted to a GET: the head now, the body fills the cache alone.
            conn.start(req, reply)
            conn.end()
            self.stats.record(x_cache, 0)
            self.log(req, head.status, 0, x_cache)
            return
        # Delivery hook: compress as it streams when the client accepts a coding (compress).
        coding = None
        if not req.flags & F_RANGE and compress.eligible(
            head.status, head.headers.items(), length, self.cfg.compression
        ):
            coding = compress.negotiate(
                req.headers.get("Accept-Encoding"), self.cfg.compression.codings
            )
            reply = compress.stream_reply(reply, coding)
        sink: Counted | compress.EncodingSink = Counted(conn)
        if req.flags & F_RANGE and head.status == 200:
            window = self.range_window(req, conn, reply, head)
            if window is None:
                # A Range this fill cannot cut out as it streams: answer from the stored
                # entry once complete (or, if it was not stored, pass the Range on).
                entry = await fetch.entry() if fetch.can_attach() else None
                if entry is not None:
                    self.deliver(req, conn, entry, x_cache, "", time.time(), "; ".join(parts))
                else:
                    await self.pass_through(req, conn, "range")
                return
            sink, reply = window
        if head.body is not None:
            # A small body, read whole: one write.
            body = head.body
            if isinstance(sink, Window):
                body = body[sink.first : sink.last + 1]
            if coding is not None:  # Delivery hook: compressed whole (edge.engine.compress)
                body = compress.encode(body, coding, self.cfg.compression.level(coding, False))
                reply.length = len(body)
            reply.body = body
            conn.send(req, reply)
            self.stats.record(x_cache, len(body))
            self.log(req, reply.status, len(body), x_cache)
            return
        if follower and not fetch.can_attach():
            entry = await fetch.entry()
            if entry is None:
                await self.miss(req, conn, route, flow.Miss(fwd, None, False), req_cc, True)
                return
            self.deliver(req, conn, entry, "MISS", "", time.time(), "; ".join(parts))
            return
        if coding is not None:
            sink = compress.EncodingSink(conn, coding, self.cfg.compression.level(coding, False))
        conn.start(req, reply)
        if reply.status == 416:
            conn.end()
            return
        ok = await fetch.attach(sink)
        if not ok:
            conn.abort()  # the origin's body broke off: the client must see it short
            return
        if isinstance(sink, compress.EncodingSink):
            await sink.finish()
        conn.end()
        self.stats.record(x_cache, sink.sent)
        self.log(req, reply.status, sink.sent, x_cache)

    def range_window(
        self, req: Request, conn: Responder, reply: Answer, head: Head
    ) -> tuple[Window, Answer] | None:
        """A single satisfiable Range of a 200 being streamed: a 206 cut out on the fly (as
        nginx's range filter does on a miss). None when it needs the whole body first."""
        length = head.length
        assert head.headers is not None
        if length is None or "Content-Encoding" in head.headers:
            return None
        if not if_range_allows(
            req.headers.get("If-Range"),
            head.headers.get("ETag"),
            head.headers.get("Last-Modified"),
            head.headers.get("Date"),
        ):
            return None
        plan = plan_ranges(req.headers.get("Range"), length)
        if plan.whole or plan.unsatisfiable or len(plan.ranges) != 1:
            return None
        first, last = plan.ranges[0]
        fields = [*reply.fields, ("Content-Range", f"bytes {first}-{last}/{length}")]
        return Window(conn, first, last), Answer(206, fields, b"", last - first + 1)

    def origin_failed(
        self,
        req: Request,
        conn: Responder,
        key: str,
        stale: Entry | None,
        error: OriginUnavailable,
        fwd: str,
        req_cc: policy.RequestCacheControl,
    ) -> None:
        """RFC 5861 section 4: serve stale when allowed; otherwise a short 502/504."""
        now = time.time()
        candidates = [stale] if stale is not None else []
        held_back = self.tiers.untrusted(key)
        chosen = select_variant(held_back, req.headers) if held_back else None
        if chosen is not None:
            candidates.append(chosen)
        entry = flow.stale_on_error(candidates, req_cc, now)
        code = 504 if error.kind == "timeout" else 502
        if entry is not None:
            status = f"fwd={fwd}; fwd-status={code}; detail=stale-if-error"
            self.deliver(req, conn, entry, "STALE", "", now, status)
            return
        self.reject(
            req, conn, flow.Reject(code, str(error), "MISS", f"fwd={fwd}; detail={error.kind}")
        )

    # -- pass ---------------------------------------------------------------------------

    async def pass_through(
        self, req: Request, conn: Responder, reason: str, replayable: bool = False
    ) -> None:
        """Straight to the origin and back, nothing stored. Only a request that cannot be a
        write (a HEAD, or a Range on a key nothing says is a write) may be sent again."""
        method = req.method
        headers = self.origin_headers(req)
        body = bytes(req.body) if req.body or "Content-Length" in req.headers else None
        t0 = time.monotonic()
        self.stats.origin_fetches += 1
        try:
            origin = await self.upstream.request(
                method, req.target, headers, body, replayable=replayable or method == "HEAD"
            )
        except OriginUnavailable as exc:
            self.stats.origin_errors[exc.kind] += 1
            code = 504 if exc.kind == "timeout" else 502
            self.reject(
                req, conn, flow.Reject(code, str(exc), "BYPASS", f"fwd={reason}; detail={exc.kind}")
            )
            return
        origin_ms = (time.monotonic() - t0) * 1000
        try:
            if 200 <= origin.status < 400:
                await self.purger.after_write(
                    method, req.target, req.host, origin.status, origin.headers
                )
            x_cache = "BYPASS" if reason in ("method", "bypass") and method != "HEAD" else "MISS"
            reply = respond.from_origin(
                origin.status,
                CIMultiDict(end_to_end(origin.headers)),
                self.ident,
                x_cache,
                f"fwd={reason}; fwd-status={origin.status}",
                origin_ms,
                origin.content_length,
            )
            # Delivery hook: an answer passed through is compressed as it streams.
            out: Responder | compress.EncodingSink = conn
            settings = self.cfg.compression
            if compress.eligible(origin.status, reply.fields, origin.content_length, settings):
                coding = compress.negotiate(req.headers.get("Accept-Encoding"), settings.codings)
                reply = compress.stream_reply(reply, coding)
                if coding is not None:
                    out = compress.EncodingSink(conn, coding, settings.level(coding, False))
            conn.start(req, reply)
            sent = 0
            if method != "HEAD":
                async for chunk in origin.chunks():
                    await out.write(chunk)
                    sent += len(chunk)
                if isinstance(out, compress.EncodingSink):
                    await out.finish()
                    sent = out.sent
            conn.end()
            self.stats.record(x_cache, sent)
            self.log(req, origin.status, sent, x_cache)
        except (TimeoutError, OSError) as exc:
            log.warning("pass-through of %s %s broke off: %s", method, req.target, exc)
            conn.abort()
        finally:
            origin.release()

    # -- logs and operations -----------------------------------------------------------

    def log(self, req: Request, status: int, size: int, x_cache: str) -> None:
        """Called once per answer, after its last byte: latency histogram, top URLs, the
        access log (edge.base.observe, edge.engine.access_log)."""
        now = time.monotonic()
        self.observer.answered(req.target, x_cache, size, now - req.started if req.started else 0.0)
        if self.access_log is not None:
            access_log.write(
                self.access_log, self.access_format, req, self.cfg.node, status, size, x_cache, now
            )

    def reconfigure(self, cfg: EdgeConfig, upstream: Upstream | None = None) -> None:
        """Apply a reloaded configuration (edge.ops.reload) to the requests that come next.

        Rules, TTLs, invalidations, hosts, headers and limits come from `cfg` from now on;
        the routes and the answers built under the old rules are dropped. Stored
        objects stay (each keeps the rule terms it was stored under until it expires).
        `upstream`: the new origin client when the origins or their timeouts changed (the
        caller closes the old one once requests in flight are done with it). What only a
        restart can change (node, listen address, workers, Redis, node tier) is the
        caller's to keep as it was (`edge.ops.reload.reloadable`)."""
        self.cfg = cfg
        self.ident = respond.Identity(cfg.node, cfg.keep_tag_headers)
        self.hosts = frozenset(h.lower() for h in cfg.hosts)
        self.guard.max_connections = cfg.max_connections
        self.ledger.set_limits(cfg.kept_limits)
        self.collapser.cfg = cfg
        self.purger.cfg = cfg
        self.images.reconfigure(cfg.images)
        if upstream is not None:
            self.upstream = upstream
            self.collapser.upstream = upstream
        self.tiers.stored_before.clear()  # "stored last time" was judged under the old rules
        self.tiers.forget_answers()  # answers built with the old headers settings
        self.routes.clear()
        self.request_heads.clear()
        self.kept_hits.clear()  # kept under the old routes and answers


def route_size(target: str, route: flow.Route) -> int:
    """A kept route's bytes: the target, and the key and target a Lookup holds."""
    return 3 * len(target) + 2 * ITEM_OVERHEAD


def head_size(data: bytes, head: ParsedHead) -> int:
    """A kept request head's bytes: the head, its parse (the field lines' bytes again, and
    a tuple per field line)."""
    return 2 * len(data) + ITEM_OVERHEAD + 128 * len(head[5])


def owned_bytes(entry: Entry, body: bytes | memoryview) -> int:
    """The bytes an answer's body holds beside its entry's: none when it is the entry's
    body or a view of it (a whole answer, a single range; a body kept in a memfd is a view
    itself: its parts are views of the same file)."""
    stored = entry.body
    if body is stored:
        return 0
    if isinstance(body, memoryview):
        owner = stored.obj if isinstance(stored, memoryview) else stored
        if body.obj is owner:
            return 0
    return len(body)


def accept_encoding(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A request's Accept-Encoding as sent (its field lines' values joined), without
    building the header mapping."""
    return b", ".join(v for k, v in fields if k.lower() == b"accept-encoding")


def forwarded_host(host: str, allowed: frozenset[str]) -> str | None:
    """The Host the origin may see as X-Forwarded-Host: only one of the configured `hosts`
    (the client's own Host could otherwise shape answers stored for everyone). Without
    `hosts`, none is forwarded: the origin sees its own name."""
    if not allowed:
        return None
    name = host.strip().lower()
    bare = host_name(name)
    if name in allowed:
        return name
    if bare in allowed:
        return bare
    return None
