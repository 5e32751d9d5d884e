"""The origin side: a pooled keep-alive client, round-robin over the origin addresses,
passive health checks, and the request headers a reverse proxy sends."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from edge.cache.policy import HOP_BY_HOP

log = logging.getLogger("edge.upstream.client")

# Headers a client could use to make the origin answer differently without the cache key
# knowing (cache poisoning); they never reach the origin. X-Forwarded-* are set by us.
UNTRUSTED_REQUEST_HEADERS = frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "forwarded",
        "x-edge-peer",
    }
)
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # RFC 9110 section 9.2.1


class OriginUnavailable(Exception):
    """No origin could be reached; `kind` is "connect" or "timeout"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def connection_tokens(headers: MultiMapping[str]) -> set[str]:
    """Field names listed in Connection: hop-by-hop too (RFC 9110 section 7.6.1)."""
    return {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",") if t}


def end_to_end(headers: MultiMapping[str]) -> list[tuple[str, str]]:
    """Header fields minus the hop-by-hop ones (RFC 9110 section 7.6.1)."""
    drop = HOP_BY_HOP | connection_tokens(headers)
    return [(k, v) for k, v in headers.items() if k.lower() not in drop]


def forward_headers(
    headers: MultiMapping[str],
    *,
    peer: str | None,
    scheme: str | None,
    host: str | None,
    via: str,
    drop: Iterable[str] = (),
) -> CIMultiDict[str]:
    """The headers sent to the origin for a client's request. `scheme` and `host`: the
    X-Forwarded-Proto and X-Forwarded-Host to send, if any."""
    skip = HOP_BY_HOP | connection_tokens(headers) | UNTRUSTED_REQUEST_HEADERS | {"host"}
    skip |= {d.lower() for d in drop}
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers.items():
        if k.lower() not in skip:
            out.add(k, v)
    prior = ", ".join(headers.getall("X-Forwarded-For", []))
    if peer:
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    if scheme:
        out["X-Forwarded-Proto"] = scheme
    if host:
        out["X-Forwarded-Host"] = host
    prior_via = ", ".join(headers.getall("Via", []))
    out["Via"] = f"{prior_via}, {via}" if prior_via else via
    return out


@dataclass
class _Origin:
    url: str
    down_until: float = 0.0
    failures: int = 0


class Upstream:
    """The origin addresses, with a shared aiohttp ClientSession."""

    def __init__(
        self,
        origins: Iterable[str],
        connect_timeout: float,
        read_timeout: float,
        down_seconds: float = 5.0,
        idle_seconds: float = 4.0,
    ) -> None:
        self.origins = [_Origin(u.rstrip("/")) for u in origins]
        if not self.origins:
            raise ValueError("at least one origin is needed")
        self._cycle = itertools.cycle(range(len(self.origins)))
        self.down_seconds = down_seconds
        # Shorter than common origin keep-alive timeouts (Node.js 5 s, gunicorn 2 s is the
        # exception: set timeouts.origin_idle below it), so an idle pooled connection is
        # closed here before the origin closes it under a request in flight.
        self.idle_seconds = idle_seconds
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self.session: aiohttp.ClientSession | None = None
        self.fresh: aiohttp.ClientSession | None = None  # one new connection per request

    def _session(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            auto_decompress=False,  # bytes pass through as the origin sent them
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy never keeps cookies
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )

    async def start(self) -> None:
        self.session = self._session(
            aiohttp.TCPConnector(
                limit=512,
                limit_per_host=256,
                keepalive_timeout=self.idle_seconds,
                enable_cleanup_closed=True,
            )
        )
        self.fresh = self._session(aiohttp.TCPConnector(limit=64, force_close=True))

    async def close(self) -> None:
        for session in (self.session, self.fresh):
            if session is not None:
                await session.close()

    def _pick(self, exclude: set[int]) -> int | None:
        """Round-robin over healthy origins; a down origin is probed again once its time is up."""
        now = time.monotonic()
        candidates = []
        for _ in range(len(self.origins)):
            i = next(self._cycle)
            if i in exclude:
                continue
            if self.origins[i].down_until <= now:
                return i
            candidates.append(i)
        # Every origin is marked down: try the one that comes back soonest rather than nothing.
        if candidates:
            return min(candidates, key=lambda i: self.origins[i].down_until)
        return None

    def _failed(self, i: int, why: str) -> None:
        origin = self.origins[i]
        origin.failures += 1
        if len(self.origins) == 1:
            return  # as nginx: the only origin is never marked down (there is no other)
        if origin.down_until <= time.monotonic():
            log.warning("origin %s marked down for %.0fs: %s", origin.url, self.down_seconds, why)
        origin.down_until = time.monotonic() + self.down_seconds

    def _ok(self, i: int) -> None:
        origin = self.origins[i]
        if origin.failures:
            log.info("origin %s is back", origin.url)
        origin.failures = 0
        origin.down_until = 0.0

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [{"url": o.url, "up": o.down_until <= now} for o in self.origins]

    async def request(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | None = None,
        replayable: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send a request; try another origin, or a fresh connection, when that is safe.

        A connection that could not be opened carried nothing, so any request goes to the
        next origin. A request that failed before any byte of the answer came back (the
        origin closed a pooled connection, or answered garbage) is sent once more on a
        fresh connection only when `replayable` (a safe method, no body, not a write behind
        GET). A body is streamed so that the origin client never resends it either.
        """
        assert self.session is not None and self.fresh is not None, "start() was not awaited"
        tried: set[int] = set()
        replayable = replayable and method in SAFE and body is None
        last: OriginUnavailable | None = None
        fresh = False  # this try is the one retry on a new connection
        i = self._pick(tried)
        while i is not None:
            tried.add(i)
            session = self.fresh if fresh else self.session
            try:
                resp = await session.request(
                    method,
                    _url(self.origins[i].url, path_qs),
                    headers=headers,
                    data=None if body is None else _once(body),
                    allow_redirects=False,
                    compress=False,
                    chunked=None,
                )
            except aiohttp.ClientConnectorError as exc:
                # Nothing was sent: the next origin, if there is one.
                self._failed(i, str(exc))
                last = OriginUnavailable("connect", "cannot connect to the origin")
                i, fresh = self._pick(tried), False
                continue
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                self._failed(i, "timeout")
                last = OriginUnavailable("timeout", "the origin did not answer in time")
                if not replayable:
                    raise last from exc
                i, fresh = self._pick(tried), False
                continue
            except aiohttp.ClientError as exc:
                # Disconnected, reset, or garbage instead of an answer: the pooled
                # connection was dead, or the origin acted on the request and failed.
                if replayable and not fresh:
                    fresh = True
                    continue
                self._failed(i, str(exc) or type(exc).__name__)
                detail = "the origin closed the connection"
                if not isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
                    detail = f"bad answer from the origin ({exc})"
                last = OriginUnavailable("protocol", detail)
                if not replayable:
                    raise last from exc
                i, fresh = self._pick(tried), False
                continue
            self._ok(i)
            return resp
        raise last or OriginUnavailable("connect", "no origin available")


_PLAIN_TARGET = re.compile(r"[!#$%&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]*\Z")


def _url(base: str, path_qs: str) -> URL:
    """The origin URL of a request target. A target of plain URI characters is used as the
    client sent it (already percent-encoded: no second pass); anything else is encoded."""
    if _PLAIN_TARGET.match(path_qs):
        return URL(base + path_qs, encoded=True)
    return URL(base + path_qs)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    """A request body as a stream: once sent, aiohttp cannot send it again by itself."""
    yield body
