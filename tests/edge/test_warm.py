"""`python -m edge warm`: prefetching URLs makes them hits for the next visitors."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from tests.edge.conftest import STANDARD_YAML, EdgeFactory, url


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "warm",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_warm_fills_the_cache(scripted, make_edge: EdgeFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script, server = scripted
    script.set("/a", body=b"a", Cache_Control="max-age=60")
    script.set("/b", body=b"b", Cache_Control="max-age=60")
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    listing = tmp_path / "urls.txt"
    listing.write_text("# after a deploy\n/b\n")
    code, out = await run_cli("/a", "--file", str(listing), "--edge", url(edge, ""))
    assert code == 0, out
    assert " /a 200 MISS " in out and " /b 200 MISS " in out
    async with aiohttp.ClientSession() as s:
        for path in ("/a", "/b"):
            async with s.get(url(edge, path)) as resp:
                assert resp.headers["X-Cache"] == "HIT"
    assert script.hits["/a"] == 1 and script.hits["/b"] == 1


async def test_warm_reports_failures(scripted, make_edge: EdgeFactory) -> None:  # type: ignore[no-untyped-def]
    _, server = scripted
    edge = await make_edge(url(server, "/"), config=STANDARD_YAML)
    code, out = await run_cli("/missing", "--edge", url(edge, ""))
    assert code == 1 and " /missing 404 " in out
    code, out = await run_cli("no-slash", "--edge", url(edge, ""))
    assert code == 2 and "not a path" in out
