"""How long a purge takes to reach every edge node.

    python -m bench.purge_latency                      # 3 nodes, 50 purges, Redis on :6379
    python -m bench.purge_latency --purges 200 --redis redis://127.0.0.1:6379/0

Starts a real topology (`bench.topology.Topology`: the origin and 3 `edge serve` processes
sharing Redis under a fresh key prefix, on ports of their own), then, for each purge: caches
one URL on every node (a HIT on each), purges it through one node (round-robin) with
`POST /_edge/purge`, and probes every node with `Cache-Control: only-if-cached` GETs (which
never refill anything) until each answers 504 (nothing cached there, nor in the shared
tier). Reported, in milliseconds:

- answer: from sending the purge to its answer (which waits for the nodes' acknowledgements);
- after answer: from the answer to the moment the last node answered MISS (the first probes
  go out when the answer arrives, so this is at least one probe round trip);
- from send: from sending the purge to the last node's MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.topology import Topology, TopologyConfig

ROOT = Path(__file__).resolve().parents[1]
PROBE = {"Cache-Control": "only-if-cached"}


def config_copy(prefix: str, workdir: Path) -> Path:
    text = (ROOT / "config" / "edge.yaml").read_text()
    text, n = re.subn(r"(?m)^(\s+prefix:\s*)\S+", rf"\g<1>{prefix}", text, count=1)
    if n != 1:
        raise SystemExit("config/edge.yaml: no redis.prefix line to replace")
    path = workdir / "edge.yaml"
    path.write_text(text)
    return path


async def _get(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with session.get(url, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r.status, r.headers.get("X-Cache", "")


async def _warm(session: aiohttp.ClientSession, nodes: list[str], path: str) -> None:
    for node in nodes:
        for _ in range(50):
            _, x_cache = await _get(session, node + path)
            if x_cache == "HIT":
                break
        else:
            raise SystemExit(f"{node}{path} is never a HIT")


async def _gone_at(session: aiohttp.ClientSession, url: str, deadline: float) -> tuple[float, int]:
    """perf_counter() when `url` first answered 504 to only-if-cached, and the probes sent."""
    probes = 0
    while True:
        status, _ = await _get(session, url, headers=PROBE)
        probes += 1
        now = time.perf_counter()
        if status == 504:
            return now, probes
        if now > deadline:
            raise SystemExit(f"{url} still cached 10 s after its purge")


async def measure(topo: Topology, purges: int) -> dict[str, list[float]]:
    nodes = topo.node_urls
    auth = {"Authorization": f"Bearer {topo.purge_token}"}
    out: dict[str, list[float]] = {
        "answer": [],
        "after": [],
        "from_send": [],
        "acks": [],
        "first_probe": [],
    }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        for i in range(purges):
            path = f"/api/misc/heavy?name=purge-lat-{i}"
            await _warm(session, nodes, path)
            t0 = time.perf_counter()
            async with session.post(
                nodes[i % len(nodes)] + "/_edge/purge", json={"urls": [path]}, headers=auth
            ) as r:
                answer = await r.json()
                if r.status != 200:
                    raise SystemExit(f"purge failed: HTTP {r.status} {answer}")
            t1 = time.perf_counter()
            seen = await asyncio.gather(*(_gone_at(session, n + path, t1 + 10) for n in nodes))
            last = max(at for at, _ in seen)
            out["answer"].append((t1 - t0) * 1000)
            out["after"].append((last - t1) * 1000)
            out["from_send"].append((last - t0) * 1000)
            out["first_probe"].append(float(all(probes == 1 for _, probes in seen)))
            acks = answer.get("acks", {})
            out["acks"].append(float(acks.get("received", 0) == acks.get("expected", -1)))
    return out


def _row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"{name:<22} median {statistics.median(values):7.2f}   p95 {p95:7.2f}   "
        f"max {max(values):7.2f}   min {min(values):7.2f}"
    )


async def measure_on(redis_url: str, edges: int, purges: int, port: int) -> dict[str, list[float]]:
    """`measure` on a fresh topology of `edges` nodes sharing `redis_url` (one Redis, a
    Sentinel set or a cluster) under a fresh key prefix, deleted afterwards."""
    prefix = f"woody-purge-lat-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="purge-lat-") as tmp:
        config = TopologyConfig(
            edges=edges,
            redis_url=redis_url,
            edge_port=port,
            origin_port=port + 1,
            node_base_port=port + 10,
            heavy_seconds=0,
            db_seconds=0,
            edge_config=str(config_copy(prefix, Path(tmp))),
            log_dir=Path(tmp) / "logs",
            cwd=ROOT,
        )
        async with Topology(config) as topo:
            results = await measure(topo, purges)
        from edge.config.redis_url import parse_url

        if parse_url(redis_url).failover:
            return results  # a Sentinel set or a cluster of the bench's own: thrown away
        try:
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        except Exception as exc:  # cleanup only
            print(f"(could not delete {prefix}* keys: {exc})", file=sys.stderr)
    return results


async def run(args: argparse.Namespace) -> int:
    results = await measure_on(args.redis, args.edges, args.purges, args.port)
    print(f"{args.purges} URL purges over {args.edges} edge nodes sharing {args.redis}, ms:")
    print(_row("purge answer", results["answer"]))
    print(_row("answer -> last MISS", results["after"]))
    print(_row("send -> last MISS", results["from_send"]))
    complete = int(sum(results["acks"]))
    print(f"answers with every node's acknowledgement: {complete}/{args.purges}")
    first = int(sum(results["first_probe"]))
    print(f"purges every node had applied when the answer came (first probe MISS): {first}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.purge_latency", description=__doc__)
    parser.add_argument("--purges", type=int, default=50)
    parser.add_argument("--edges", type=int, default=3)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--port", type=int, default=18180, help="edge port; origin +1, nodes +11, +12..."
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
