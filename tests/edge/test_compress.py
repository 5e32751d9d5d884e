"""Compression at the edge: the pure rules (edge/engine/compress.py), then through a running
edge."""

from __future__ import annotations

import asyncio
import gzip
import time

import aiohttp
import brotli
import zstandard
from aiohttp import web

from edge.cache.entry import Entry
from edge.config.settings import Compression
from edge.engine import compress
from edge.http.validators import variant_etag
from tests.edge.conftest import STANDARD_YAML, EdgeFactory, node_of, url

TEXT = b"<html><body>" + b"wooden toys, served slowly on purpose. " * 200 + b"</body></html>"
SETTINGS = Compression()


# -- negotiation ----------------------------------------------------------------------------


def test_negotiate_prefers_weight_then_the_edge_order() -> None:
    offered = ("br", "zstd", "gzip")
    assert compress.negotiate("gzip, deflate, br, zstd", offered) == "br"
    assert compress.negotiate("gzip;q=1, br;q=0.5", offered) == "gzip"
    assert compress.negotiate("x-gzip", offered) == "gzip"
    assert compress.negotiate("br;q=0, gzip;q=0", offered) is None
    assert compress.negotiate("identity", offered) is None
    assert compress.negotiate("", offered) is None
    assert compress.negotiate(None, offered) is None
    assert compress.negotiate("*", offered) == "br"
    assert compress.negotiate("*;q=0.5, br;q=0", offered) == "zstd"
    assert compress.negotiate("deflate", offered) is None
    assert compress.negotiate("gzip", ("br", "zstd")) is None


def test_eligible_only_text_like_identity_answers_above_the_minimum() -> None:
    html = [("Content-Type", "text/html; charset=utf-8")]
    assert compress.eligible(200, html, 5000, SETTINGS)
    assert compress.eligible(200, html, None, SETTINGS)  # length unknown: streamed
    assert not compress.eligible(200, html, 100, SETTINGS)  # under min_size
    assert not compress.eligible(206, html, 5000, SETTINGS)
    assert not compress.eligible(200, [("Content-Type", "image/jpeg")], 5000, SETTINGS)
    assert not compress.eligible(200, [("Content-Type", "video/mp4")], 5000, SETTINGS)
    assert not compress.eligible(200, [*html, ("Content-Encoding", "gzip")], 5000, SETTINGS)
    assert compress.eligible(200, [*html, ("Content-Encoding", "identity")], 5000, SETTINGS)
    assert not compress.eligible(
        200, [*html, ("Cache-Control", "public, no-transform")], 5000, SETTINGS
    )
    assert not compress.eligible(200, [], 5000, SETTINGS)  # no type: leave it
    assert compress.eligible(200, [("Content-Type", "image/svg+xml")], 5000, SETTINGS)
    off = Compression(enabled=False)
    assert not compress.eligible(200, html, 5000, off)


def test_coded_etags_are_suffixed_and_keep_their_strength() -> None:
    assert variant_etag('"abc-12"', "br") == '"abc-12-br"'
    assert variant_etag('W/"abc"', "gzip") == 'W/"abc-gzip"'


def test_vary_is_added_once() -> None:
    assert compress.with_vary([("A", "1")]) == [("A", "1"), ("Vary", "Accept-Encoding")]
    assert compress.with_vary([("Vary", "accept-encoding")]) == [("Vary", "accept-encoding")]
    assert compress.with_vary([("Vary", "Cookie")]) == [
        ("Vary", "Cookie"),
        ("Vary", "Accept-Encoding"),
    ]
    assert compress.with_vary([("Vary", "*")]) == [("Vary", "*")]


def _identity(now: float, lifetime: float = 60.0) -> Entry:
    return Entry(
        key="/page",
        status=200,
        headers=(
            ("Content-Type", "text/html"),
            ("ETag", '"v1"'),
            ("Content-Length", str(len(TEXT))),
        ),
        body=TEXT,
        request_time=now,
        response_time=now,
        meta={"lifetime": lifetime, "age0": 0.0, "keep": 3600.0},
    )


