"""The request header fields the edge looks at before it builds the full header mapping:
one bit each, set while the head is parsed, by every door the same way (`HeadFields.add`,
called by edge.protocol.http1 for each field line, and by `read_field_list`, which makes a
request of the field list HTTP/2 decodes, as it would of HTTP/3's)."""

from __future__ import annotations

from collections.abc import Sequence

from edge.http.request import Refused, check_host, content_length, method_of, split_target

F_RANGE = 1
F_COND = 2  # If-None-Match / If-Modified-Since: may be answered 304 from cache
F_COND_OTHER = 4  # If-Match, If-Unmodified-Since, If-Range
F_CACHE_CONTROL = 8  # Cache-Control / Pragma
F_BODY = 16
F_EXPECT = 32
F_UPGRADE = 64
F_TE = 128
F_HOST = 256
F_ACCEPT_ENCODING = 512  # the variant a hit serves depends on it (edge.engine.compress)
# HTTP/1.1's Connection (edge.protocol.http1): without it, a connection httptools keeps alive is
# HTTP/1.1's (asking httptools the version costs ten times as much as asking that).
F_CONNECTION = 1024
# Flags that change nothing of how a request's head is checked or a hit is found.
NEUTRAL = F_ACCEPT_ENCODING | F_CONNECTION
PLAIN = F_HOST | NEUTRAL  # flags that need no check of the request's head
# Fields a hit's answer depends on beside the stored entry (304, 206, 416): the engine keeps
# the answers it built by their values.
ANSWERED_FROM_CACHE = F_RANGE | F_COND | F_COND_OTHER
# The requests the hit path takes (`Engine.fresh_hit`): those whose
# `flags | ANSWERED_FROM_CACHE | NEUTRAL == HIT_PATH`, a Host and maybe fields answered from
# cache, nothing else.
HIT_PATH = F_HOST | ANSWERED_FROM_CACHE | NEUTRAL
FLAGS_BY_NAME = {
    b"range": F_RANGE,
    b"if-none-match": F_COND,
    b"if-modified-since": F_COND,
    b"if-match": F_COND_OTHER,
    b"if-unmodified-since": F_COND_OTHER,
    b"if-range": F_COND_OTHER,
    b"cache-control": F_CACHE_CONTROL,
    b"pragma": F_CACHE_CONTROL,
    b"content-length": F_BODY,
    b"transfer-encoding": F_BODY | F_TE,
    b"expect": F_EXPECT,
    b"upgrade": F_UPGRADE,
    b"accept-encoding": F_ACCEPT_ENCODING,
}


Special = tuple[tuple[bytes, bytes], ...]


class HeadFields:
    """What a request head's field lines say before any mapping is built: the flags above,
    the fields a hit's answer depends on (`special`: conditional and Range, by lower-case
    name) and the Host."""

    __slots__ = ("flags", "host", "special")

    def __init__(self) -> None:
        self.flags = 0
        self.special: Special = ()
        self.host = ""

    def add(self, lname: bytes, value: bytes) -> None:
        """One field line, its name lower-cased."""
        flag = FLAGS_BY_NAME.get(lname)
        if flag is not None:
            self.flags |= flag
            if flag & ANSWERED_FROM_CACHE:
                self.special += ((lname, value),)
        elif lname == b"host":
            if self.flags & F_HOST:
                # RFC 9112 section 3.2: more than one Host line is a 400 (on h2 a malformed
                # request before this: edge.protocol.h2_frames.check_request).
                raise Refused(400, "more than one Host header field")
            self.flags |= F_HOST
            self.host = value.decode("latin-1")
        elif lname == b"connection":
            self.flags |= F_CONNECTION


# method, target, host, field lines, flags, special fields, too large, Content-Length
FieldList = tuple[str, str, str, tuple[tuple[bytes, bytes], ...], int, Special, bool, int | None]


def read_field_list(
    fields: Sequence[tuple[bytes, bytes]], max_headers: int, max_field: int
) -> FieldList:
    """A request from a field list with pseudo-header fields, as HTTP/2 (RFC 9113 section
    8.3.1) and HTTP/3 (RFC 9114 section 4.3.1) carry it, its names lower case and its form
    checked by the protocol: `:authority` as Host, split `cookie` fields joined again (RFC
    9113 section 8.2.3), the fields classified (`HeadFields`), `too large` past
    `limits.max_headers` or `max_field_size` (431, as on HTTP/1.1); Refused by the request
    check every door shares (edge.http.request)."""
    raw: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    method = path = authority = b""
    seen = HeadFields()
    lengths: set[bytes] = set()
    too_large = len(fields) > max_headers + 4  # + the pseudo-header fields
    for name, value in fields:
        if len(name) + len(value) > max_field:
            too_large = True
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        seen.add(name, value)
        if name == b"content-length":
            lengths.add(value)
        raw.append((name, value))
    if cookies:
        raw.append((b"cookie", b"; ".join(cookies)))
    flags, host = seen.flags, seen.host
    if authority:
        host = authority.decode("latin-1")
        if not flags & F_HOST:
            raw.append((b"host", authority))
            flags |= F_HOST
    checked = method_of(method)
    # `:path` is origin-form, or `*` for OPTIONS; CONNECT has none (the flow core answers
    # it 405).
    absolute, target = split_target(checked, path.decode("latin-1"))
    if absolute is not None:
        raise Refused(400, "the request target must be a path")
    check_host(host)
    length = b",".join(lengths).decode("latin-1") if lengths else None
    return (
        checked,
        target,
        host,
        tuple(raw),
        flags,
        seen.special,
        too_large,
        None if length is None else content_length(length),
    )
