"""The origin side: a pooled keep-alive client, round-robin over the origin addresses,
passive health checks, and the request headers a reverse proxy sends."""

from __future__ import annotations

import functools
import itertools
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict, MultiMapping
from yarl import URL

from edge.cache.policy import HOP_BY_HOP
from edge.upstream.origin_conn import BrokeOff, ConnectFailed, OriginResponse, Pool

if TYPE_CHECKING:
    from edge.config.settings import EdgeConfig

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


def with_connection_tokens(
    headers: MultiMapping[str], names: frozenset[str]
) -> frozenset[str] | set[str]:
    """`names` and the fields the message's Connection lists: hop-by-hop too (RFC 9110
    section 7.6.1)."""
    return names | connection_tokens(headers) if "Connection" in headers else names


def end_to_end(headers: MultiMapping[str]) -> list[tuple[str, str]]:
    """Header fields minus the hop-by-hop ones (RFC 9110 section 7.6.1)."""
    drop = with_connection_tokens(headers, HOP_BY_HOP)
    return [(k, v) for k, v in headers.items() if k.lower() not in drop]


# Never sent on from a client's request: hop-by-hop fields, those of the cache poisoning
# above (X-Forwarded-* are set by us) and Host (the origin's own is sent).
NOT_FORWARDED = HOP_BY_HOP | UNTRUSTED_REQUEST_HEADERS | {"host"}


@functools.lru_cache(maxsize=16)  # the callers' few constant tuples
def _not_forwarded(drop: tuple[str, ...]) -> frozenset[str]:
    return NOT_FORWARDED | {d.lower() for d in drop}


def forward_headers(
    headers: MultiMapping[str],
    *,
    peer: str | None,
    scheme: str | None,
    host: str | None,
    via: str,
    drop: tuple[str, ...] = (),
) -> CIMultiDict[str]:
    """The headers sent to the origin for a client's request. `scheme` and `host`: the
    X-Forwarded-Proto and X-Forwarded-Host to send, if any."""
    skip = with_connection_tokens(headers, _not_forwarded(drop))
    out: CIMultiDict[str] = CIMultiDict(
        [(k, v) for k, v in headers.items() if k.lower() not in skip]
    )
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
    host_field: str = ""  # the Host sent to it


class Upstream:
    """The origin addresses, each with its pool of keep-alive connections
    (`edge.upstream.origin_conn`)."""

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
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pools: list[Pool] = []

    @classmethod
    def configured(cls, cfg: EdgeConfig) -> Upstream:
        """The origins and timeouts of `cfg` (`origins:`, `timeouts:`)."""
        return cls(
            cfg.origins,
            cfg.connect_timeout,
            cfg.read_timeout,
            down_seconds=cfg.origin_down,
            idle_seconds=cfg.origin_idle,
        )

    async def start(self) -> None:
        self.pools = []
        for origin in self.origins:
            url = URL(origin.url)
            assert url.host is not None and url.port is not None  # checked by the config
            self.pools.append(
                Pool(
                    url.scheme,
                    url.host,
                    url.port,
                    self.connect_timeout,
                    self.read_timeout,
                    self.idle_seconds,
                    self.down_seconds,
                )
            )
            # RFC 9110 section 7.2: the origin's authority, its port only when not the default
            origin.host_field = url.host_port_subcomponent or url.host

    async def close(self) -> None:
        for pool in self.pools:
            pool.close()

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
    ) -> OriginResponse:
        """Send a request; try another origin, or a fresh connection, when that is safe.

        A connection that could not be opened carried nothing, so any request goes to the
        next origin. A request that failed before any byte of the answer came back (the
        origin closed a pooled connection, or answered garbage) is sent once more on a
        fresh connection only when `replayable` (a safe method, no body, not a write behind
        GET). A body is sent once, never again.
        """
        assert len(self.pools) == len(self.origins), "start() was not awaited"
        tried: set[int] = set()
        replayable = replayable and method in SAFE and body is None
        last: OriginUnavailable | None = None
        fresh = False  # this try is the one retry on a new connection
        target = _target(path_qs)
        i = self._pick(tried)
        while i is not None:
            tried.add(i)
            conn = None
            try:
                conn = await self.pools[i].acquire(fresh)
                head = _request_head(method, target, self.origins[i].host_field, headers, body)
                resp = await conn.request(head, body, method == "HEAD")
            except ConnectFailed as exc:
                # Nothing was sent: the next origin, if there is one.
                self._failed(i, str(exc))
                last = OriginUnavailable("connect", "cannot connect to the origin")
                i, fresh = self._pick(tried), False
                continue
            except TimeoutError as exc:
                if conn is not None:
                    conn.close()
                self._failed(i, "timeout")
                last = OriginUnavailable("timeout", "the origin did not answer in time")
                if not replayable:
                    raise last from exc
                i, fresh = self._pick(tried), False
                continue
            except OSError as exc:
                # Disconnected, reset, or garbage instead of an answer: the pooled
                # connection was dead, or the origin acted on the request and failed.
                if conn is not None:
                    conn.close()
                if replayable and not fresh:
                    fresh = True
                    continue
                self._failed(i, str(exc) or type(exc).__name__)
                detail = "the origin closed the connection"
                if isinstance(exc, BrokeOff) and not exc.before_answer:
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


def _target(path_qs: str) -> str:
    """The request-target sent to the origin. A target of plain URI characters is sent as the
    client sent it (already percent-encoded: no second pass); anything else is encoded."""
    if _PLAIN_TARGET.match(path_qs):
        return path_qs
    return URL(path_qs).raw_path_qs if path_qs.startswith("/") else path_qs


# Framing is the edge's own: a client's Content-Length or Transfer-Encoding never passes.
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})


def _request_head(
    method: str, target: str, host: str, headers: CIMultiDict[str], body: bytes | None
) -> bytes:
    """The request line and fields, HTTP/1.1 (RFC 9112 section 3): Host first, the body's
    length when there is one. Field values go out as the bytes they came in as (latin-1)."""
    fields: Iterable[tuple[str, str]] = headers.items()
    if "Content-Length" in headers or "Transfer-Encoding" in headers or "Host" in headers:
        fields = [(k, v) for k, v in fields if k.lower() not in _FRAMING]
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join([f"{k}: {v}\r\n" for k, v in fields])
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1", "replace")
