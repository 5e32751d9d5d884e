"""edge/protocol/h2_frames.py on its own: frames, stateless response HPACK (read back by the `hpack`
package's decoder and by h2 as a client), request blocks decoded, cached and checked."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hyperframe.frame import Frame

from edge.protocol import h2_frames as wire
from edge.protocol.h2_frames import ErrorCode, H2Error


def parse(data: bytes) -> list[Frame]:
    out = []
    while data:
        f, length = Frame.parse_frame_header(memoryview(data[:9]))
        f.parse_body(memoryview(data[9 : 9 + length]))
        out.append(f)
        data = data[9 + length :]
    return out


def test_frame_head_round_trip() -> None:
    data = wire.frame(wire.DATA, wire.END_STREAM, 7, b"hello")
    assert wire.parse_head(data, 0) == (5, wire.DATA, wire.END_STREAM, 7)
    (f,) = parse(data)
    assert f.data == b"hello" and "END_STREAM" in f.flags and f.stream_id == 7
    (g,) = parse(wire.goaway(9, ErrorCode.ENHANCE_YOUR_CALM, b"calm"))
    assert (g.last_stream_id, g.error_code, g.additional_data) == (9, 11, b"calm")
    (r,) = parse(wire.rst_stream(3, ErrorCode.REFUSED_STREAM))
    assert r.error_code == 7
    (w,) = parse(wire.window_update(0, 1 << 20))
    assert w.window_increment == 1 << 20
    (s,) = parse(wire.settings_frame({wire.S_MAX_CONCURRENT_STREAMS: 16}))
    assert s.settings == {wire.S_MAX_CONCURRENT_STREAMS: 16}
    assert wire.parse_settings(s.serialize_body()) == [(wire.S_MAX_CONCURRENT_STREAMS, 16)]


def test_a_large_block_is_split_into_continuations() -> None:
    block = b"x" * 40000
    frames = parse(wire.headers(1, block, end_stream=True))
    assert [type(f).__name__ for f in frames] == [
        "HeadersFrame",
        "ContinuationFrame",
        "ContinuationFrame",
    ]
    assert b"".join(f.data for f in frames) == block
    assert "END_STREAM" in frames[0].flags and "END_HEADERS" in frames[-1].flags
    assert all(len(f.data) <= wire.MIN_FRAME for f in frames)


@pytest.mark.parametrize("value", [0, 14, 15, 127, 128, 300, 70000])
def test_hpack_integers(value: int) -> None:
    # A literal whose value length is `value`: the decoder reads the integer back.
    field = wire.encode_field(b"x-n", b"v" * value)
    assert hpack.Decoder(max_header_list_size=1 << 20).decode(field, raw=True) == [
        (b"x-n", b"v" * value)
    ]


def test_response_blocks_decode_and_leave_no_table_state() -> None:
    fields = [
        (b"content-type", b"text/html"),  # a static-table name
        (b"www-authenticate", b"Basic"),  # index 61: a multi-byte index
        (b"x-cache", b"HIT"),  # a new name
        (b"via", b"2 edge-1 (woodytoys-edge)"),
    ]
    for status in (200, 304, 404, 103, 418):
        block = wire.encode_status(status) + wire.encode_fields(fields)
        decoder = hpack.Decoder()
        assert decoder.decode(block, raw=True) == [(b":status", b"%d" % status), *fields]
        # Nothing was indexed: the same bytes mean the same fields to any decoder state.
        assert decoder.decode(block, raw=True) == [(b":status", b"%d" % status), *fields]
        assert decoder.header_table_size == 4096


def test_the_static_table_is_rfc_7541s() -> None:
    names = [
        next(iter(hpack.Decoder().decode(bytes([0x80 | i]), raw=True)))[0] for i in range(1, 62)
    ]
    assert names == [n.encode() for n in wire.STATIC_NAMES]


def test_h2_reads_our_answers() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1, [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")], True
    )
    client.receive_data(wire.settings_frame({}))
    block = wire.TABLE_SIZE_ZERO + wire.encode_status(200) + wire.encode_fields([(b"age", b"3")])
    events = client.receive_data(
        wire.headers(1, block, False) + wire.frame(wire.DATA, wire.END_STREAM, 1, b"body")
    )
    kinds = {type(e) for e in events}
    assert h2.events.ResponseReceived in kinds and h2.events.StreamEnded in kinds
    got = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert (b"age", b"3") in got.headers


def request_block(encoder: hpack.Encoder, path: bytes) -> bytes:
    return encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h"), (b":path", path)]
    )


def test_blocks_that_leave_the_table_alone_are_decoded_once() -> None:
    encoder = hpack.Encoder()
    decoder = wire.RequestDecoder(65536)
    first = request_block(encoder, b"/a")  # literals with indexing: both tables change
    assert not wire.table_neutral(first)
    assert decoder.request(first).fields[3] == (b":path", b"/a")
    again = request_block(encoder, b"/a")  # indexed only
    assert wire.table_neutral(again)
    decoded = decoder.request(again)
    assert decoder.request(again) is decoded  # cached, with its check
    assert decoded.problem is None
    other = request_block(encoder, b"/b")  # a literal with indexing: the cache goes
    assert decoder.request(other).fields[3] == (b":path", b"/b")
    assert not decoder.cache
    assert decoder.request(request_block(encoder, b"/a")).fields[3] == (b":path", b"/a")
    # What nghttp2 sends for a repeated request: indexed fields and :path as a literal
    # without indexing: cached too.
    no_index = b"\x82\x87\xbe" + wire.encode_field(b":path", b"/c")
    assert wire.table_neutral(no_index)
    decoded = decoder.request(no_index)
    assert decoder.request(no_index) is decoded and decoded.fields[3] == (b":path", b"/c")
    # Truncated or resizing blocks are not neutral.
    assert not wire.table_neutral(no_index[:-1])
    assert not wire.table_neutral(b"\x3f\xe1\x1f\x82")
    bad = decoder.request(b"\x82\x87\xbe")  # no :path: malformed, the check says why
    assert bad.problem is not None


def test_decoder_errors_are_connection_errors() -> None:
    with pytest.raises(H2Error) as info:
        wire.RequestDecoder(100).decode(wire.encode_field(b"x-big", b"v" * 200))
    assert info.value.code == ErrorCode.ENHANCE_YOUR_CALM
    with pytest.raises(H2Error) as info:
        wire.RequestDecoder(100).decode(b"\xff\xff\xff\xff")
    assert info.value.code == ErrorCode.COMPRESSION_ERROR


BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h"), (b":path", b"/")]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (BASE, None),
        ([*BASE, (b"host", b"h"), (b"te", b"trailers")], None),
        ([*BASE, (b"X-Up", b"1")], "invalid field name"),
        ([*BASE, (b"a:b", b"1")], "invalid field name"),
        ([*BASE, (b"x", b"a\r\nb")], "invalid value"),
        ([*BASE, (b"x", b" padded")], "invalid value"),
        ([*BASE, (b"connection", b"close")], "connection-specific"),
        ([*BASE, (b"te", b"gzip")], "te other than trailers"),
        ([*BASE, (b"host", b"other")], ":authority and host differ"),
        ([*BASE, (b"host", b"h"), (b"host", b"h")], "more than one host"),
        ([*BASE, (b":path", b"/x")], "repeated"),
        ([*BASE[:3], (b":path", b"/"), (b":path", b"/")], "repeated"),
        ([*BASE, (b"x", b"1"), (b":status", b"200")], "out of place"),
        ([(b":status", b"200"), *BASE], "not allowed"),
        (BASE[1:], "no :method"),
        (BASE[:3], "no :scheme or :path"),
        ([*BASE[:3], (b":path", b"")], "no :scheme or :path"),
        (BASE[:2] + BASE[3:], "no :authority or host"),
        ([(b":method", b"CONNECT"), (b":authority", b"h:443")], None),
        ([(b":method", b"CONNECT"), (b":authority", b"h"), (b":path", b"/")], "CONNECT"),
    ],
)
def test_request_checks(fields: wire.Fields, problem: str | None) -> None:
    got = wire.check_request(fields)
    assert (got is None) if problem is None else (got is not None and problem in got)


def test_trailers_carry_no_pseudo_header_fields() -> None:
    assert wire.check_request([(b"x-sum", b"1")], trailers=True) is None
    assert wire.check_request([(b":path", b"/")], trailers=True) is not None


def test_padding() -> None:
    assert wire.strip_padding(wire.PADDED, b"\x02abc\x00\x00") == b"abc"
    assert wire.strip_padding(0, b"abc") == b"abc"
    with pytest.raises(H2Error):
        wire.strip_padding(wire.PADDED, b"\x05ab")
