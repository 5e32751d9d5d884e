"""103 Early Hints: the pure parsing of edge/engine/hints.py, then the 103 on the wire."""

from __future__ import annotations

import asyncio

from aiohttp import web

from edge.engine import hints
from tests.edge.conftest import STANDARD_YAML, TOKEN, EdgeFactory, node_of, url

PAGE_LINK = (
    '</woody.css>; rel=preload; as=style, </htmx.min.js>; rel="preload"; as=script, '
    "<https://cdn.example>; rel=preconnect, </next>; rel=next, </a,b.css>; rel=preload; as=style"
)


def test_only_preload_and_preconnect_links_are_hints() -> None:
    assert hints.split_links('<a>; title="x, y", <b>') == ['<a>; title="x, y"', "<b>"]
    assert hints.hint_links([PAGE_LINK]) == (
        "</woody.css>; rel=preload; as=style",
        '</htmx.min.js>; rel="preload"; as=script',
        "<https://cdn.example>; rel=preconnect",
        "</a,b.css>; rel=preload; as=style",
    )
    assert hints.rels('<x>; rel="preload prefetch"') == {"preload", "prefetch"}
    assert hints.hint_links(["</x>; rel=stylesheet"]) == ()
    assert not hints.may_send("1.0") and hints.may_send("1.1")


def test_learning_and_forgetting() -> None:
    h = hints.Hints(max_pages=2)
    h.learn("/", [("Link", "</a.css>; rel=preload; as=style")])
    assert h.for_fetch("/", None) == ("</a.css>; rel=preload; as=style",)
    h.learn("/", [("Content-Type", "text/html")])  # the page no longer announces it
    assert h.for_fetch("/", None) == ()
    assert h.for_fetch("/", [("Link", "</b.js>; rel=preload; as=script")]) == (
        "</b.js>; rel=preload; as=script",
    )
    for key in ("/1", "/2", "/3"):
        h.learn(key, [("Link", "</a.css>; rel=preload")])
    assert list(h.pages) == ["/2", "/3"]


async def raw_get(port: int, path: str, version: str = "1.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_a_miss_of_a_page_sends_its_learnt_links_first(
    scripted, make_edge: EdgeFactory
) -> None:
    script, server = scripted
    calls = {"n": 0}

    async def page(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        await asyncio.sleep(0.05)
        return web.Response(
            text="<html></html>",
            content_type="text/html",
            headers={"Cache-Control": "max-age=60", "Link": PAGE_LINK},
        )

    script.handlers["/page"] = page
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    first = await raw_get(edge.port, "/page")
    assert first.startswith(b"HTTP/1.1 200")  # nothing learnt yet: no hint
    hit = await raw_get(edge.port, "/page")
    assert hit.startswith(b"HTTP/1.1 200") and b"X-Cache: HIT" in hit  # a hit needs none
    import aiohttp

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url(edge, "/_edge/purge"),
            json={"urls": ["/page"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r,
    ):
        assert r.status == 200
    again = await raw_get(edge.port, "/page")
    head, _, rest = again.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 103 Early Hints",
        b"Link: </woody.css>; rel=preload; as=style",
        b'Link: </htmx.min.js>; rel="preload"; as=script',
        b"Link: <https://cdn.example>; rel=preconnect",
        b"Link: </a,b.css>; rel=preload; as=style",
    ]
    assert rest.startswith(b"HTTP/1.1 200") and b"X-Cache: MISS" in rest
    # Never to an HTTP/1.0 client (RFC 9110 section 15.2), and a 1xx is never stored.
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url(edge, "/_edge/purge"),
            json={"urls": ["/page"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r,
    ):
        assert r.status == 200
    old = await raw_get(edge.port, "/page", "1.0")
    assert old.startswith(b"HTTP/1.1 200")
    stored = await raw_get(edge.port, "/page")
    assert stored.startswith(b"HTTP/1.1 200") and b"X-Cache: HIT" in stored
    assert node_of(edge).hints.sent == 1 and calls["n"] == 3
