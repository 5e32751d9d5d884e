"""Fast paths are caches in front of the general path, behind one gate (`Engine.fresh_hit`):
what they answer is what the general path answers, byte for byte, over HTTP/1.1 and h2.

The general path here is `Engine.serve` with the gate shut (no hit answered from the parse,
no kept head, no kept hit); the fast path is the edge as it runs. Both answer the same
requests on the same stored objects: a small one, one with coded copies, and the lab's
sliced photo's stand-in (slices in the node tier, kept whole in the hot tier once they are
all there: edge.engine.slices)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from edge.config.settings import Rule, SlicePolicy
from edge.engine.engine import Engine
from tests.edge.test_request_check import Answer, Sent, _h1, _h2
from tests.edge.test_slices import BLOB, Ranged
from tests.edge.tls_helpers import start_tls_edge

PAGE = b"<html>" + b"woody toys " * 800 + b"</html>"  # compressible: coded copies are made
REQUESTS = [
    Sent(method, target, b"localhost", fields, b"")
    for target in (b"/a", b"/page", b"/blob")
    for method, fields in [
        (b"GET", ()),
        (b"HEAD", ()),
        (b"GET", ((b"range", b"bytes=0-1023"),)),
        (b"GET", ((b"range", b"bytes=500000-500999"),)),
        (b"GET", ((b"range", b"bytes=-100"),)),
        (b"GET", ((b"range", b"bytes=0-0,5-9"),)),
        (b"GET", ((b"range", b"bytes=99999999-"),)),
        (b"GET", ((b"if-none-match", b'"v1"'),)),
        (b"GET", ((b"accept-encoding", b"gzip, br"),)),
        (b"GET", ((b"accept-encoding", b"gzip;q=0.5, zstd"),)),
        (b"HEAD", ((b"accept-encoding", b"br"),)),
    ]
]
TIMED = {"date", "age", "cache-status"}  # the clock's (the same within a second)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture
async def edge(aiohttp_server: Any, tmp_path: Path, ca: trustme.CA):  # type: ignore[no-untyped-def]
    ranged = Ranged(BLOB)

    async def small(request: web.Request) -> web.Response:
        return web.Response(
            body=b"A" * 100, headers={"Cache-Control": "max-age=60", "ETag": '"v1"'}
        )

    async def page(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=60", "ETag": '"v1"', "Content-Type": "text/html"}
        return web.Response(body=PAGE, headers=headers)

    app = web.Application()
    app.router.add_get("/blob", ranged.handle)
    app.router.add_get("/a", small)
    app.router.add_get("/page", page)
    origin = await aiohttp_server(app)
    rules = (Rule(match="/blob", slice=SlicePolicy(64 * 1024, 4)),)
    server, _ = await start_tls_edge(
        str(origin.make_url("/")), tmp_path, ca, limits={"rules": rules}
    )
    yield server
    await server.stop()


@contextmanager
def gate_shut(engine: Engine) -> Iterator[None]:
    """The general path only: `fresh_hit` (the one gate of every fast path) declines, and
    nothing kept is used."""
    engine.kept_hits.clear()
    engine.request_heads.clear()
    engine.fresh_hit = lambda *_: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del engine.fresh_hit
        engine.kept_hits.clear()


def comparable(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    fields = {k: v for k, v in answer.fields.items() if k not in TIMED}
    fields.pop("connection", None)
    fields.pop("strict-transport-security", None)
    body = answer.body
    content_type = fields.get("content-type", "")
    if "multipart/byteranges" in content_type:
        # Each multipart answer names a boundary of its own: compare the parts.
        boundary = content_type.split("boundary=")[1].encode()
        body = body.replace(boundary, b"BOUNDARY")
        fields["content-type"] = content_type.split("boundary=")[0]
        fields.pop("content-length", None)
    return answer.status, fields, body


async def ask(server: Any, door: str, ca: trustme.CA, sent: Sent) -> Answer:
    if door == "h1":
        return await _h1(server.port, sent, None)
    return await _h2(server.tls_port, ca, sent)


async def test_fast_paths_answer_as_the_general_path(edge: Any, ca: trustme.CA) -> None:
    engine: Engine = edge.node
    for target in (b"/a", b"/page", b"/blob"):
        await ask(edge, "h1", ca, Sent(b"GET", target, b"localhost", (), b""))  # stored
    await ask(edge, "h1", ca, Sent(b"GET", b"/blob", b"localhost", (), b""))  # kept whole
    assert engine.slicer.assembled == 1
    # The first demand for a coding has the copies made in the background: both paths
    # below see them made.
    await ask(edge, "h1", ca, Sent(b"GET", b"/page", b"localhost", REQUESTS[8].fields, b""))
    for _ in range(50):
        if len(engine.tiers.get_now("/page") or []) > 1:
            break
        await asyncio.sleep(0.1)
    for door in ("h1", "h2"):
        for sent in REQUESTS:
            with gate_shut(engine):
                general = comparable(await ask(edge, door, ca, sent))
            fast = [comparable(await ask(edge, door, ca, sent)) for _ in range(3)]
            assert general[0] in (200, 206, 304, 416), (door, sent, general[0])
            for answer in fast:
                assert answer == general, (door, sent)
    assert engine.slicer.assembled == 1  # the sliced photo stayed whole
