"""`python -m bench.hitpath`: the instructions one plain HTTP/1.1 hit costs the edge's Python,
layer by layer, counted by callgrind.

No sockets and no event loop turns: one edge worker's `EdgeServer` (config/edge.yaml, its
memory and node tiers) behind an `Http1Connection` whose transport only counts what it is
given. The 1 KB object is fetched once from a stand-in origin, then the request h2load
sends (`--h1`) is fed to `data_received` N times. Each count is two fresh processes under
`valgrind --tool=callgrind`, N = 2,000 and 12,000: (I(12,000) - I(2,000)) / 10,000, so
start-up and the fetch cancel out. The variants:

    general  every head parsed by httptools and every hit looked up in full (routes, tiers,
             variant, freshness, the built answer, the stamp): a head and a target the
             worker keeps nothing of
    parsed   the head parsed by httptools each time (a client whose heads differ), the
             hit kept (`edge.engine.fresh_hits`: the lookup's outcome, and the answer stamped for
             this second of its age)
    hit      the usual case of a repeating client: the head kept too (`edge.protocol.http1`: the
             same bytes, already parsed) and the kept hit

and, for reference, `floor-hit`: bench.floor --hit's connection (the least an HTTP/1.1
cache does for a hit in Python: the target and fields in httptools' callbacks, one dict
lookup, Age and Cache-Status) fed the same request, no edge at all.

The difference between two lines is what that layer costs. `bench cost` counts whole
servers under load (with uvloop, the kernel's share unseen); this says where the edge's own
Python goes. Counts, not time: a line is the same on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import REPO, ProcessGroup, run_tool
from bench.servers import OriginSpec, start_origin

PATH = "/bench/obj/1024"
VARIANTS = ("general", "parsed", "hit")
REFERENCE = "floor-hit"  # bench.floor --hit, counted the same way
SMALL_N, LARGE_N = 2_000, 12_000


def request_bytes(port: int) -> bytes:
    """What `h2load --h1` sends for one GET."""
    return (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: h2load nghttp2/1.52.0\r\nAccept: */*\r\n\r\n"
    ).encode()


class CountingTransport:
    """The connection's transport: counts writes and what they carry."""

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""
        self.kept = (0, 0)  # heads and hits the worker kept, at the end

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class _NeverKept(dict[bytes, Any]):
    """A request-head memo that keeps nothing: each head is parsed."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        pass


async def feed(origin: str, variant: str, n: int) -> CountingTransport:
    """One process's run: an edge in front of `origin`, the hit fed `n` times."""
    if variant == REFERENCE:
        return feed_floor_hit(n)
    from edge.config.settings import load_config
    from edge.ops.nodeview import WorkerBoard
    from edge.protocol.http1 import Http1Connection
    from edge.server import EdgeServer
    from edge.store.node import NodeTier

    cfg = dataclasses.replace(
        load_config(REPO / "config" / "edge.yaml"), port=0, origins=(origin,), node="hitpath"
    )
    server = EdgeServer(cfg)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}{PATH}"
        loop = asyncio.get_running_loop()
        for _ in range(3):  # the miss, then hits: the entry is in the memory tier
            await loop.run_in_executor(None, lambda: urllib.request.urlopen(url).read())
        engine = server.engine
        assert engine is not None
        engine.kept_hits.clear()  # what the warm-up hits kept
        engine.request_heads.clear()
        if variant in ("general", "parsed"):
            engine.request_heads = _NeverKept()  # before the connection, which holds it
        if variant == "general":
            engine.kept_hits.keep = lambda *_: None  # type: ignore[method-assign]
        conn = Http1Connection(engine)
        transport = CountingTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        data = request_bytes(server.port)
        for _ in range(n):
            conn.data_received(data)
        conn.connection_lost(None)  # or the server's stop waits for it
        transport.kept = (len(conn.heads), len(engine.kept_hits.kept))
        return transport
    finally:
        await server.stop()
        if server.node_path is not None and server.owns_node_path:
            WorkerBoard.remove(server.node_path)
            NodeTier.remove(server.node_path)


def feed_floor_hit(n: int) -> CountingTransport:
    """bench.floor --hit's connection, the same request fed `n` times."""
    import time

    from bench.floor import BODY, HIT_HEAD, FloorHitConnection

    conn = FloorHitConnection({PATH.encode(): (HIT_HEAD, BODY, time.time())})
    transport = CountingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    data = request_bytes(8080)
    for _ in range(n):
        conn.data_received(data)
    return transport


def count(origin: str, variant: str, out_dir: Path) -> float:
    """Instructions per hit of one variant (two processes under callgrind, differenced)."""
    totals = []
    for n in (SMALL_N, LARGE_N):
        out = out_dir / f"{variant}.{n}"
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.hitpath",
            "one",
            "--origin",
            origin,
            "--variant",
            variant,
            "--n",
            str(n),
        ]
        code, stdout, stderr = run_tool(argv, 600)
        if code != 0:
            raise RuntimeError(f"{variant} ({n}): {(stderr or stdout).strip()[-500:]}")
        text = out.read_text()
        total = next(line for line in text.splitlines() if line.startswith("summary:"))
        totals.append(int(total.split()[1]))
    return (totals[1] - totals[0]) / (LARGE_N - SMALL_N)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hitpath", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("one", help="one run, no counting (what callgrind runs)")
    one.add_argument("--origin", required=True)
    one.add_argument("--variant", choices=(*VARIANTS, REFERENCE), default="hit")
    one.add_argument("--n", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print the JSON")
    args = parser.parse_args(argv)
    if args.command == "one":
        import uvloop  # the edge's loop (its `time()` is C; asyncio's is Python)

        transport = uvloop.run(feed(args.origin, args.variant, args.n))
        fields = transport.last.decode("latin-1").split("\r\n")
        x_cache = next((f for f in fields if f.lower().startswith("x-cache:")), "")
        age = any(f.lower().startswith("age:") for f in fields)
        heads, hits = transport.kept
        out = {"writes": transport.writes, "x_cache": x_cache, "age": age}
        print(json.dumps({**out, "kept_heads": heads, "kept_hits": hits}))
        return 0
    if shutil.which("valgrind") is None:
        print("bench.hitpath: valgrind is not installed (Debian package valgrind)", file=sys.stderr)
        return 2
    spec = OriginSpec(heavy_seconds=0.01, db_seconds=0.01, static_rate=0, impl="standin")
    results: dict[str, float] = {}
    with ProcessGroup() as group, tempfile.TemporaryDirectory() as tmp:
        origin = start_origin(group, spec)
        for variant in (*VARIANTS, REFERENCE):
            print(f"hitpath: counting {variant} ...", file=sys.stderr, flush=True)
            results[variant] = count(origin.url, variant, Path(tmp))
    if args.json:
        print(json.dumps(results))
        return 0
    print("| variant | instructions per hit |")
    print("| :--- | ---: |")
    for variant in VARIANTS:
        print(f"| {variant} | {results[variant] / 1000:.1f} k |")
    floor_hit = results[REFERENCE]
    print(f"| {REFERENCE} (bench.floor --hit, for reference) | {floor_hit / 1000:.1f} k |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
