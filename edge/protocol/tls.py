"""HTTPS at the edge: TLS contexts chosen by SNI, reloaded in place, ALPN to HTTP/1.1 or h2.

    client --TLS--> edge.protocol.tls_transport.TlsTransport (handshake done: ALPN says which)
        h2        -> edge.protocol.http2.Http2Connection   \\
        http/1.1  -> TlsHttp1Connection            >  the same Engine.serve
    client --plain HTTP--> Http1Connection (through `Redirector` when tls.redirect is on)

- One listener context (`CertStore.front`) whose `sni_callback` swaps each handshake onto the
  context of the certificate for the name the client asked for (`ssl.SSLObject.context`), the
  first certificate without SNI or for an unknown name. Reloading builds new contexts and
  replaces the store's table: handshakes from then on use them; open connections keep theirs.
  The listener context is never rebuilt: its session-ticket keys (OpenSSL's, one set per
  context) last as long as the node, and `edge.server.serve` makes the store before the
  workers fork, so that all of them resume each other's tickets.
- TLS 1.2 and 1.3 only (`tls.min_version` may raise it to 1.3); for 1.2 only ECDHE with AEAD
  ciphers (AES-GCM, ChaCha20-Poly1305); no compression, no renegotiation (the `ssl` module's
  server defaults plus these).
- The files are checked every `tls.reload_check` (mtime, size, inode: a Docker secret or a
  certbot renewal) and on SIGHUP (`EdgeServer.reload_certificates`). A reload that fails (a
  half-written file, a key that does not match) keeps the certificates in use and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.cache import flow
from edge.config.tls import CertFiles, TlsSettings
from edge.http.answer import Answer, Responder
from edge.http.request import Request, TlsRequest, host_name
from edge.protocol.http1 import Http1Connection, field_lines
from edge.protocol.tls_transport import TlsTransport

if TYPE_CHECKING:
    from edge.config.settings import EdgeConfig
    from edge.engine.engine import Engine
    from edge.protocol.handler import Handler

log = logging.getLogger("edge.protocol.tls")

CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsError(Exception):
    """A certificate or key that cannot be used; the message names the file."""


def cert_names(path: str) -> tuple[str, ...]:
    """The DNS names and IP addresses a PEM certificate (its first) is valid for."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise TlsError(f"{path}: cannot read a PEM certificate: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def make_context(files: CertFiles | None, settings: TlsSettings, http2: bool) -> ssl.SSLContext:
    """A server context: TLS 1.2+ (or 1.3), modern ciphers, ALPN h2 and http/1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers(CIPHERS_TLS12)  # TLS 1.3 suites are OpenSSL's (all AEAD)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    if not settings.session_tickets:
        # No TLS 1.3 tickets, no TLS 1.2 tickets. TLS 1.2 session ids stay (Python's `ssl`
        # cannot turn OpenSSL's session cache off), resumable on the worker that made them.
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
    if files is not None:
        for path in (files.cert, files.key):
            if not os.path.isfile(path):
                raise TlsError(f"{path}: no such file")
        try:
            ctx.load_cert_chain(files.cert, files.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(
                f"{files.cert} / {files.key}: cannot load the certificate and key: {exc}"
            ) from exc
    return ctx


def _stamp(files: tuple[CertFiles, ...]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for f in files:
        for path in (f.cert, f.key):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((0, 0, 0))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Table:
    default: ssl.SSLContext
    exact: dict[str, ssl.SSLContext]
    wildcard: dict[str, ssl.SSLContext]  # "example.com" for "*.example.com"


class CertStore:
    """The certificates in use, by SNI name; `front` is the listener's context."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.http2 = settings.http2.enabled
        self.reloads = 0
        self.reload_errors = 0
        self._stamp = _stamp(settings.certificates)
        self.table = self._build()  # raises TlsError: the edge does not start without them
        self.front = make_context(settings.certificates[0], settings, self.http2)
        self.front.sni_callback = self._pick

    def _build(self) -> _Table:
        default: ssl.SSLContext | None = None
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        for files in self.settings.certificates:
            ctx = make_context(files, self.settings, self.http2)
            default = default or ctx
            for name in files.names or cert_names(files.cert):
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], ctx)
                else:
                    exact.setdefault(name, ctx)
        assert default is not None
        return _Table(default, exact, wildcard)

    def context_for(self, name: str | None) -> ssl.SSLContext:
        table = self.table
        if not name:
            return table.default
        name = name.lower().rstrip(".")
        ctx = table.exact.get(name)
        if ctx is None and "." in name:
            ctx = table.wildcard.get(name.split(".", 1)[1])
        return ctx or table.default

    def _pick(self, sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        # Called by OpenSSL after the ClientHello: continue on the chosen certificate's context.
        sslobj.context = self.context_for(name)

    def reload(self, why: str) -> bool:
        """Build every context again from the files; keep the current ones on an error."""
        try:
            table = self._build()
        except TlsError as exc:
            self.reload_errors += 1
            log.error("TLS reload (%s) failed, keeping the certificates in use: %s", why, exc)
            return False
        self.table = table
        self._stamp = _stamp(self.settings.certificates)
        self.reloads += 1
        log.info("TLS certificates reloaded (%s)", why)
        return True

    def changed(self) -> bool:
        return _stamp(self.settings.certificates) != self._stamp

    def reconfigure(self, settings: TlsSettings) -> bool:
        """A reloaded `tls:` section: its certificates in use from the next handshake (the
        listener context and what only a restart changes stay: `edge.ops.reload`)."""
        if settings.certificates == self.settings.certificates:
            self.settings = settings
            return True
        old = self.settings
        self.settings = settings
        if not self.reload("configuration reloaded"):
            self.settings = old
            return False
        return True

    async def watch(self) -> None:
        """Reload when a file changes (checked every tls.reload_check)."""
        every = self.settings.reload_check
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            if self.changed():
                # A file replaced in two steps (cert, then key) may be caught in between:
                # a failed reload leaves the stamp as it was, so the next check tries again.
                self.reload("files changed")


class TlsHttp1Connection(Http1Connection):
    """HTTP/1.1 over TLS: requests marked https (X-Forwarded-Proto), HSTS when configured."""

    request_class = TlsRequest

    def __init__(self, engine: Handler, answer_fields: Sequence[tuple[str, str]]) -> None:
        super().__init__(engine)
        self.extra_fields = field_lines(answer_fields).decode("latin-1")


def connection_for(
    engine: Engine, settings: TlsSettings
) -> Callable[[TlsTransport], asyncio.BaseProtocol]:
    """What a TLS connection speaks once its handshake is done: h2 or HTTP/1.1, as ALPN chose."""

    def choose(transport: TlsTransport) -> asyncio.BaseProtocol:
        now = engine.cfg.tls or settings  # as reloaded (HSTS, the HTTP/2 limits)
        if transport.sslobj.selected_alpn_protocol() == "h2":
            from edge.protocol.http2 import Http2Connection

            return Http2Connection(engine, now.http2, now.answer_fields)
        return TlsHttp1Connection(engine, now.answer_fields)

    return choose


class Redirector:
    """The plain-HTTP listener's `Handler` when `tls.redirect` is on, in front of the
    engine: requests for the hosts named (or every host) are answered 308 to the same URL
    on https; the admin endpoints (`/_edge/`: the Swarm healthcheck) and ACME challenges are
    served as they are. The rest of the `Handler` is the engine's, read as it is now: a
    reload changes the redirect and the plain listener's limits for the next connections
    and requests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.guard = engine.guard
        self.request_heads = engine.request_heads
        self.ledger = engine.ledger

    @property
    def cfg(self) -> EdgeConfig:
        return self.engine.cfg

    @property
    def access_log(self) -> logging.Logger | None:
        return self.engine.access_log

    @property
    def timed(self) -> bool:
        return self.engine.timed

    def fresh_hit(
        self,
        method: str,
        target: str,
        host: str,
        flags: int,
        special: tuple[tuple[bytes, bytes], ...],
        fields: Sequence[tuple[bytes, bytes]],
    ) -> Answer | None:
        """HTTP/1.1's hit path (`Engine.fresh_hit`) is not taken here: `serve` decides on
        the redirect before any answer from the cache."""
        return None

    def serve(self, req: Request, conn: Responder) -> Coroutine[Any, Any, None] | None:
        target = req.target
        settings = self.engine.cfg.tls
        if (
            settings is not None
            and settings.redirect
            and not target.startswith(("/_edge/", "/.well-known/acme-challenge/"))
        ):
            host = bare_host(req.host)
            if host is None:
                # An empty Host, or one that names no host, cannot be redirected: refused,
                # never served as if it had asked for plain HTTP.
                need = "a Host naming this site is needed (it is served on https)"
                self.engine.reject(req, conn, flow.Reject(400, need))
                return None
            if settings.redirects(host):
                port = settings.redirect_port or settings.port
                suffix = "" if port == 443 else f":{port}"
                location = f"https://{host}{suffix}{target}"
                body = f"moved to {location}\n".encode()
                fields = [
                    ("Location", location),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Cache-Control", "no-store"),
                    ("X-Served-By", self.engine.ident.node),
                ]
                # RFC 9110 section 15.4.9: 308 keeps the method and body (a POST stays a POST).
                conn.send(req, Answer(308, fields, body, len(body)))
                self.engine.log(req, 308, len(body), "-")
                return None
        return self.engine.serve(req, conn)


def bare_host(host: str) -> str | None:
    """The host name of a Host header without its port; None if it is not a plain name."""
    name = host.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return None
        with contextlib.suppress(ValueError):
            ipaddress.IPv6Address(name[1:end])
            return name[: end + 1]
        return None
    name = host_name(name)
    if not name or not all(c.isalnum() or c in ".-" for c in name):
        return None
    return name


async def start_listener(
    engine: Engine, store: CertStore, host: str, reuse_port: bool
) -> asyncio.Server:
    """The HTTPS listener on `tls.port`."""
    loop = asyncio.get_running_loop()
    settings = store.settings
    choose = connection_for(engine, settings)
    handshakes = engine.ledger.account("handshakes")
    server = await loop.create_server(
        # limits.header_timeout as it is now (a reload may change it) bounds each handshake.
        lambda: TlsTransport(
            store.front, choose, engine.cfg.header_timeout, engine.guard, handshakes
        ),
        host,
        settings.port,
        reuse_port=reuse_port,
        backlog=2048,
    )
    import socket

    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server


def plain_factory(engine: Engine) -> Callable[[], Http1Connection]:
    """The plain listener's protocol factory: redirecting to HTTPS when `tls.redirect` is
    on, as the configuration is when the connection comes (a reload may turn it on or off)."""
    redirector = Redirector(engine)

    def protocol() -> Http1Connection:
        tls = engine.cfg.tls
        handler: Handler = redirector if tls is not None and tls.redirect else engine
        return Http1Connection(handler)

    return protocol
