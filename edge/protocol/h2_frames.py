"""The bytes of HTTP/2 (RFC 9113 section 4 and 6, RFC 7541): frame headers, the frames a
server writes, stateless HPACK for responses, request header blocks decoded (the `hpack`
package) and checked. Pure: no I/O, no connection state; `edge.protocol.http2` drives it.

Responses are encoded without the dynamic table (literal without indexing, static-table
names, no Huffman): an encoded block depends only on its fields, so the block of a cached
answer is encoded once and reused (`ResponseBlocks`), and no encoder state can go out of
step with the client's decoder.
"""

from __future__ import annotations

import re
import struct
from enum import IntEnum
from typing import cast

import hpack

from edge.base.ledger import ITEM_OVERHEAD, Account, Charged

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

S_HEADER_TABLE_SIZE = 0x1
S_ENABLE_PUSH = 0x2
S_MAX_CONCURRENT_STREAMS = 0x3
S_INITIAL_WINDOW_SIZE = 0x4
S_MAX_FRAME_SIZE = 0x5
S_MAX_HEADER_LIST_SIZE = 0x6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
MIN_FRAME = 16384  # every peer accepts frames this large (SETTINGS_MAX_FRAME_SIZE default)


class ErrorCode(IntEnum):
    """RFC 9113 section 7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2Error(Exception):
    """A connection error (GOAWAY with `code`), RFC 9113 section 5.4.1."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- frames ---------------------------------------------------------------------------------

HEAD = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, R + stream id
U32 = struct.Struct(">L")
SETTING = struct.Struct(">HL")
GOAWAY_BODY = struct.Struct(">LL")


def frame(kind: int, flags: int, sid: int, payload: bytes | memoryview = b"") -> bytes:
    n = len(payload)
    return HEAD.pack(n >> 8, n & 0xFF, kind, flags, sid) + payload


