"""The shared tier on one Redis, a Sentinel set and a Redis Cluster, measured (issue 29).

    python -m bench.redis_modes                  # everything, about 5 minutes on 2 cores
    python -m bench.redis_modes --only purge,failover --purges 50

- purge: a URL purge through one of 3 edge processes until the last of them answers MISS
  (`bench.purge_latency`), p50 / p99, on each mode;
- reads: shared-tier reads per second (`RedisTier.get` of stored 4 KiB objects, 64 at a
  time, from one Python process: the edge's own client code), and the CPU each side used;
- capacity: distinct 4 KiB objects stored until eviction, with the same `maxmemory` per
  Redis process, one Redis against a cluster of 3 primaries;
- failover: a primary killed while 3 edge processes are loaded (`bench.failover`; the
  cluster's `cluster-node-timeout` and Sentinel's `down-after-milliseconds` 5 s).

The single mode uses the Redis at --redis (the machine's); the Sentinel set and the cluster
are ours (`bench.redis_sets`). Results: bench/results/redis-modes-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.failover import FailoverResult, failover_run, table, warm
from bench.purge_latency import ROOT, config_copy, measure_on
from bench.redis_sets import Node, RedisCluster, SentinelSet, free_ports, server_argv
from bench.topology import Topology, TopologyConfig
from edge.cache.entry import Entry
from edge.store.purge_bus import generation_key
from edge.store.redis_conn import close_client, make_client
from edge.store.redis_tier import RedisTier
from edge.store.storage import Purge

RESULTS = ROOT / "bench" / "results"
KIB4 = b"x" * 4096


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _entry(key: str) -> Entry:
    now = time.time()
    headers = (("Content-Type", "text/plain"), ("Cache-Control", "max-age=3600"))
    return Entry(key, 200, headers, KIB4, now - 0.01, now, meta={"ttl": 3600.0})


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _redis_pids(url: str) -> list[int]:
    """The pids of the primaries behind `url` (all on this machine, loopback)."""
    client = make_client(url, 2.0)
    try:
        if hasattr(client, "get_primaries"):
            await client.initialize()
            pids = []
            for node in client.get_primaries():
                info = await client.info("server", target_nodes=node)
                pids.append(int(info["process_id"]))
            return pids
        info = await client.info("server")
        return [int(info["process_id"])]
    finally:
        await close_client(client, "bench")


# -- purge latency -------------------------------------------------------------------------


async def purge_latency(urls: dict[str, str], purges: int, port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (mode, url) in enumerate(urls.items()):
        got = await measure_on(url, 3, purges, port + 100 * i)
        send = got["from_send"]
        out[mode] = {
            "purges": purges,
            "to_last_node_ms": {
                "p50": round(statistics.median(send), 2),
                "p99": round(_quantile(send, 0.99), 2),
                "max": round(max(send), 2),
            },
            "answer_ms": {
                "p50": round(statistics.median(got["answer"]), 2),
                "p99": round(_quantile(got["answer"], 0.99), 2),
            },
            "all_acknowledged": int(sum(got["acks"])),
        }
        print(mode, json.dumps(out[mode]), flush=True)
    return out


# -- reads per second ----------------------------------------------------------------------


async def reads(urls: dict[str, str], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, url in urls.items():
        out[mode] = await _reads_on(url, seconds)
        print(mode, json.dumps(out[mode]), flush=True)
    return out


async def _reads_on(url: str, seconds: float, objects: int = 2000) -> dict[str, Any]:
    tier = RedisTier(url, prefix=f"woody-reads-{uuid.uuid4().hex[:8]}", sweep_every=0)
    await tier.start()
    keys = [f"http://reads.example/{i}" for i in range(objects)]
    for i in range(0, objects, 100):
        await asyncio.gather(*(tier.put(_entry(k), time.time() + 600) for k in keys[i : i + 100]))
    pids = await _redis_pids(url)
    done = 0
    stop = time.monotonic() + seconds

    async def reader(j: int) -> None:
        nonlocal done
        n = j
        while time.monotonic() < stop:
            got = await tier.get(keys[n % objects])
            assert got, "a stored object was not read back"
            done += 1
            n += 7

    redis_before = sum(_cpu_seconds(p) for p in pids)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(reader(j) for j in range(64)))
    wall = time.monotonic() - t0
    client_cpu = (time.process_time() - cpu0) / wall
    redis_cpu = (sum(_cpu_seconds(p) for p in pids) - redis_before) / wall
    await tier.purge(Purge(all=True), announce=False)
    await tier.close()
    return {
        "gets_per_second": round(done / wall),
        "client_cpu_cores": round(client_cpu, 2),
        "redis_cpu_cores": round(redis_cpu, 2),
        "redis_processes": len(pids),
    }


# -- capacity ------------------------------------------------------------------------------


async def _fill(url: str, objects: int) -> int:
    """Store `objects` distinct 4 KiB objects; returns how many are still there."""
    tier = RedisTier(url, prefix="cap", sweep_every=0, timeout=2.0, max_concurrency=64)
    await tier.start()
    for i in range(0, objects, 200):
        await asyncio.gather(
            *(
                tier.put(_entry(f"http://cap.example/{j}"), time.time() + 3600)
                for j in range(i, i + 200)
            )
        )
    await tier.close()
    return objects


def _held(nodes: list[Node]) -> int:
    held = 0
    for node in nodes:
        client = node.client()
        if client.execute_command("ROLE")[0] == b"master":
            held += sum(1 for _ in client.scan_iter(match="cap:obj:*", count=1000))
    return held


async def capacity(maxmemory: str, objects: int, workdir: Path) -> dict[str, Any]:
    port = free_ports(1)[0]
    single = Node(port, server_argv(port, workdir, maxmemory), workdir / f"cap-{port}.log")
    single.start()
    cluster = RedisCluster(workdir, maxmemory=maxmemory).start()
    try:
        await _fill(f"redis://127.0.0.1:{port}/0", objects)
        await _fill(cluster.url, objects)
        one, three = _held([single]), _held(cluster.nodes)
    finally:
        single.stop()
        cluster.stop()
    out = {
        "maxmemory_per_process": maxmemory,
        "object_bytes": len(KIB4),
        "stored": objects,
        "held_single": one,
        "held_cluster_3_primaries": three,
        "ratio": round(three / one, 2) if one else None,
    }
    print("capacity", json.dumps(out), flush=True)
    return out


# -- failover ------------------------------------------------------------------------------


async def failover(
    mode: str, made: RedisCluster | SentinelSet, port: int, keep: Path | None = None
) -> FailoverResult:
    prefix = f"woody-fo-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="redis-fo-") as tmp:
        logs = keep / mode if keep is not None else Path(tmp) / "logs"
        config = TopologyConfig(
            edges=3,
            redis_url=made.url,
            edge_port=port,
            origin_port=port + 1,
            node_base_port=port + 10,
            heavy_seconds=0,
            db_seconds=0,
            edge_config=str(config_copy(prefix, Path(tmp))),
            log_dir=logs,
            cwd=ROOT,
        )
        async with Topology(config) as topo:
            nodes = topo.node_urls
            load = [f"/api/misc/heavy?name=fo-load-{i}" for i in range(40)]
            purged = [f"/api/misc/heavy?name=fo-purge-{i}" for i in range(12)]
            async with aiohttp.ClientSession() as s:
                await warm(s, nodes, load + purged)
            probe = generation_key(prefix)
            victim = made.primary_of(probe) if isinstance(made, RedisCluster) else made.master()
            result = await failover_run(
                mode, nodes, topo.purge_token, made.url, victim.kill, probe, load, purged
            )
        leaked = [
            line
            for log in logs.glob("*.log")
            for line in log.read_text(errors="replace").splitlines()
            if "CROSSSLOT" in line or "MOVED" in line
        ]
    print(mode, json.dumps(result.as_dict()), f"CROSSSLOT/MOVED log lines: {len(leaked)}")
    if leaked:
        print("\n".join(leaked[:5]))
    return result


# -- all -----------------------------------------------------------------------------------


def _markdown(res: dict[str, Any]) -> str:
    lines = [f"# Redis modes, {res['stamp']}", ""]
    if "purge" in res:
        lines += [
            "## Purge to the last of 3 nodes (ms)",
            "",
            "| mode | p50 | p99 | max | answer p50 | answer p99 | all acknowledged |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, r in res["purge"].items():
            t, a = r["to_last_node_ms"], r["answer_ms"]
            lines.append(
                f"| {mode} | {t['p50']} | {t['p99']} | {t['max']} | {a['p50']} | {a['p99']} | "
                f"{r['all_acknowledged']}/{r['purges']} |"
            )
        lines.append("")
    if "reads" in res:
        lines += [
            "## Shared-tier reads (RedisTier.get, 64 at a time, one process)",
            "",
            "| mode | gets/s | client CPU (cores) | Redis CPU (cores) | Redis processes |",
            "|---|---:|---:|---:|---:|",
        ]
        for mode, r in res["reads"].items():
            lines.append(
                f"| {mode} | {r['gets_per_second']} | {r['client_cpu_cores']} | "
                f"{r['redis_cpu_cores']} | {r['redis_processes']} |"
            )
        lines.append("")
    if "capacity" in res:
        c = res["capacity"]
        lines += [
            "## Capacity",
            "",
            f"{c['stored']} distinct {c['object_bytes']}-byte objects stored, maxmemory "
            f"{c['maxmemory_per_process']} per process (allkeys-lru): one Redis holds "
            f"{c['held_single']}, a cluster of 3 primaries {c['held_cluster_3_primaries']} "
            f"({c['ratio']}x).",
            "",
        ]
    if "failover" in res:
        results = [FailoverResult(**r) for r in res["failover"]]
        lines += ["## Failover under load (5 s timeouts)", "", table(results)]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only.split(","))
    res: dict[str, Any] = {"stamp": time.strftime("%Y-%m-%d-%H%M%S")}
    with tempfile.TemporaryDirectory(prefix="redis-modes-") as tmp:
        work = Path(tmp)
        if only & {"purge", "reads"}:
            cluster = RedisCluster(work, node_timeout=5000).start()
            sentinel = SentinelSet(work, down_after=5000).start()
            urls = {"single": args.redis, "sentinel": sentinel.url, "cluster": cluster.url}
            try:
                if "purge" in only:
                    res["purge"] = await purge_latency(urls, args.purges, args.port)
                if "reads" in only:
                    res["reads"] = await reads(urls, args.seconds)
            finally:
                sentinel.stop()
                cluster.stop()
        if "capacity" in only:
            res["capacity"] = await capacity(args.maxmemory, args.objects, work)
        if "failover" in only:
            res["failover"] = []
            for i, mode in enumerate(("cluster", "sentinel")):
                made: RedisCluster | SentinelSet
                if mode == "cluster":
                    made = RedisCluster(work, node_timeout=5000).start()
                else:
                    made = SentinelSet(work, down_after=5000).start()
                try:
                    got = await failover(mode, made, args.port + 500 + 100 * i, args.logs)
                    res["failover"].append(got.as_dict())
                finally:
                    made.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_modes", description=__doc__)
    parser.add_argument("--only", default="purge,reads,capacity,failover")
    parser.add_argument("--purges", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="of reads per mode")
    parser.add_argument("--maxmemory", default="32mb")
    parser.add_argument("--objects", type=int, default=30000, help="stored for capacity")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the single mode")
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-files", action="store_true")
    parser.add_argument("--logs", type=Path, help="keep the failover runs' edge logs here")
    args = parser.parse_args(argv)
    res = asyncio.run(run(args))
    text = _markdown(res)
    print(text)
    if not args.no_files:
        args.out.mkdir(parents=True, exist_ok=True)
        base = args.out / f"redis-modes-{res['stamp']}"
        base.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        base.with_suffix(".md").write_text(text)
        print(f"written: {base}.json, {base}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
