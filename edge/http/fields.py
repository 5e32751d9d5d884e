"""The request header fields the edge looks at before it builds the full header mapping:
one bit each, set while the head is parsed (edge.protocol.http1, edge.protocol.http2)."""

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
