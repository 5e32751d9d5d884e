"""Graceful stop of a real `python -m edge serve`: SIGTERM stops accepting, lets a 5 MB
download in progress (at a throttled rate) finish, then the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.resilience.helpers import (
    ROOT,
    Proc,
    edge_config,
    edge_proc,
    free_port,
    origin_argv,
    wait_port,
)

IMAGE = ROOT / "origin" / "static" / "5mo.jpg"


@pytest.mark.timeout(120)
async def test_sigterm_finishes_the_download_in_progress(tmp_path: Path) -> None:
    oport, eport = free_port(), free_port()
    origin = Proc(
        # 500 KB/s per response: the image's 8 parallel slices (config/edge.yaml) take 1.25 s.
        origin_argv(oport, tmp_path, static_rate=500_000, heavy_seconds=0, db_seconds=0),
        tmp_path / "origin.log",
    ).start()
    edge = edge_proc(tmp_path, eport, [f"http://127.0.0.1:{oport}"], edge_config(tmp_path))
    try:
        await asyncio.to_thread(wait_port, oport, 60, origin.proc)
        edge.start()
        await asyncio.to_thread(wait_port, eport, 60, edge.proc)
        reader, writer = await asyncio.open_connection("127.0.0.1", eport)
        writer.write(b"GET /5mo.jpg HTTP/1.1\r\nHost: edge\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(200_000), 30)
        t0 = time.monotonic()
        edge.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # No new connections once it stopped listening (allow it a moment).
        refused = False
        for _ in range(50):
            await asyncio.sleep(0.1)
            try:
                _, w = await asyncio.open_connection("127.0.0.1", eport)
                w.close()
            except OSError:
                refused = True
                break
        assert refused, "the edge still accepted connections after SIGTERM"
        body += await asyncio.wait_for(reader.readexactly(length - len(body)), 60)
        writer.close()
        assert body == IMAGE.read_bytes()
        assert time.monotonic() - t0 > 0.5  # it really was in progress at SIGTERM
        code = await asyncio.to_thread(edge.proc.wait, 30)  # type: ignore[union-attr]
        assert code == 0, edge.output()[-2000:]
        assert "Traceback" not in edge.output()
    finally:
        edge.stop()
        origin.stop()
