"""The dashboard's endpoints (the page, its assets, history, nodes) and `woody-edge top`
against real edges. The page itself in Chromium: test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.edge.conftest import TOKEN, EdgeFactory, EdgeHandle, Scripted, url
from tests.edge.ops_helpers import ROOT

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def traffic(edge: EdgeHandle, paths: list[str]) -> None:
    async with aiohttp.ClientSession() as s:
        for path in paths:
            async with s.get(url(edge, path)) as r:
                await r.read()


async def test_the_page_and_its_assets_come_from_the_edge_with_a_strict_csp(
    scripted: tuple[Scripted, Any], make_edge: EdgeFactory
) -> None:
    _, server = scripted
    edge = await make_edge(url(server, ""), node="edge-<b>")
    async with aiohttp.ClientSession() as s:
        async with s.get(url(edge, "/_edge/dashboard")) as r:
            page = await r.text()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
            csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "edge-&lt;b&gt;" in page and "edge-<b>" not in page  # escaped
        assert '<script src="/_edge/dashboard.js"' in page
        assert "http://" not in page.replace('href="/_edge/', "")  # nothing from elsewhere
        assert 'id="purge-form"' not in page  # read-only without the token
        for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            async with s.get(url(edge, f"/_edge/{asset}")) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith(kind)
                assert "https://" not in await r.text()
        async with s.get(url(edge, "/_edge/dashboard/purge-form")) as r:
            assert r.status == 401
        async with s.get(
            url(edge, "/_edge/dashboard/purge-form"), headers={"Authorization": "Bearer nope"}
        ) as r:
            assert r.status == 403
        async with s.get(url(edge, "/_edge/dashboard/purge-form"), headers=AUTH) as r:
            assert r.status == 200 and 'id="purge-form"' in await r.text()
        async with s.post(url(edge, "/_edge/dashboard")) as r:
            assert r.status == 405


async def test_history_has_per_second_rates_of_the_node(
    scripted: tuple[Scripted, Any], make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set("/a", body=b"a" * 100, Cache_Control="max-age=60")
    edge = await make_edge(url(server, ""))
    await traffic(edge, ["/a"] * 10)
    await asyncio.sleep(2.2)  # two ticks of the view: at least one rate after the traffic
    async with aiohttp.ClientSession() as s, s.get(url(edge, "/_edge/history")) as r:
        body = await r.json()
    rows = body["samples"]
    assert rows and body["interval_seconds"] == 1.0
    assert {"t", "requests", "hits", "misses", "bytes", "hit_ratio", "collapsed"} <= set(rows[0])

    def total(series: str) -> float:
        return sum(r[series] * r["seconds"] for r in rows)

    assert round(total("requests")) == 10
    assert round(total("hits")) == 9
    assert round(total("bytes")) == 1000
    assert all(rows[i]["t"] < rows[i + 1]["t"] for i in range(len(rows) - 1))


async def test_nodes_sharing_redis_and_the_last_purge_with_its_acks(
    scripted: tuple[Scripted, Any], make_edge: EdgeFactory, redis_url: str, key_prefix: str
) -> None:
    script, server = scripted
    script.set("/p", body=b"p", Cache_Control="max-age=60")
    common = {"redis_url": redis_url, "redis_prefix": key_prefix}
    a = await make_edge(url(server, ""), node="edge-a", **common)
    b = await make_edge(url(server, ""), node="edge-b", **common)
    await traffic(a, ["/p", "/p"])
    deadline = time.monotonic() + 8
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(url(b, "/_edge/nodes")) as r:
                nodes = await r.json()
            rows = {n["node"]: n for n in nodes["nodes"]}
            if set(rows) == {"edge-a", "edge-b"} and rows["edge-a"]["requests"] == 2:
                break  # edge-a announced itself since the traffic (every 2 s)
            assert time.monotonic() < deadline, nodes
            await asyncio.sleep(0.2)
        assert nodes["redis"] == "up"
        row = next(n for n in nodes["nodes"] if n["node"] == "edge-a")
        assert row["requests"] == 2 and row["hit_ratio"] == 0.5
        async with s.post(url(a, "/_edge/purge"), json={"urls": ["/p"]}, headers=AUTH) as r:
            assert r.status == 200
        async with s.get(url(b, "/_edge/nodes")) as r:
            nodes = await r.json()
    last = nodes["last_purge"]
    assert last["by"] == "edge-a" and last["kind"] == "urls"
    assert last["acks"]["received"] == last["acks"]["expected"] >= 1
    assert "edge-b" in {n["node"] for n in last["nodes"]}


async def run_top(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "top",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_top_once_shows_rates_top_urls_and_origin_health_of_each_edge(
    scripted: tuple[Scripted, Any], make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set("/big.jpg", body=b"x" * 50_000, Cache_Control="max-age=60")
    script.set("/small", body=b"s", Cache_Control="max-age=60")
    a = await make_edge(url(server, ""), node="edge-a")
    b = await make_edge(url(server, ""), node="edge-b")
    await traffic(a, ["/big.jpg"] * 3 + ["/small"] * 6)
    await traffic(b, ["/small"] * 2)
    await asyncio.sleep(1.2)
    code, out = await run_top(
        "--once", "--width", "120", "--edge", url(a, ""), "--edge", url(b, "")
    )
    assert code == 0, out
    assert "edge-a" in out and "edge-b" in out
    assert "req/s" in out and "hit ratio 77.8 %" in out  # edge-a: 7 hits, 2 misses
    assert "hit ratio 50.0 %" in out  # edge-b: its own memory, no Redis between them
    lines = out.splitlines()
    small = next(line for line in lines if "/small" in line and "/big.jpg" in line)
    assert "5" in small  # /small: 5 hits; /big.jpg: the most bytes
    assert f"{url(server, '').rstrip('/')} up" in out
    assert "all 2/2 nodes" in out
    code, out = await run_top("--once", "--edge", url(a, ""), "--edge", "http://127.0.0.1:1")
    assert code == 1 and "unreachable" in out and "edge-a" in out


def _read_pty(
    command: list[str], first: threading.Event, done: Callable[[str], bool], limit: float = 60
) -> str:
    """Run `command` on a pseudo-terminal, as in a real terminal; set `first` once it drew
    its first frame, and stop it once what it drew satisfies `done` (or after `limit` s: a
    loaded machine may redraw slowly, never a fixed window)."""
    import os
    import pty
    import signal
    import subprocess

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "110"}
    proc = subprocess.Popen(command, stdout=slave, stderr=slave, stdin=slave, cwd=ROOT, env=env)
    os.close(slave)
    os.set_blocking(master, False)
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            out += os.read(master, 65536)
        except BlockingIOError:
            time.sleep(0.05)
        except OSError:
            break
        if not first.is_set() and b"requests" in out:
            first.set()
        if first.is_set() and done(out.decode(errors="replace")):
            break
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    os.close(master)
    return out.decode(errors="replace")


async def test_top_refreshes_in_a_terminal(
    scripted: tuple[Scripted, Any], make_edge: EdgeFactory
) -> None:
    script, server = scripted
    script.set("/t", body=b"t", Cache_Control="max-age=60")
    edge = await make_edge(url(server, ""), node="edge-live")
    command = [sys.executable, "-m", "edge", "top", "--edge", url(edge, ""), "--interval", "0.3"]
    first = threading.Event()

    def redrawn(out: str) -> bool:
        return out.count("edge-live") >= 3 and " 7 requests" in out

    reading = asyncio.create_task(asyncio.to_thread(_read_pty, command, first, redrawn))
    assert await asyncio.to_thread(first.wait, 30), "no frame from woody-edge top"
    await traffic(edge, ["/t"] * 7)
    out = await reading
    assert out.count("edge-live") >= 3, out  # redrawn, not printed once
    assert " 0 requests" in out and " 7 requests" in out, out  # it moved while it ran
