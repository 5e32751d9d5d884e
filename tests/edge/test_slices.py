"""Large objects in slices: the pure layout (edge/cache/slicing.py), then through a running edge."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from edge.cache import slicing as slices
from edge.config.settings import SlicePolicy
from tests.edge.conftest import STANDARD_YAML, TOKEN, EdgeFactory, node_of, origin_hits, url

IMAGE = Path(__file__).resolve().parents[2] / "origin" / "static" / "5mo.jpg"
SLICE = 128 * 1024


# -- pure ---------------------------------------------------------------------------------------


def test_bounds_and_covering() -> None:
    assert slices.count(5_000_614, SLICE) == 39
    assert slices.bounds(0, SLICE, 5_000_614) == (0, SLICE - 1)
    assert slices.bounds(38, SLICE, 5_000_614) == (38 * SLICE, 5_000_613)
    assert list(slices.covering(2_500_000, 2_500_999, SLICE)) == [19]
    assert list(slices.covering(SLICE - 1, SLICE, SLICE)) == [0, 1]
    assert slices.count(0, SLICE) == 1


def test_content_range_and_validators() -> None:
    assert slices.parse_content_range("bytes 0-99/5000") == (0, 99, 5000)
    assert slices.parse_content_range("bytes */5000") is None
    assert slices.parse_content_range("bytes 10-5/5000") is None
    assert slices.parse_content_range("bytes 0-5000/5000") is None
    assert slices.parse_content_range(None) is None
    assert slices.validator(CIMultiDict({"ETag": '"a"'})) == 'etag:"a"'
    assert slices.validator(CIMultiDict({"ETag": 'W/"a"'})) is None  # weak: cannot combine
    lm = "Tue, 01 Dec 2026 10:00:00 GMT"
    assert slices.validator(CIMultiDict({"ETag": 'W/"a"', "Last-Modified": lm})) == "lm:" + lm
    shape = slices.Shape(300, 'etag:"a"')
    ok = CIMultiDict({"ETag": '"a"', "Content-Range": "bytes 100-199/300"})
    assert shape.agrees(ok, 1, 100)
    assert not shape.agrees(
        CIMultiDict({"ETag": '"b"', "Content-Range": "bytes 100-199/300"}), 1, 100
    )
    assert not shape.agrees(
        CIMultiDict({"ETag": '"a"', "Content-Range": "bytes 100-199/301"}), 1, 100
    )
    assert not shape.agrees(ok, 2, 100)
    assert slices.whole_fields(
        CIMultiDict({"Content-Range": "x", "Content-Length": "1", "A": "b"})
    ) == (("A", "b"),)
    assert slices.purged_with("/5mo.jpg") == ("/5mo.jpg", "/5mo.jpg#slices")


# -- a ranged origin the tests control ---------------------------------------------------------


class Ranged:
    """Serves `body` with single byte ranges, strong ETag `"v<version>"`, max-age 60."""

    def __init__(self, body: bytes, ignore_range: bool = False) -> None:
        self.body = body
        self.version = 1
        self.ignore_range = ignore_range
        self.ranges: list[str | None] = []
        self.bump_after: int | None = None  # change the object after this many requests

    async def handle(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Range")
        self.ranges.append(header)
        if self.bump_after is not None and len(self.ranges) > self.bump_after:
            self.version = 2
        body = self.body if self.version == 1 else bytes(reversed(self.body))
        headers = {
            "ETag": f'"v{self.version}"',
            "Cache-Control": "max-age=60",
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        m = re.match(r"bytes=(\d+)-(\d+)$", header or "")
        if m is None or self.ignore_range:
            return web.Response(body=body, headers=headers)
        first, last = int(m.group(1)), min(int(m.group(2)), len(body) - 1)
        headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        await asyncio.sleep(0.01)
        return web.Response(status=206, body=body[first : last + 1], headers=headers)


BLOB = bytes(range(256)) * 4000  # 1,024,000 bytes: 16 slices of 64 KiB


def sliced_rule(size: int = 64 * 1024, parallel: int = 4) -> tuple[object, ...]:
    from edge.config.settings import Rule

    return (Rule(match="/blob", slice=SlicePolicy(size, parallel)),)


async def ranged_edge(aiohttp_server, make_edge: EdgeFactory, origin: Ranged, **kw: object):  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/blob", origin.handle)
    server = await aiohttp_server(app)
    kw.setdefault("rules", sliced_rule())
    return await make_edge(url(server, "/"), config=STANDARD_YAML, **kw)


async def test_a_cold_full_request_is_filled_in_parallel_slices(
    aiohttp_server, make_edge: EdgeFactory
) -> None:
    origin = Ranged(BLOB)
    edge = await ranged_edge(aiohttp_server, make_edge, origin)
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/blob")) as r:
            assert r.status == 200 and r.headers["X-Cache"] == "MISS"
            assert int(r.headers["Content-Length"]) == len(BLOB)
            assert await r.read() == BLOB
        assert len(origin.ranges) == 16
        assert all(h is not None and h.startswith("bytes=") for h in origin.ranges)
        async with s.get(url(edge, "/blob")) as r:
            assert r.headers["X-Cache"] == "HIT" and await r.read() == BLOB
            assert r.headers["ETag"] == '"v1"'
            assert r.headers.getall("Accept-Ranges") == ["bytes"]  # the origin's, not twice
        async with s.get(url(edge, "/blob"), headers={"Range": "bytes=70000-70009"}) as r:
            assert r.status == 206 and await r.read() == BLOB[70000:70010]
            assert r.headers["Content-Range"] == f"bytes 70000-70009/{len(BLOB)}"
        async with s.get(url(edge, "/blob"), headers={"If-None-Match": '"v1"'}) as r:
            assert r.status == 304
        async with s.head(url(edge, "/blob")) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(BLOB)
        async with s.get(url(edge, "/blob"), headers={"Range": f"bytes={len(BLOB)}-"}) as r:
            assert r.status == 416
    assert len(origin.ranges) == 16  # everything after the fill came from the slices
    slicer = node_of(edge).slicer
    # At most `parallel` slices in flight (and the one being sent): never the object.
    assert 0 < slicer.peak_buffered <= 5 * 64 * 1024


async def test_a_cold_range_fetches_only_its_slices(aiohttp_server, make_edge: EdgeFactory) -> None:
    origin = Ranged(BLOB)
    edge = await ranged_edge(aiohttp_server, make_edge, origin)
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/blob"), headers={"Range": "bytes=500000-500999"}) as r:
            assert r.status == 206 and await r.read() == BLOB[500000:501000]
        assert origin.ranges == [f"bytes={7 * 65536}-{8 * 65536 - 1}"]
        async with s.get(url(edge, "/blob"), headers={"Range": "bytes=500000-600000"}) as r:
            assert await r.read() == BLOB[500000:600001]
        assert len(origin.ranges) == 3  # slice 7 was stored; slices 8 and 9 fetched
        async with s.get(url(edge, "/blob")) as r:
            assert await r.read() == BLOB
        assert len(origin.ranges) == 16


async def test_a_purge_of_the_url_purges_its_slices(aiohttp_server, make_edge: EdgeFactory) -> None:
    origin = Ranged(BLOB)
    edge = await ranged_edge(aiohttp_server, make_edge, origin)
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/blob")) as r:
            await r.read()
        async with s.post(
            url(edge, "/_edge/purge"),
            json={"urls": ["/blob"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
        async with s.get(url(edge, "/blob")) as r:
            assert r.headers["X-Cache"] == "MISS" and await r.read() == BLOB
    assert len(origin.ranges) == 32


async def test_an_origin_ignoring_range_gets_a_whole_fill(
    aiohttp_server, make_edge: EdgeFactory
) -> None:
    origin = Ranged(BLOB, ignore_range=True)
    edge = await ranged_edge(aiohttp_server, make_edge, origin)
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/blob")) as r:
            assert r.status == 200 and await r.read() == BLOB
        async with s.get(url(edge, "/blob")) as r:
            assert r.headers["X-Cache"] == "HIT" and await r.read() == BLOB
    assert origin.ranges[0] is not None and origin.ranges[1] is None  # then a plain GET
    assert len(origin.ranges) == 2


async def test_an_object_changed_during_the_fill_is_never_mixed(
    aiohttp_server, make_edge: EdgeFactory
) -> None:
    origin = Ranged(BLOB)
    origin.bump_after = 3  # slices after the third request come from version 2
    edge = await ranged_edge(aiohttp_server, make_edge, origin)
    v2 = bytes(reversed(BLOB))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(url(edge, "/blob")) as r:
                await r.read()  # cut off: it never gets a body made of two versions
        async with s.get(url(edge, "/blob")) as r:
            assert await r.read() == v2 and r.headers["ETag"] == '"v2"'
        async with s.get(url(edge, "/blob")) as r:
            assert r.headers["X-Cache"] == "HIT" and await r.read() == v2


async def test_large_objects_are_sliced_by_default_from_their_second_miss(
    aiohttp_server, make_edge: EdgeFactory
) -> None:
    origin = Ranged(BLOB)
    from edge.config.settings import Slicing

    slicing = Slicing(size=256 * 1024, parallel=4, above=512 * 1024)
    edge = await ranged_edge(aiohttp_server, make_edge, origin, rules=(), slicing=slicing)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(url(edge, "/blob")) as r:
                assert await r.read() == BLOB
    # One whole GET (too large to store whole), then 4 slices, then a hit.
    assert origin.ranges[0] is None and len(origin.ranges) == 5
    assert [h is not None for h in origin.ranges[1:]] == [True] * 4


async def test_the_shops_image_through_the_edge_config(origin, make_edge: EdgeFactory) -> None:
    """config/edge.yaml: *.jpg in 128 KB slices, 8 at a time."""
    edge = await make_edge(url(origin, "/"))
    data = IMAGE.read_bytes()
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/5mo.jpg"), headers={"Range": "bytes=2500000-2500999"}) as r:
            assert r.status == 206 and await r.read() == data[2_500_000:2_501_000]
        assert origin_hits(origin, "/5mo.jpg") == 1
        async with s.get(url(edge, "/5mo.jpg")) as r:
            assert await r.read() == data
    assert origin_hits(origin, "/5mo.jpg") == 39


@pytest.mark.redis
async def test_another_node_serves_the_slices_from_redis(
    origin, make_edge: EdgeFactory, redis_url, key_prefix
) -> None:
    a = await make_edge(
        url(origin, "/"), node="edge-a", redis_url=redis_url, redis_prefix=key_prefix
    )
    b = await make_edge(
        url(origin, "/"), node="edge-b", redis_url=redis_url, redis_prefix=key_prefix
    )
    data = IMAGE.read_bytes()
    async with aiohttp.ClientSession() as s:
        async with s.get(url(a, "/5mo.jpg")) as r:
            assert await r.read() == data
        await node_of(a).tiers.drain()
        async with s.get(url(b, "/5mo.jpg")) as r:
            assert r.headers["X-Cache"] == "HIT" and r.headers["X-Served-By"] == "edge-b"
            assert await r.read() == data
    assert origin_hits(origin, "/5mo.jpg") == 39  # edge-b fetched nothing


async def test_a_sliced_object_is_kept_whole_once_its_slices_are_all_here(
    aiohttp_server, make_edge: EdgeFactory
) -> None:
    """Slices are how the object is stored; its hits are the engine's like any whole
    object's (tests/edge/test_fast_paths.py compares them byte for byte)."""
    origin = Ranged(BLOB)
    edge = await ranged_edge(aiohttp_server, make_edge, origin)
    slicer = node_of(edge).slicer
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/blob"), headers={"Range": "bytes=500000-500999"}) as r:
            assert r.status == 206 and await r.read() == BLOB[500000:501000]
        assert slicer.assembled == 0  # one slice of 16 stored: served slice by slice
        async with s.get(url(edge, "/blob"), headers={"Range": "bytes=0-9"}) as r:
            assert "detail=sliced" in r.headers["Cache-Status"] and await r.read() == BLOB[:10]
        async with s.get(url(edge, "/blob")) as r:  # the rest fetched, then kept whole
            assert await r.read() == BLOB
        assert slicer.assembled == 1 and len(origin.ranges) == 16
        for _ in range(2):
            async with s.get(url(edge, "/blob"), headers={"Range": "bytes=70000-70009"}) as r:
                assert r.status == 206 and await r.read() == BLOB[70000:70010]
                assert r.headers["X-Cache"] == "HIT"
                assert "detail=sliced" not in r.headers["Cache-Status"]  # the whole copy's
        async with s.post(
            url(edge, "/_edge/purge"),
            json={"urls": ["/blob"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
        async with s.get(url(edge, "/blob")) as r:  # the whole copy went with the purge
            assert r.headers["X-Cache"] == "MISS" and await r.read() == BLOB
    assert len(origin.ranges) == 32
