"""The request every door hands the engine, and the one check it passes first.

HTTP/1.1 (edge.protocol.http1), HTTP/2 (edge.protocol.http2) and TLS under either turn bytes
into a `Request` through the functions below, so that a request means the same thing whichever
door it came in by: the flow core, the origin client, the invalidation after a write and the
access log read what was checked here, never the client's raw bytes.

- The method is one the edge knows, spelt exactly so (RFC 9110 section 9.1: method names are
  case-sensitive). `get` is not GET: a door that let it through would have the origin client
  send GET for a request the flow core judged as something else. Not a token: 400. A token
  the edge does not implement: 501 (RFC 9110 section 15.6.2).
- The target is origin-form, or absolute-form (its authority replaces Host), or `*` for
  OPTIONS (RFC 9112 section 3.2; RFC 9113 section 8.3.1); the authority-form is CONNECT's,
  which the flow core refuses (405).
- The Host (or `:authority`) is a valid authority: a reg-name, an IPv4 address or an IP
  literal, with an optional port (RFC 3986 section 3.2.2; RFC 9112 section 3.2: "a Host
  header field with an invalid field value" is a 400).
- A Content-Length is ASCII digits (RFC 9110 section 8.6), never what `str.isdigit` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from multidict import CIMultiDict

# The methods the edge implements, by their bytes on the wire (exact case). CONNECT is
# known so that the flow core can refuse it with a 405 and an Allow field.
METHODS = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE", "CONNECT")
}

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# RFC 3986 section 3.2.2 and 3.2.3: host [ ":" port ], the host a reg-name (unreserved,
# pct-encoded, sub-delims), an IPv4 address (a reg-name by this syntax) or an IP literal.
_AUTHORITY = re.compile(
    r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
    r"|\[[0-9A-Fa-f:.]+\]"
    r"|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"
).fullmatch
_PORT = re.compile(r"[0-9]{0,5}").fullmatch
_DIGITS = re.compile(r"[0-9]{1,18}").fullmatch


def status_without_body(status: int) -> bool:
    """RFC 9110 section 6.4.1: a 1xx, 204 or 304 answer has no content (and the edge sends
    no Content-Length with it)."""
    return status < 200 or status == 204 or status == 304


def without_body(method: str, status: int) -> bool:
    """No content follows this answer's head: `status_without_body`, or any answer to a HEAD
    (RFC 9110 section 9.3.2)."""
    return method == "HEAD" or status_without_body(status)


# A keep-alive request head kept with its parse's outcome (`Http1Connection.data_received`):
# method, target, Host, flags, the conditional and Range fields, the field lines, version.
ParsedHead = tuple[
    str, str, str, int, tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...], str
]


class Refused(Exception):
    """A request refused by a door: answer `status` with `message` (and close, on
    HTTP/1.1, where the rest of the connection's bytes cannot be trusted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def method_of(raw: bytes) -> str:
    """The method a request's bytes name, or Refused (400 not a token, 501 unknown)."""
    method = METHODS.get(raw)
    if method is not None:
        return method
    if not _TOKEN(raw):
        raise Refused(400, "the method is not a token")
    shown = raw[:32].decode("latin-1")
    raise Refused(501, f"method {shown} is not implemented here (methods are case-sensitive)")


def check_host(host: str) -> None:
    """An authority as Host or `:authority` carries it (empty is allowed: RFC 9112 section
    3.2 has a client send an empty Host when the target URI has no authority)."""
    name, port = host, ""
    if host.startswith("["):
        end = host.find("]")
        if end > 0 and host[end + 1 : end + 2] == ":":
            name, port = host[: end + 1], host[end + 2 :]
    elif ":" in host:
        name, _, port = host.rpartition(":")
    if not _AUTHORITY(name) or not _PORT(port):
        raise Refused(400, "the Host is not a valid authority")


def host_name(host: str) -> str:
    """A Host value's name: lower case, without its port (an IP literal keeps its
    brackets). RFC 9110 section 4.2.3: the host is case-insensitive."""
    name = host.strip().lower()
    return name if name.endswith("]") or ":" not in name else name.rsplit(":", 1)[0]


def split_target(method: str, target: str) -> tuple[str | None, str]:
    """The authority an absolute-form target names (None for origin-form and `*`), and the
    target in origin-form; Refused for anything else (RFC 9112 section 3.2)."""
    if target[:1] == "/":
        return None, target
    if target == "*" and method == "OPTIONS":
        return None, target
    if method == "CONNECT":
        return None, target  # authority-form: the flow core answers 405
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        try:
            parts = urlsplit(target)
        except ValueError as exc:
            raise Refused(400, "the request target is not a URI") from exc
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts.netloc, path
    raise Refused(400, "the request target must be a path")


def content_length(value: str) -> int:
    """A Content-Length value (several equal ones joined by commas are one: RFC 9110
    section 8.6), or Refused."""
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        raise Refused(400, "conflicting Content-Length values")
    only = values.pop()
    if not _DIGITS(only):
        raise Refused(400, "the Content-Length is not a number")
    return int(only)


class Request:
    """One checked request, from any door. `headers` is built on first use (a plain hit
    never needs it)."""

    __slots__ = (
        "_headers",
        "body",
        "complete",
        "first_byte",
        "flags",
        "hit_tried",
        "host",
        "keep_alive",
        "method",
        "peer",
        "raw_headers",
        "request_id",
        "special",
        "started",
        "target",
        "upgrade",
        "version",
    )
    scheme = "http"  # edge.protocol.tls.TlsRequest: "https"

    def __init__(self, peer: str) -> None:
        self.method = ""
        self.target = ""
        self.version = "1.1"
        self.raw_headers: Sequence[tuple[bytes, bytes]] = ()
        self._headers: CIMultiDict[str] | None = None
        self.flags = 0
        self.special: tuple[tuple[bytes, bytes], ...] = ()  # conditional and Range fields
        self.keep_alive = True
        self.peer = peer
        self.host = ""
        # The hit path (`Engine.fresh_hit`) found nothing for it a moment ago, nothing ran
        # since: the engine does not ask again.
        self.hit_tried = False
        self.body = bytearray()
        self.complete = False
        self.started = 0.0
        self.first_byte = 0.0  # set by `start` when timed (a streamed answer's head went out)
        self.request_id = ""  # X-Request-Id, once the engine needed one (edge.engine.access_log)
        self.upgrade = False

    @property
    def headers(self) -> CIMultiDict[str]:
        if self._headers is None:
            self._headers = CIMultiDict(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers
            )
        return self._headers


class TlsRequest(Request):
    """A request that came over TLS (HTTP/1.1 or h2): the origin sees X-Forwarded-Proto https."""

    __slots__ = ()
    scheme = "https"
