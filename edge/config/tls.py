"""The `tls:` section of the configuration: HTTPS listener, certificates, redirects, HSTS, HTTP/2.

    tls:
      port: 8443                      # the HTTPS listener (same host as listen.host)
      certificates:                   # the first is the default (clients without SNI)
        - cert: /run/secrets/edge_cert    # PEM chain, leaf first
          key: /run/secrets/edge_key
          names: [shop.example]       # SNI names; default: the certificate's DNS names
      min_version: "1.2"              # "1.2" or "1.3"
      reload_check: 5s                # how often the files are checked for a change (0: off)
      redirect: false                 # plain HTTP -> HTTPS: true (every host) or a host list
      redirect_port: null             # the HTTPS port in the Location (default: tls.port)
      hsts: null                      # e.g. "max-age=31536000; includeSubDomains"
      session_tickets: true           # false: no resumption, every handshake a full one
      http2:
        enabled: true
        max_concurrent_streams: 128
        max_header_list_size: 64k
        initial_window: 1m            # per stream, for request bodies
        max_resets: 200               # client-cancelled streams per 10 s before GOAWAY
        max_control_frames: 200       # PING / SETTINGS / small WINDOW_UPDATEs per 10 s
        stall_timeout: 30s            # a stream (or the connection) held at window 0

Parsed with the same reader as the rest of `edge.config.settings`: every error names key and file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.http.request import host_name

if TYPE_CHECKING:
    from edge.config.settings import _Reader


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert: str
    key: str
    names: tuple[str, ...] = ()  # empty: read from the certificate


@dataclass(frozen=True, slots=True)
class Http2Settings:
    enabled: bool = True
    max_concurrent_streams: int = 128
    max_header_list_size: int = 65536
    initial_window: int = 1 << 20
    max_resets: int = 200
    max_control_frames: int = 200
    stall_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    port: int
    certificates: tuple[CertFiles, ...]
    min_version: str = "1.2"
    reload_check: float = 5.0
    redirect: bool | tuple[str, ...] = False
    redirect_port: int | None = None
    hsts: str | None = None
    session_tickets: bool = True
    http2: Http2Settings = Http2Settings()

    def redirects(self, host: str) -> bool:
        """Whether a plain-HTTP request for `host` (a Host header value) is sent to HTTPS."""
        if self.redirect is True:
            return True
        if not self.redirect:
            return False
        return host_name(host) in self.redirect

    @property
    def answer_fields(self) -> tuple[tuple[str, str], ...]:
        """The fields every answer over TLS carries, whatever its protocol: HSTS when
        configured (RFC 6797 section 7.2: only over a secure transport)."""
        if self.hsts:
            return (("Strict-Transport-Security", self.hsts),)
        return ()


TLS_KEYS = {
    "port",
    "session_tickets",
    "certificates",
    "min_version",
    "reload_check",
    "redirect",
    "redirect_port",
    "hsts",
    "http2",
}
CERT_KEYS = {"cert", "key", "names"}
HTTP2_KEYS = {
    "enabled",
    "max_concurrent_streams",
    "max_header_list_size",
    "initial_window",
    "max_resets",
    "max_control_frames",
    "stall_timeout",
}
_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9.\-]+$|^\[?[0-9A-Fa-f:.]+\]?$")


def parse_tls(r: _Reader, raw: Any) -> TlsSettings | None:
    """The `tls:` section, or None when it is absent (plain HTTP only)."""
    if raw is None:
        return None
    top = r.mapping(raw, "tls", TLS_KEYS)
    if "port" not in top:
        raise r.fail("tls.port", "the HTTPS listener needs a port (e.g. 8443 or 443)")
    port = r.integer(top["port"], "tls.port", 1, 65535)
    certs_raw = top.get("certificates")
    if not isinstance(certs_raw, list) or not certs_raw:
        raise r.fail("tls.certificates", "expected a list of {cert, key} file pairs")
    certs = []
    for i, c in enumerate(certs_raw):
        where = f"tls.certificates[{i}]"
        m = r.mapping(c, where, CERT_KEYS)
        for k in ("cert", "key"):
            if k not in m:
                raise r.fail(f"{where}.{k}", "missing: the path of a PEM file")
        names = r.strings(m.get("names"), f"{where}.names")
        for j, n in enumerate(names):
            if not _NAME.match(n):
                raise r.fail(f"{where}.names[{j}]", f"expected a host name, got {n!r}")
        certs.append(
            CertFiles(
                r.string(m["cert"], f"{where}.cert"),
                r.string(m["key"], f"{where}.key"),
                tuple(n.lower() for n in names),
            )
        )
    version = str(top.get("min_version", "1.2"))
    if version not in ("1.2", "1.3"):
        raise r.fail("tls.min_version", f'expected "1.2" or "1.3", got {top["min_version"]!r}')
    redirect: bool | tuple[str, ...] = False
    if "redirect" in top:
        value = top["redirect"]
        if isinstance(value, bool):
            redirect = value
        else:
            redirect = tuple(h.lower() for h in r.strings(value, "tls.redirect"))
    redirect_port = None
    if top.get("redirect_port") is not None:
        redirect_port = r.integer(top["redirect_port"], "tls.redirect_port", 1, 65535)
    hsts = None
    if top.get("hsts") is not None:
        hsts = r.string(top["hsts"], "tls.hsts")
        if not re.match(r"^\s*max-age=\d+", hsts, re.IGNORECASE) or "\n" in hsts:
            raise r.fail(
                "tls.hsts", f'expected "max-age=SECONDS[; includeSubDomains]", got {hsts!r}'
            )
    h2 = r.mapping(top.get("http2"), "tls.http2", HTTP2_KEYS)
    d = Http2Settings()
    http2 = Http2Settings(
        enabled=r.boolean(h2.get("enabled", True), "tls.http2.enabled"),
        max_concurrent_streams=r.integer(
            h2.get("max_concurrent_streams", d.max_concurrent_streams),
            "tls.http2.max_concurrent_streams",
            1,
            10000,
        ),
        max_header_list_size=_bounded(
            r,
            h2.get("max_header_list_size", d.max_header_list_size),
            "max_header_list_size",
            1024,
            1 << 24,
        ),
        initial_window=_bounded(
            r, h2.get("initial_window", d.initial_window), "initial_window", 65535, 2**31 - 1
        ),
        max_resets=r.integer(
            h2.get("max_resets", d.max_resets), "tls.http2.max_resets", 1, 1 << 20
        ),
        max_control_frames=r.integer(
            h2.get("max_control_frames", d.max_control_frames),
            "tls.http2.max_control_frames",
            1,
            1 << 20,
        ),
        stall_timeout=r.duration(
            h2.get("stall_timeout", d.stall_timeout), "tls.http2.stall_timeout"
        ),
    )
    return TlsSettings(
        port=port,
        certificates=tuple(certs),
        min_version=version,
        reload_check=r.duration(top.get("reload_check", 5.0), "tls.reload_check"),
        redirect=redirect,
        redirect_port=redirect_port,
        hsts=hsts,
        session_tickets=r.boolean(top.get("session_tickets", True), "tls.session_tickets"),
        http2=http2,
    )


def _bounded(r: _Reader, value: Any, key: str, low: int, high: int) -> int:
    n = r.size(value, f"tls.http2.{key}")
    if not low <= n <= high:
        raise r.fail(f"tls.http2.{key}", f"expected a size from {low} to {high} bytes, got {n}")
    return n


def override_tls(
    r: _Reader,
    tls: TlsSettings | None,
    port: Any,
    cert: str | None,
    key: str | None,
    names: tuple[str, str, str],
) -> TlsSettings | None:
    """EDGE_TLS_PORT / EDGE_TLS_CERT / EDGE_TLS_KEY (or --tls-port, --cert, --key) over the
    file: a port turns HTTPS on; a cert and key replace the first certificate."""
    if port in (None, "") and not cert and not key:
        return tls
    if bool(cert) != bool(key):
        where = names[2] if cert else names[1]
        raise r.fail(where, f"{names[1]} and {names[2]} go together")
    new_port = tls.port if tls is not None else None
    if port not in (None, ""):
        try:
            new_port = r.integer(int(port), names[0], 1, 65535)
        except ValueError:
            raise r.fail(names[0], f"expected an integer, got {port!r}") from None
    certs = tls.certificates if tls is not None else ()
    if cert and key:
        certs = (CertFiles(cert, key), *certs[1:])
    if new_port is None:
        raise r.fail(names[0], "HTTPS needs a port: set tls.port or " + names[0])
    if not certs:
        raise r.fail(names[1], f"HTTPS needs a certificate: set tls.certificates or {names[1]}")
    if tls is None:
        return TlsSettings(port=new_port, certificates=certs)
    from dataclasses import replace

    return replace(tls, port=new_port, certificates=certs)
