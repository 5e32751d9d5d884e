"""`--access-log json`: one JSON object per answer with the cache verdict, the node, the
times to first and last byte, and the request id that X-Request-Id carries to the origin."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.__main__ import build_parser
from edge.config.settings import load_config
from edge.server import EdgeServer
from tests.edge.conftest import STANDARD_YAML, Scripted, url


async def run_json_log(
    scripted: tuple[Scripted, Any], caplog: pytest.LogCaptureFixture, fmt: str = "json"
) -> tuple[list[str], Scripted]:
    script, origin = scripted

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        # no Content-Length: streamed (a small body of known length is read whole first)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"head")
        await asyncio.sleep(0.2)  # the head went out well before the last byte
        await resp.write(b"tail")
        return resp

    script.handlers["/slow"] = slow
    script.set("/api", body=b"{}")
    cfg = replace(load_config(STANDARD_YAML), origins=(url(origin, "/").rstrip("/"),), port=0)
    server = EdgeServer(cfg, access_log=fmt)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with caplog.at_level(logging.INFO, logger="edge.access"):
            async with aiohttp.ClientSession() as s:
                for path, headers in (
                    ("/slow", {"X-Request-Id": "req-from-client-1"}),
                    ("/slow", {}),
                    ("/api", {}),
                    ("/api", {"X-Request-Id": "x" * 300}),
                ):
                    async with s.get(base + path, headers=headers) as r:
                        await r.read()
            await asyncio.sleep(0.05)
    finally:
        await server.stop()
    return [r.getMessage() for r in caplog.records if r.name == "edge.access"], script


async def test_json_lines_carry_verdict_node_times_and_request_id(
    scripted: tuple[Scripted, Any], caplog: pytest.LogCaptureFixture
) -> None:
    lines, script = await run_json_log(scripted, caplog)
    records = [json.loads(line) for line in lines]
    assert [(r["target"], r["cache"], r["status"]) for r in records] == [
        ("/slow", "MISS", 200),
        ("/slow", "HIT", 200),
        ("/api", "MISS", 200),
        ("/api", "MISS", 200),
    ]
    miss, hit, api, bad = records
    assert miss["node"] == "edge-1" and miss["client"] == "127.0.0.1" and miss["bytes"] == 8
    assert miss["ttfb"] < 0.15 <= miss["ttlb"], miss  # head at once, body 0.2 s later
    assert hit["ttfb"] == hit["ttlb"] < 0.1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", miss["time"])
    assert "Python" in miss["user_agent"]
    # the client's id is kept and sent to the origin; others get one the edge makes
    assert miss["request_id"] == "req-from-client-1"
    assert re.fullmatch(r"[0-9a-f]{32}", hit["request_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", bad["request_id"])  # one too long is replaced
    seen = [(r.path, r.headers.get("X-Request-Id")) for r in script.seen]
    assert seen == [
        ("/slow", "req-from-client-1"),
        ("/api", api["request_id"]),
        ("/api", bad["request_id"]),
    ]


async def test_text_stays_the_default_format(
    scripted: tuple[Scripted, Any], caplog: pytest.LogCaptureFixture
) -> None:
    lines, _ = await run_json_log(scripted, caplog, fmt="text")
    assert lines[0].startswith('127.0.0.1 "GET /slow HTTP/1.1" 200 8 MISS ')
    assert build_parser().parse_args(["serve", "--access-log"]).access_log == "text"
    assert build_parser().parse_args(["serve", "--access-log", "json"]).access_log == "json"
    assert build_parser().parse_args(["serve"]).access_log is None


def test_request_ids_differ_across_forked_workers() -> None:
    """Made edge-side ids are a per-process random prefix and a counter: a worker forked
    from the supervisor draws a prefix of its own, so two workers never give the same id."""
    import os

    from edge.engine.access_log import _IDS

    parent = [_IDS.next(), _IDS.next()]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in parent)
    assert parent[0][:16] == parent[1][:16] and parent[0] != parent[1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then out at once
        os.write(write, _IDS.next().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:16] != parent[0][:16] and child[16:] == f"{1:016x}"
