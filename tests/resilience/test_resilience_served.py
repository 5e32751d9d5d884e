"""The same hostile input against a real `python -m edge serve` (the front door in front of the
aiohttp application) and the real origin: no smuggled or ambiguous request reaches the origin,
slowloris is cut off, and the cached page is intact afterwards."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.resilience.helpers import (
    Proc,
    edge_config,
    edge_proc,
    free_port,
    http_get,
    origin_argv,
    raw_exchange,
    status_of,
    wait_port,
)
from tests.resilience.test_resilience_input import SMUGGLING


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Proc]]:
    tmp: Path = tmp_path_factory.mktemp("served")
    oport, eport = free_port(), free_port()
    origin = Proc(
        origin_argv(oport, tmp, static_rate=0, heavy_seconds=0, db_seconds=0), tmp / "o.log"
    ).start()
    config = edge_config(tmp, limits={"header_timeout": "1s"})
    edge = edge_proc(tmp, eport, [f"http://127.0.0.1:{oport}"], config)
    try:
        wait_port(oport, 60, origin.proc)
        edge.start()
        wait_port(eport, 60, edge.proc)
        yield oport, eport, edge
    finally:
        edge.stop()
        origin.stop()


def origin_paths(oport: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{oport}/_origin/stats", timeout=10) as r:
        return dict(json.loads(r.read())["paths"])


async def test_smuggling_never_reaches_the_origin(served: tuple[int, int, Proc]) -> None:
    oport, eport, edge = served
    st, _, page = await http_get(eport, "/")
    assert st == 200
    for name, data in SMUGGLING.items():
        out = await raw_exchange(eport, data, timeout=5)
        status = status_of(out)
        assert status is None or 400 <= status < 500, (name, out[:200])
        assert b" 200 " not in out.split(b"\r\n", 1)[0], (name, out[:200])
    paths = await asyncio.to_thread(origin_paths, oport)
    assert "/s" not in paths and "/smuggled" not in paths, paths
    st, h, again = await http_get(eport, "/")
    assert st == 200 and again == page and h["x-cache"] == "HIT"
    assert edge.alive() and "Traceback" not in edge.output()


async def test_slowloris_on_the_served_edge(served: tuple[int, int, Proc]) -> None:
    _, eport, edge = served
    reader, writer = await asyncio.open_connection("127.0.0.1", eport)
    t0 = time.monotonic()
    closed = False
    for byte in b"GET / HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"a" * 60:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.2)
        if reader.at_eof() or reader._buffer:  # answered (408) or closed
            closed = True
            break
    assert closed and time.monotonic() - t0 < 8
    writer.close()
    st, _, _ = await http_get(eport, "/")
    assert st == 200 and edge.alive()