def parse_head(buf: bytes | bytearray, at: int) -> tuple[int, int, int, int]:
    """Length, type, flags and stream id of the frame header at `at` (9 bytes there)."""
    hi, lo, kind, flags, sid = HEAD.unpack_from(buf, at)
    return (hi << 8) | lo, kind, flags, sid & 0x7FFFFFFF


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(SETTING.pack(k, v) for k, v in values.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS frame; the caller checked the length."""
    return [SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def ping_ack(opaque: bytes) -> bytes:
    return frame(PING, ACK, 0, opaque)


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, GOAWAY_BODY.pack(last_stream, code) + debug)


def rst_stream(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, U32.pack(code))


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, U32.pack(increment))


def headers(sid: int, block: bytes, end_stream: bool, max_frame: int = MIN_FRAME) -> bytes:
    """HEADERS, then CONTINUATION frames if the block is larger than a frame."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, sid, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, sid, parts[0])]
    for part in parts[1:-1]:
        out.append(frame(CONTINUATION, 0, sid, part))
    out.append(frame(CONTINUATION, END_HEADERS, sid, parts[-1]))
    return b"".join(out)


def strip_padding(flags: int, payload: bytes) -> bytes:
    """The payload of a DATA or HEADERS frame without its padding (RFC 9113 section 6.1)."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise H2Error(ErrorCode.PROTOCOL_ERROR, "padding as long as the frame")
    return payload[1 : len(payload) - payload[0]]


# -- HPACK for responses (RFC 7541), stateless ------------------------------------------------

STATIC_NAMES = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
]
# The first static-table index of each name (RFC 7541 appendix A).
STATIC_INDEX: dict[bytes, int] = {}
for _i, _name in enumerate(STATIC_NAMES, 1):
    STATIC_INDEX.setdefault(_name.encode(), _i)
STATUS_INDEXED = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}
TABLE_SIZE_ZERO = b"\x20"  # a dynamic table size update to 0 (we never use the table)


def hpack_int(value: int, prefix: int, first: int = 0) -> bytes:
    """RFC 7541 section 5.1."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes((first | value,))
    out = [first | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def name_prefix(name: bytes) -> bytes:
    """The start of a literal field without indexing (RFC 7541 section 6.2.2): the name's
    static-table index, or a literal name; the value's length and bytes follow."""
    index = STATIC_INDEX.get(name)
    if index is not None:
        return bytes((index,)) if index < 15 else hpack_int(index, 4)
    m = len(name)
    return b"\x00" + (bytes((m,)) if m < 127 else hpack_int(m, 7)) + name


def encode_value(prefix: bytes, value: bytes) -> bytes:
    n = len(value)
    return prefix + (bytes((n,)) if n < 127 else hpack_int(n, 7)) + value


def encode_field(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing, no Huffman."""
    return encode_value(name_prefix(name), value)


def encode_status(status: int) -> bytes:
    index = STATUS_INDEXED.get(status)
    if index is not None:
        return bytes((0x80 | index,))
    return b"\x08\x03" + b"%03d" % status


def encode_fields(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join([encode_field(k, v) for k, v in fields])


# -- requests -------------------------------------------------------------------------------

Fields = list[tuple[bytes, bytes]]

# Bytes 0x81..0xfe: each one alone is an indexed field (RFC 7541 section 6.1) under 127.
_INDEXED = bytes(range(0x81, 0xFF))
CACHED_BLOCKS = 64
# A larger block is decoded each time, never kept: a repeated request's block is a few
# indexed fields and a path (tens of bytes); 64 distinct neutral blocks of 56 KB (literal
# fields within every limit) kept per connection made 40 connections hold +344 MiB.
CACHED_BLOCK_BYTES = 4096


def _int_at(block: bytes, i: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer at `i` (RFC 7541 section 5.1): its value and the offset after it."""
    top = (1 << prefix) - 1
    value = block[i] & top
    i += 1
    if value < top:
        return value, i
    shift = 0
    while True:
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def table_neutral(block: bytes) -> bool:
    """True when decoding `block` leaves the dynamic table as it was: only indexed fields
    and literals without (or never) indexing, no table size update. False for anything
    else, a truncated block included (the decoder then says what is wrong)."""
    if not block.translate(None, _INDEXED):
        return True
    i, n = 0, len(block)
    try:
        while i < n:
            b = block[i]
            if b & 0x80:
                _, i = _int_at(block, i, 7)
                continue
            if b & 0xE0:  # 01xxxxxx adds to the table, 001xxxxx resizes it
                return False
            index, i = _int_at(block, i, 4)
            if not index:
                length, i = _int_at(block, i, 7)
                i += length
            length, i = _int_at(block, i, 7)
            i += length
    except IndexError:
        return False
    return i == n


class Decoded:
    """A request header block decoded and checked; `parsed` is the caller's memo of what
    it built from it (the same block means the same request while it is cached)."""

    __slots__ = ("fields", "parsed", "problem")

    def __init__(self, fields: Fields, problem: str | None) -> None:
        self.fields = fields
        self.problem = problem
        self.parsed: object = None


class RequestDecoder:
    """Request header blocks to fields (the `hpack` package's decoder, bounded by
    SETTINGS_MAX_HEADER_LIST_SIZE). A block that leaves the dynamic table as it was
    (`table_neutral`) means the same fields each time while the table does not change:
    such blocks (what h2load and browsers send for a repeated request) are decoded and
    checked once; a block that changes the table empties the cache. What is kept is charged
    to `account` (the ledger's `heads`, with every connection's): a block it refuses, or one
    over `CACHED_BLOCK_BYTES`, is not kept; the charge is given back when the cache empties
    or the connection's decoder is dropped (`ledger.Charged`)."""

    __slots__ = ("cache", "decoder")

    def __init__(self, max_header_list_size: int, account: Account | None = None) -> None:
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self.cache: dict[bytes, Decoded] = (
            {} if account is None else Charged(account, _decoded_size)
        )

    def request(self, block: bytes) -> Decoded:
        """A request's header block, decoded and checked (`check_request`)."""
        cached = self.cache.get(block)
        if cached is not None:
            return cached
        neutral = table_neutral(block)
        fields = self.decode(block, neutral)
        decoded = Decoded(fields, check_request(fields))
        if neutral and len(block) <= CACHED_BLOCK_BYTES:
            if len(self.cache) >= CACHED_BLOCKS:
                self.cache.clear()
            self.cache[block] = decoded
        return decoded

    def decode(self, block: bytes, neutral: bool = False) -> Fields:
        """Raises H2Error (COMPRESSION_ERROR, or ENHANCE_YOUR_CALM over the list size)."""
        try:
            fields = self.decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as exc:
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, f"header list too large: {exc}") from exc
        except hpack.HPACKError as exc:
            raise H2Error(ErrorCode.COMPRESSION_ERROR, f"HPACK: {exc}") from exc
        if not neutral and self.cache:
            self.cache.clear()  # the dynamic table may have changed
        return cast(Fields, fields)  # (name, value) tuples of bytes, as raw=True gives


def _decoded_size(block: bytes, decoded: Decoded) -> int:
    """What a kept block costs: its bytes, its fields twice (decoded, and the request the
    connection makes of them, `Decoded.parsed`), an item's overhead for each."""
    fields = sum(len(name) + len(value) for name, value in decoded.fields)
    return len(block) + 2 * fields + ITEM_OVERHEAD * (1 + len(decoded.fields))


# RFC 9113 section 8.2.1: no upper case, controls, space, high bytes; no colon but a leading one.
_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+").fullmatch
# No NUL, CR or LF; no leading or trailing SP or HTAB.
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z").search
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})


def check_request(fields: Fields, trailers: bool = False) -> str | None:
    """Why a request (or trailer) block is malformed (RFC 9113 section 8.1.1, 8.2, 8.3.1),
    or None."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    host: bytes | None = None
    for name, value in fields:
        if name[:1] == b":":
            if regular or trailers:
                return f"pseudo-header field {name!r} out of place"
            if name not in REQUEST_PSEUDO:
                return f"pseudo-header field {name!r} not allowed"
            if name in pseudo:
                return f"pseudo-header field {name!r} repeated"
            pseudo[name] = value
        else:
            regular = True
            if not _NAME(name):
                return f"invalid field name {name!r}"
            if name in CONNECTION_SPECIFIC:
                return f"connection-specific field {name!r}"
            if name == b"te" and value.lower() != b"trailers":
                return "te other than trailers"
            if name == b"host":
                if host is not None:
                    return "more than one host field"
                host = value
        if value and _BAD_VALUE(value):
            return f"invalid value in {name!r}"
    if trailers:
        return None
    method = pseudo.get(b":method")
    if method is None:
        return "no :method"
    if method == b"CONNECT":
        if b":scheme" in pseudo or b":path" in pseudo:
            return "CONNECT with :scheme or :path"
    elif b":scheme" not in pseudo or not pseudo.get(b":path"):
        return "no :scheme or :path"
    authority = pseudo.get(b":authority")
    if authority is None and host is None:
        return "no :authority or host"
    if authority is not None and host is not None and authority != host:
        return ":authority and host differ"
    return None