def test_every_coding_round_trips_and_is_smaller() -> None:
    identity = compress.identity_with_vary(_identity(time.time()))
    variants = compress.encode_all(identity, SETTINGS)
    assert [compress.coding_of(v) for v in variants] == ["br", "zstd", "gzip"]
    decode = {
        "br": brotli.decompress,
        "zstd": zstandard.ZstdDecompressor().decompress,
        "gzip": gzip.decompress,
    }
    for v in variants:
        coding = compress.coding_of(v)
        assert coding is not None
        assert decode[coding](v.body) == TEXT and len(v.body) < len(TEXT)
        assert v.header("Content-Encoding") == coding
        assert v.header("ETag") == f'"v1-{coding}"'
        assert v.header("Content-Length") is None
        assert v.header("Vary") == "Accept-Encoding"
        assert v.meta["of"] == identity.response_time
        assert v.variant_id != identity.variant_id


def test_select_picks_the_fresh_identitys_own_coded_copy() -> None:
    now = time.time()
    identity = _identity(now)
    variants = compress.encode_all(identity, SETTINGS)
    entries = [identity, *variants]
    pick = compress.select(identity, entries, "gzip, br", now)
    assert pick is not None and compress.coding_of(pick) == "br"
    pick = compress.select(identity, entries, "gzip", now)
    assert pick is not None and compress.coding_of(pick) == "gzip"
    assert compress.select(identity, entries, "identity", now) is identity
    # A copy of an older identity is never served.
    newer = _identity(now + 1)
    assert compress.select(newer, [newer, *variants], "br", now + 1) is newer
    # A stale identity is revalidated with its own validators: no coded copy then.
    stale = _identity(now - 120, lifetime=60)
    old = compress.encode_all(stale, SETTINGS)
    assert compress.select(stale, [stale, *old], "br", now) is stale


def test_stream_encoder_output_decodes_to_the_input() -> None:
    pieces = [TEXT[i : i + 1000] for i in range(0, len(TEXT), 1000)]
    decode = {
        "br": brotli.decompress,
        "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
        "gzip": gzip.decompress,
    }
    for coding in ("br", "zstd", "gzip"):
        enc = compress.StreamEncoder(coding, SETTINGS.level(coding, False))
        out = b"".join(enc.feed(p) for p in pieces) + enc.finish()
        assert decode[coding](out) == TEXT, coding


# -- through the edge -------------------------------------------------------------------------


