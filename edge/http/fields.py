"""The request header fields the edge looks at before it builds the full header mapping:
one bit each, set while the head is parsed, by every door the same way (`HeadFields.add`,
called by edge.protocol.http1 and edge.protocol.http2 for each field line)."""

from __future__ import annotations

from edge.http.request import Refused

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
