"""The front as nginx serves it: validators, ranges, conditionals, HEAD, and the throttle."""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from origin.static_files import parse_range
from tests.origin.conftest import ClientFactory


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "static"
    directory.mkdir()
    (directory / "index.html").write_text("<title>Woody stuff</title>")
    (directory / "blob.bin").write_bytes(bytes(range(256)) * 240)  # 61,440 bytes
    os.utime(directory / "blob.bin", (1_700_000_000, 1_700_000_000))
    return directory


async def test_throttle_paces_the_body(origin_client: ClientFactory, static_dir: Path) -> None:
    client = await origin_client(static_dir=static_dir, static_rate=102_400)
    started = time.monotonic()
    resp = await client.get("/blob.bin")
    body = await resp.read()
    elapsed = time.monotonic() - started
    assert len(body) == 61_440
    assert 0.5 <= elapsed < 1.5, elapsed  # 61,440 B at 100 KB/s = 0.6 s

    client = await origin_client(static_dir=static_dir, static_rate=0)
    started = time.monotonic()
    assert len(await (await client.get("/blob.bin")).read()) == 61_440
    assert time.monotonic() - started < 0.3


async def test_throttle_is_per_response(origin_client: ClientFactory, static_dir: Path) -> None:
    """Two downloads at once each get the full rate (nginx limit_rate is per connection)."""
    client = await origin_client(static_dir=static_dir, static_rate=102_400)
    started = time.monotonic()
    bodies = await asyncio.gather(*(_read(client, "/blob.bin") for _ in range(2)))
    elapsed = time.monotonic() - started
    assert [len(b) for b in bodies] == [61_440, 61_440]
    assert 0.5 <= elapsed < 1.0, elapsed  # 0.6 s each, side by side (not 1.2 s)


async def _read(client: TestClient, path: str) -> bytes:
    resp = await client.get(path)
    return bytes(await resp.read())


async def test_validators_like_nginx(origin_client: ClientFactory, static_dir: Path) -> None:
    client = await origin_client(static_dir=static_dir)
    resp = await client.get("/blob.bin")
    await resp.read()
    assert resp.status == 200
    assert resp.headers["ETag"] == f'"{1_700_000_000:x}-{61_440:x}"'
    assert resp.headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Length"] == "61440"
    assert "Cache-Control" not in resp.headers  # the lab's origin sends none
    assert "Expires" not in resp.headers

    resp = await client.get("/")
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Woody stuff" in await resp.text()


async def test_real_front_files(origin_client: ClientFactory) -> None:
    client = await origin_client()
    expected = {
        "/": "text/html",
        "/index.html": "text/html",
        "/htmx.min.js": "text/javascript",
        "/woody.css": "text/css",
        "/spinner.svg": "image/svg+xml",
        "/5mo.jpg": "image/jpeg",
    }
    for path, content_type in expected.items():
        resp = await client.head(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"].startswith(content_type), path
    resp = await client.get("/")
    page = await resp.text()
    assert "<title>Woody stuff</title>" in page
    for ident in ("btn-time", "btn-heavy", "btn-add-product", "btn-last", "btn-order"):
        assert f'id="{ident}"' in page
    assert "cdn" not in page.lower()  # works offline: nothing loaded from elsewhere
    css = await (await client.get("/woody.css")).text()
    assert 'url("5mo.jpg")' in css


async def test_head_has_no_body(origin_client: ClientFactory) -> None:
    client = await origin_client()
    resp = await client.head("/5mo.jpg")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "5000000"
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert await resp.read() == b""


async def test_range_requests(origin_client: ClientFactory, static_dir: Path) -> None:
    client = await origin_client(static_dir=static_dir)
    whole = bytes(range(256)) * 240
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=100-": (100, 61_439),
        "bytes=-16": (61_424, 61_439),
        "bytes=61430-99999": (61_430, 61_439),
    }
    for header, (start, end) in cases.items():
        resp = await client.get("/blob.bin", headers={"Range": header})
        assert resp.status == 206, header
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/61440"
        assert await resp.read() == whole[start : end + 1]

    resp = await client.get("/blob.bin", headers={"Range": "bytes=70000-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */61440"

    # Several ranges or a malformed header: the whole file, 200 (allowed by RFC 9110 14.2).
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=9-2"):
        resp = await client.get("/blob.bin", headers={"Range": header})
        assert resp.status == 200, header
        assert len(await resp.read()) == 61_440

    # If-Range with the current ETag honours the range; with an old one, the whole file.
    etag = (await client.head("/blob.bin")).headers["ETag"]
    resp = await client.get("/blob.bin", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert resp.status == 206
    resp = await client.get("/blob.bin", headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert resp.status == 200

    real = await origin_client()
    resp = await real.get("/5mo.jpg", headers={"Range": "bytes=0-2"})
    assert resp.status == 206
    assert await resp.read() == b"\xff\xd8\xff"


async def test_conditional_requests(origin_client: ClientFactory, static_dir: Path) -> None:
    client = await origin_client(static_dir=static_dir)
    first = await client.get("/blob.bin")
    await first.read()
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]

    resp = await client.get("/blob.bin", headers={"If-None-Match": etag})
    assert resp.status == 304
    assert await resp.read() == b""
    assert resp.headers["ETag"] == etag
    resp = await client.get("/blob.bin", headers={"If-None-Match": f'"x", W/{etag}'})
    assert resp.status == 304
    resp = await client.get("/blob.bin", headers={"If-Modified-Since": last_modified})
    assert resp.status == 304
    later = email.utils.formatdate(1_800_000_000, usegmt=True)
    resp = await client.get("/blob.bin", headers={"If-Modified-Since": later})
    assert resp.status == 304
    earlier = email.utils.formatdate(1_600_000_000, usegmt=True)
    resp = await client.get("/blob.bin", headers={"If-Modified-Since": earlier})
    assert resp.status == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    resp = await client.get(
        "/blob.bin", headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified}
    )
    assert resp.status == 200
    assert len(await resp.read()) == 61_440


async def test_unknown_and_unsafe_names_are_404(
    origin_client: ClientFactory, static_dir: Path
) -> None:
    client = await origin_client(static_dir=static_dir)
    for path in ("/nope.txt", "/..%2Fsecret", "/.hidden", "/static/index.html"):
        resp = await client.get(path)
        assert resp.status == 404, path


def test_parse_range() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=-0", 10) is False
    assert parse_range("bytes=3-1", 10) is None
    assert parse_range("bytes=", 10) is None