async def test_edge_compresses_once_and_hits_serve_stored_variants(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set(
        "/page", body=TEXT, Content_Type="text/html", Cache_Control="max-age=60", ETag='"v1"'
    )
    script.set("/tiny", body=b"small", Content_Type="text/html", Cache_Control="max-age=60")
    script.set("/img", body=TEXT, Content_Type="image/jpeg", Cache_Control="max-age=60")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    ae = {"Accept-Encoding": "gzip, deflate, br, zstd"}
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(url(edge, "/page"), headers=ae) as r:
            miss_headers, miss_body = r.headers, await r.read()
        # The miss was compressed as it streamed (a fast level), the body decodes.
        assert miss_headers["X-Cache"] == "MISS" and miss_headers["Content-Encoding"] == "br"
        assert brotli.decompress(miss_body) == TEXT
        assert miss_headers["ETag"] == '"v1-br"' and miss_headers["Vary"] == "Accept-Encoding"
        await node_of(edge).encoder.drain()
        assert node_of(edge).encoder.made == 0  # stored: nothing compressed yet
        # The first hit that accepts a coding gets identity and asks for the coded copies.
        async with s.get(url(edge, "/page"), headers=ae) as r:
            assert r.headers["X-Cache"] == "HIT" and "Content-Encoding" not in r.headers
            assert await r.read() == TEXT
        await node_of(edge).encoder.drain()
        made = node_of(edge).encoder.made
        assert made == 3
        for coding in ("br", "zstd", "gzip"):
            async with s.get(url(edge, "/page"), headers={"Accept-Encoding": coding}) as r:
                assert r.headers["X-Cache"] == "HIT", coding
                assert r.headers["Content-Encoding"] == coding
                assert r.headers["ETag"] == f'"v1-{coding}"'
                assert int(r.headers["Content-Length"]) == len(await r.read()) < len(TEXT)
        # Each coded copy's hit is kept for its Accept-Encoding's class (edge.engine.fresh_hits),
        # and answers the same the next time.
        kept = node_of(edge).kept_hits.kept
        assert {k for k in kept if isinstance(k, tuple)} == {
            ("/page", compress.accept_class(c).encode()) for c in ("br", "zstd", "gzip")
        }
        for coding in ("br", "zstd", "gzip"):
            async with s.get(url(edge, "/page"), headers={"Accept-Encoding": coding}) as r:
                assert r.headers["Content-Encoding"] == coding
        # Identity for a client without Accept-Encoding, with Vary so no cache mixes them.
        async with s.get(url(edge, "/page"), skip_auto_headers=["Accept-Encoding"]) as r:
            assert "Content-Encoding" not in r.headers and await r.read() == TEXT
            assert r.headers["Vary"] == "Accept-Encoding" and r.headers["ETag"] == '"v1"'
        # That plain hit is remembered for plain requests only (the engine's fast path).
        async with s.get(url(edge, "/page"), skip_auto_headers=["Accept-Encoding"]) as r:
            assert "Content-Encoding" not in r.headers and await r.read() == TEXT
        assert kept[("/page", None)].entry.header("Content-Encoding") is None
        async with s.get(url(edge, "/page"), headers={"Accept-Encoding": "br"}) as r:
            assert r.headers["Content-Encoding"] == "br"
            assert brotli.decompress(await r.read()) == TEXT
        # Conditionals: each variant's own ETag.
        async with s.get(
            url(edge, "/page"), headers={"Accept-Encoding": "br", "If-None-Match": '"v1-br"'}
        ) as r:
            assert r.status == 304 and r.headers["ETag"] == '"v1-br"'
        async with s.get(
            url(edge, "/page"), headers={"Accept-Encoding": "br", "If-None-Match": '"v1"'}
        ) as r:
            assert r.status == 200 and r.headers["Content-Encoding"] == "br"
        # Range: from identity (documented in edge/engine/compress.py).
        async with s.get(
            url(edge, "/page"), headers={"Accept-Encoding": "br", "Range": "bytes=0-11"}
        ) as r:
            assert r.status == 206 and await r.read() == TEXT[:12]
            assert "Content-Encoding" not in r.headers
        # Never: under min_size, images.
        for path in ("/tiny", "/img"):
            for _ in range(2):
                async with s.get(url(edge, path), headers=ae) as r:
                    assert "Content-Encoding" not in r.headers, path
                    await r.read()
        await node_of(edge).encoder.drain()
        assert node_of(edge).encoder.made == made  # nothing more was compressed
    assert script.hits["/page"] == 1


async def test_answers_that_are_not_stored_are_stream_compressed(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted

    async def feed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(5):
            await resp.write(b'{"toy": "yoyo", "price": 12},' * 40)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    script.handlers["/api/feed"] = feed
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        for _ in range(2):
            async with s.get(url(edge, "/api/feed"), headers={"Accept-Encoding": "zstd"}) as r:
                body = await r.read()
                assert r.headers["Content-Encoding"] == "zstd"
                assert r.headers["X-Cache"] != "HIT"
                plain = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                assert plain == b'{"toy": "yoyo", "price": 12},' * 200
        async with s.post(url(edge, "/api/feed"), headers={"Accept-Encoding": "gzip"}) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await r.read()) == b'{"toy": "yoyo", "price": 12},' * 200
    assert script.hits["/api/feed"] == 3
    assert node_of(edge).encoder.made == 0


async def test_no_transform_and_origin_encodings_pass_as_they_are(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set("/nt", body=TEXT, Content_Type="text/html", Cache_Control="max-age=60, no-transform")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        for _ in range(2):
            async with s.get(url(edge, "/nt"), headers={"Accept-Encoding": "br"}) as r:
                assert "Content-Encoding" not in r.headers and await r.read() == TEXT
