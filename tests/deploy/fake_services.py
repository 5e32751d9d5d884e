"""Stand-ins for `python -m origin serve` and `python -m edge serve`, for the topology tests.

The tests write `origin/__main__.py` and `edge/__main__.py` into a temporary directory that call
`run()` here; the topology runs there, so `python -m origin` finds these before the real ones.
They accept the options the topology passes, answer the health URLs, and tell who they are.
The fake origin also starts one `sleep` child per replica, so the tests can see that stopping
the topology reaches the whole process group.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from aiohttp import web


def _origin(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--heavy-seconds", type=float)
    parser.add_argument("--db-seconds", type=float)
    parser.add_argument("--static-rate", type=int)
    parser.add_argument("--db")
    args = parser.parse_args(argv)
    kids = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        for _ in range(args.replicas)
    ]
    Path("origin-children.json").write_text(json.dumps([k.pid for k in kids]))

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="ping")

    async def other(request: web.Request) -> web.Response:
        return web.Response(text=f"origin {request.path} {vars(args)}")

    app = web.Application()
    app.router.add_get("/api/ping", ping)
    app.router.add_get("/{tail:.*}", other)
    web.run_app(app, host=args.host, port=args.port, print=None)


def _edge(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--config")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--redis")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "node": args.node,
                "redis": "up" if args.redis else "off",
                "origin": args.origin,
                "token": os.environ.get("EDGE_PURGE_TOKEN"),
            }
        )

    async def other(request: web.Request) -> web.Response:
        return web.Response(text=args.node, headers={"X-Served-By": args.node})

    app = web.Application()
    app.router.add_get("/_edge/health", health)
    app.router.add_get("/{tail:.*}", other)
    web.run_app(app, host=args.host, port=args.port, print=None)


def run(role: str) -> None:
    if role == "origin":
        _origin(sys.argv[1:])
    else:
        _edge(sys.argv[1:])


def install(directory: Path, roles: tuple[str, ...] = ("origin", "edge")) -> None:
    """Write the stand-in packages (`origin`, `edge`, or both) into `directory`."""
    here = Path(__file__).resolve().parent
    for role in roles:
        package = directory / role
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(
            f"import sys\nsys.path.insert(0, {str(here)!r})\n"
            f"from fake_services import run\nrun({role!r})\n"
        )
