"""`python -m edge purge` as a subprocess against two in-process nodes sharing the real Redis.

The nodes run as `edge serve` runs them (front door on); the command line does not care
which path answers, so these tests run once, not once per path like `make_edge`'s.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.edge.conftest import ROOT, TOKEN
from tests.edge.test_purge import Cluster, start_cluster

pytestmark = pytest.mark.redis


@pytest.fixture
async def two(
    aiohttp_server,
    make_edge,
    tmp_path,
    redis_url,
    key_prefix,
) -> AsyncIterator[Cluster]:
    c = await start_cluster(aiohttp_server, make_edge, tmp_path, redis_url, key_prefix, n=2)
    c.origin.surrogate["/obj/b"] = "common"
    yield c
    await c.session.close()


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "purge",
        *args,
        cwd=ROOT,
        env={**base, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def edge_url(c: Cluster, i: int) -> str:
    return f"http://127.0.0.1:{c.nodes[i].server.port}"


async def test_cli_purges_and_reports_every_node(two: Cluster, tmp_path: Path) -> None:
    c = two
    await c.warm("/obj/a", "/obj/b")
    code, out, err = await cli("/obj/a", "--edge", edge_url(c, 0), "--token", TOKEN)
    assert code == 0, (out, err)
    line = out.strip()
    assert line.startswith(f"{edge_url(c, 0)}: ok urls via edge-1: memory 1; shared tier 1")
    assert "acks 2/2" in line and "edge-1[" in line and "edge-2[" in line
    assert not await c.cached(0, "/obj/a") and not await c.cached(1, "/obj/a")
    assert await c.cached(1, "/obj/b")

    # EDGE_URLS names both nodes; a token file; soft, by tag, as JSON lines
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {
        "EDGE_URLS": f"{edge_url(c, 0)}, {edge_url(c, 1)}",
        "EDGE_PURGE_TOKEN_FILE": str(token_file),
    }
    code, out, _ = await cli("--tag", "common", "--soft", "--json", env=env)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["edge"] for r in rows] == [edge_url(c, 0), edge_url(c, 1)]
    assert all(r["ok"] and r["answer"]["kind"] == "soft-tags" for r in rows)
    assert rows[0]["answer"]["shared"] == 1
    _, h, _ = await c.get(1, "/obj/b")
    assert h["X-Cache"] == "REVALIDATED"


async def test_cli_fails_on_any_failure(two: Cluster) -> None:
    c = two
    await c.warm("/obj/a")
    good, dead = edge_url(c, 0), "http://127.0.0.1:1"
    code, out, _ = await cli("--all", "--edge", good, "--token", "wrong-token-0123456789")
    assert code == 1 and "FAILED HTTP 403: wrong purge token" in out
    assert await c.cached(0, "/obj/a")
    code, out, _ = await cli("--prefix", "/obj/*", "--edge", dead, "--edge", good, "--token", TOKEN)
    assert code == 1
    first, second = out.splitlines()
    assert first.startswith(f"{dead}: FAILED unreachable")
    assert second.startswith(f"{good}: ok prefixes via edge-1")
    assert not await c.cached(1, "/obj/a")
    code, _, err = await cli("/x", "--edge", good)
    assert code == 2 and "a token is needed" in err
    code, _, err = await cli("--edge", good, "--token", TOKEN)
    assert code == 2 and "say what to purge" in err
    code, out, _ = await cli("relative", "--edge", good, "--token", TOKEN)
    assert code == 1 and "HTTP 400" in out and "starting with /" in out
