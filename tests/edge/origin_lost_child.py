"""Run by tests/edge/test_origin_lost.py inside a network and mount namespace of its own (as
root): an origin name with two addresses, as a Swarm service with `dnsrr` has, an edge in front,
and one of the two machines lost under the edge's pooled connections.

    unshare --net --mount python tests/edge/origin_lost_child.py HOSTS_FILE

`origin.test` resolves (HOSTS_FILE bound over /etc/hosts) to 127.0.0.1 (machine "a") and
127.0.0.2 (machine "b"). Misses go through the edge until its pool holds connections to both;
then every packet from and to b is dropped (iptables), as when b loses its power or its link:
b answers nothing, not even a refusal. Then GETs through the edge, several at once and one by
one. Prints one JSON object: what each phase's GETs got (status, which machine, seconds).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.config.settings import load_config
from edge.server import EdgeServer

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 8.0  # past it a request waiting on a silent machine fails (504)
CLIENT_TIMEOUT = 60.0


def origin(name: str) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)  # long enough for GETs at once to need several connections
        headers = {"Cache-Control": "no-store", "X-Origin": name}
        return web.Response(text=f"{name} {request.path}", headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    return app


async def get(session: ClientSession, url: str) -> dict[str, Any]:
    began = time.monotonic()
    try:
        async with session.get(url) as resp:
            await resp.read()
            status, by = resp.status, resp.headers.get("X-Origin", "")
    except (OSError, TimeoutError) as exc:
        status, by = 0, type(exc).__name__
    return {"status": status, "origin": by, "seconds": round(time.monotonic() - began, 3)}


async def lose_b() -> None:
    """Every packet from and to b dropped: it refuses nothing, acknowledges nothing."""
    for flag in ("-s", "-d"):
        proc = await asyncio.create_subprocess_exec(
            "iptables", "-I", "INPUT", flag, "127.0.0.2", "-j", "DROP"
        )
        assert await proc.wait() == 0


async def main(config: Path) -> None:
    runners = []
    port = 0
    for name, address in (("a", "127.0.0.1"), ("b", "127.0.0.2")):
        runner = web.AppRunner(origin(name))
        await runner.setup()
        site = web.TCPSite(runner, address, port)
        await site.start()
        port = port or runner.addresses[0][1]
        runners.append(runner)
    cfg = load_config(config)
    cfg = replace(
        cfg,
        origins=(f"http://origin.test:{port}",),
        port=0,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )
    edge = EdgeServer(cfg)
    await edge.start()
    base = f"http://127.0.0.1:{edge.port}"
    out: dict[str, Any] = {}
    async with ClientSession(timeout=ClientTimeout(total=CLIENT_TIMEOUT)) as session:
        for n in range(5):  # until the edge's pool holds connections to both machines
            warm = await asyncio.gather(*(get(session, f"{base}/w{n}-{i}") for i in range(16)))
            if {r["origin"] for r in warm} >= {"a", "b"}:
                break
        out["before"] = warm
        await lose_b()
        lost = time.monotonic()
        out["at_once"] = await asyncio.gather(*(get(session, f"{base}/x{i}") for i in range(16)))
        out["one_by_one"] = [await get(session, f"{base}/y{i}") for i in range(16)]
        out["after_s"] = round(time.monotonic() - lost, 2)
    await edge.stop()
    for runner in runners:
        await runner.cleanup()
    print(json.dumps(out))


if __name__ == "__main__":
    subprocess.run(["mount", "--bind", sys.argv[1], "/etc/hosts"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    asyncio.run(main(Path(__file__).resolve().parents[2] / "config" / "edge.yaml"))
