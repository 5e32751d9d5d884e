"""HTTPS hit scenarios: the edge and nginx, each with 2 workers, serving the same certificate
(ECDSA P-256, `bench.topology.certs`) in front of the same fast origin, measured like the
plain hit scenarios (rounds in rotation, CPU per request of each server's process tree).

- HTTP/1.1 over TLS: wrk with an https URL, keep-alive connections.
- h2: h2load (Debian's nghttp2-client), clients x streams in flight.
- handshakes: h2load over HTTP/1.1 with `Connection: close`, so every request is a new
  connection and a full handshake (no resumption); requests/s = handshakes/s. (Not wrk: it
  spins while a handshake waits, `bench.loadgen.run_h2load_new_connections`.)

Both servers offer TLS 1.2 and 1.3 with the same ciphers; clients negotiate TLS 1.3.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
from functools import cache
from urllib.parse import urlsplit

from bench.load.context import FLOORS, Context
from bench.load.hits import HitScenario, _verdict
from bench.load.scenario import Target
from bench.loadgen import LoadResult, run_h2load, run_h2load_new_connections
from bench.peers import Server, nginx_tls_cache
from bench.procs import StartError, free_port
from bench.servers import tls_section
from bench.topology.certs import DevCert, ensure_dev_cert

WARM = 3


def h2load_binary() -> str | None:
    return shutil.which("h2load")


@cache
def _client_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def get_tls(url: str, ca: str) -> tuple[int, dict[str, str], bytes]:
    """One GET over HTTPS (HTTP/1.1) on a new connection, trusting `ca`."""
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(
        parts.hostname or "127.0.0.1", parts.port, context=_client_context(ca), timeout=30
    )
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), resp.read()
    finally:
        conn.close()


class TlsHitScenario(HitScenario):
    """A hit scenario over HTTPS: edge and nginx only (the origin is plain HTTP)."""

    protocol = "HTTP/1.1 over TLS"

    def describe(self, opts: object) -> str:
        return f"GET {self.path} ({self.protocol}, TLS 1.3, ECDSA P-256)"

    def start(self, ctx: Context) -> list[Target]:
        cert = ensure_dev_cert(ctx.group.workdir / "tls")
        self.ca = str(cert.ca)
        origin = ctx.fast_origin()
        port = int(origin.url.rsplit(":", 1)[1])
        targets = []
        for kind in ctx.caches:
            try:
                if kind == "edge":
                    targets.append(Target(kind, self._edge(ctx, origin.url, cert)))
                elif kind == "nginx":
                    server = nginx_tls_cache(
                        ctx.group, port, cert.cert, cert.key, name=f"nginx-{self.letter}"
                    )
                    targets.append(Target(kind, server))
                elif kind in FLOORS:
                    targets.append(Target(kind, ctx.start_floor(self.letter, kind, cert)))
            except (RuntimeError, OSError, StartError) as exc:
                targets.append(Target(kind, None, str(exc).splitlines()[0]))
        return targets

    def _edge(self, ctx: Context, origin_url: str, cert: DevCert) -> Server:
        tls_port = free_port()
        server = ctx.start_edge(origin_url, self.letter, {"tls": tls_section(tls_port, cert)})
        server.url = f"https://127.0.0.1:{tls_port}"
        return server

    def _warm(self, url: str) -> tuple[list[str], dict[str, str]]:
        verdicts = []
        for _ in range(2 * WARM):
            status, headers, _ = get_tls(url, self.ca)
            verdicts.append(_verdict(status, headers))
        return verdicts, {}

    def load(
        self, ctx: Context, url: str, conns: int, seconds: float, headers: dict[str, str]
    ) -> LoadResult:
        return ctx.hammer(url, conns, seconds, headers)


class H2HitScenario(TlsHitScenario):
    protocol = "h2"
    clients = 8
    streams = 8

    def connections(self, opts: object) -> int:
        return self.clients

    def describe(self, opts: object) -> str:
        return (
            f"GET {self.path} (h2 with h2load: {self.clients} connections x {self.streams} "
            "streams in flight, TLS 1.3)"
        )

    def load(
        self, ctx: Context, url: str, conns: int, seconds: float, headers: dict[str, str]
    ) -> LoadResult:
        binary = h2load_binary()
        if binary is None:
            raise RuntimeError("h2load is not installed (Debian package nghttp2-client)")
        return run_h2load(
            binary,
            url,
            clients=self.clients,
            streams=self.streams,
            threads=ctx.opts.threads,
            duration=seconds,
        )


class HandshakeScenario(TlsHitScenario):
    protocol = "a new TLS connection per request"
    handshake_connections = 16

    def connections(self, opts: object) -> int:
        return self.handshake_connections

    def describe(self, opts: object) -> str:
        return (
            f"GET {self.path} with `Connection: close` (h2load over HTTP/1.1): every request "
            "a full TLS 1.3 handshake, no resumption; requests/s = handshakes/s"
        )

    def load(
        self, ctx: Context, url: str, conns: int, seconds: float, headers: dict[str, str]
    ) -> LoadResult:
        binary = h2load_binary()
        if binary is None:
            raise RuntimeError("h2load is not installed (Debian package nghttp2-client)")
        return run_h2load_new_connections(
            binary, url, clients=conns, threads=ctx.opts.threads, duration=seconds
        )
