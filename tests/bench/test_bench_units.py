"""The fetcher's link extraction, the wrk output parser, progress lines, the CLI's shape."""

from __future__ import annotations

import io

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.__main__ import build_parser, main
from bench.fetcher import css_urls, fetch_page, html_links
from bench.load import origin_count
from bench.loadgen import WRK_LUA, cache_verdict, parse_wrk
from bench.progress import Progress
from bench.standin import StandinSettings, create_app


def test_css_urls_finds_every_form() -> None:
    css = """body { background: url("5mo.jpg") } .a { background: url('a.png') }
    .b { background: url( b.gif ) } .c { background: url(data:image/png;base64,xx) }
    @import "more.css";"""
    assert css_urls(css) == ["5mo.jpg", "a.png", "b.gif", "more.css"]


def test_html_links() -> None:
    html = """<html><head><link rel=stylesheet href="woody.css"><script src="htmx.min.js">
    </script><style>div { background: url(bg.png) }</style></head><body>
    <img src="spinner.svg" srcset="s1.png 1x, s2.png 2x"><a href="/next">n</a>
    <div style="background-image: url('inline.jpg')"></div>
    <button hx-get="/api/misc/time">t</button></body></html>"""
    links, base = html_links(html)
    assert base is None
    assert links == [
        "woody.css",
        "htmx.min.js",
        "bg.png",
        "spinner.svg",
        "s1.png",
        "s2.png",
        "/next",
        "inline.jpg",
    ]


async def test_fetch_page_gets_the_page_and_every_asset() -> None:
    settings = StandinSettings(heavy_seconds=0, db_seconds=0, static_rate=0, image_bytes=300_000)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        load = await fetch_page(str(server.make_url("/")))
    finally:
        await server.close()
    paths = sorted(r.url.rsplit("/", 1)[1] for r in load.resources)
    assert paths == ["", "5mo.jpg", "htmx.min.js", "spinner.svg", "style.css"]
    assert load.ok
    assert load.total_bytes > 300_000
    assert load.seconds > 0


async def test_fetch_page_stays_on_the_host() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text='<img src="http://example.invalid/x.jpg"><img src="/here.png">',
            content_type="text/html",
        )

    async def here(request: web.Request) -> web.Response:
        return web.Response(body=b"png", content_type="image/png")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/here.png", here)
    server = TestServer(app)
    await server.start_server()
    try:
        load = await fetch_page(str(server.make_url("/")))
    finally:
        await server.close()
    assert [r.url.rsplit("/", 1)[1] for r in load.resources] == ["", "here.png"]


def test_parse_wrk_reads_our_lua_line() -> None:
    assert "latency:percentile(p)" in WRK_LUA
    out = (
        "Running 1s test @ http://127.0.0.1:1/\n  2 threads and 4 connections\n"
        'WRKJSON {"requests":10,"duration_us":1000000,"bytes":2000,'
        '"errors":{"connect":0,"read":0,"write":0,"status":1,"timeout":0},'
        '"min_us":50,"max_us":900,"mean_us":100.5,"stdev_us":3.0,'
        '"percentiles_us":[[50,100],[99,800]]}\n'
    )
    data = parse_wrk(out)
    assert data["requests"] == 10
    assert data["percentiles_us"] == [[50, 100], [99, 800]]
    with pytest.raises(ValueError):
        parse_wrk("Requests/sec: 10\n")


def test_cache_verdict() -> None:
    assert cache_verdict({"X-Cache": "HIT"}) == "HIT"
    assert cache_verdict({"X-Cache": "miss, HIT"}) == "MISS"
    assert cache_verdict({"Cache-Status": "edge-1; hit; ttl=27"}) == "HIT"
    assert cache_verdict({"Cache-Status": "edge-1; fwd=uri-miss; stored"}) == "MISS"
    assert cache_verdict({}) == "-"


def test_origin_count_reads_both_stats_shapes() -> None:
    assert origin_count({"paths": {"/api/misc/heavy": 3, "/": 1}}, "/api/misc/heavy") == 3
    assert origin_count({"requests": {"/api/products": 2, "/api/products/last": 5}}, "/api") == 7
    assert origin_count({"x": {"paths": {"/a": 1}}}, "/a") == 1


def test_progress_lines_without_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(2.0, label="t", stream=stream) as progress:
        with progress.step("one", 1.0):
            pass
        with progress.step("two", 1.0):
            pass
        progress.note("hello")
    text = stream.getvalue()
    assert "t: [  0%]" in text and "ETA" in text and ": two" in text and "t: hello" in text
    silent = io.StringIO()
    with Progress(1.0, stream=silent, enabled=False) as progress, progress.step("x", 1.0):
        pass
    assert silent.getvalue() == ""


def test_parser_has_the_subcommands() -> None:
    parser = build_parser()
    args = parser.parse_args(["table", "--quick", "--rows", "baseline", "--target", "s=http://x"])
    assert args.command == "table" and args.quick and args.target == ["s=http://x"]
    args = parser.parse_args(["load", "--duration", "1", "--scenarios", "a,c"])
    assert args.command == "load" and args.duration == 1.0


def test_topology_and_chaos_dispatch_to_their_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.chaos
    import bench.topology

    seen: list[list[str]] = []

    def fake(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setattr(bench.topology, "main", fake)
    monkeypatch.setattr(bench.chaos, "main", fake)
    assert main(["topology", "up", "--edges", "1"]) == 7
    assert main(["chaos", "--x"]) == 7
    assert seen == [["up", "--edges", "1"], ["--x"]]


def test_unknown_rows_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "--rows", "nope", "--no-files", "--quiet"]) == 2
    assert "unknown rows" in capsys.readouterr().out
