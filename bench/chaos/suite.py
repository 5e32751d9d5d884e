"""The chaos runs: the fault run (a topology, then every phase) and the bounded-memory run."""

from __future__ import annotations

import os
import random
from pathlib import Path

from bench.chaos.common import edge_yaml, say
from bench.chaos.memory import run_memory
from bench.chaos.phases import PHASES, Run
from bench.chaos.report import LONG, Profile, Report
from bench.procs import free_block, free_port
from bench.topology import Topology, TopologyConfig


async def run_faults(profile: Profile, tmp: Path, report: Report) -> None:
    """Origin, a redis-server of its own and `profile.edges` nodes; every phase in turn."""
    redis_port = free_port()
    tag = f"{os.getpid()}x{random.randint(0, 1 << 20)}"
    db = tmp / "origin.sqlite3"
    config = edge_yaml(
        tmp,
        redis={"prefix": f"chaos-{tag}"},
        timeouts={"connect": "1s", "read": "10s", "origin_down": "1s"},
        limits={"max_connections": 4096},
    )
    topo = Topology(
        TopologyConfig(
            edges=profile.edges,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            edge_port=free_port(),
            origin_port=free_port(),
            node_base_port=free_block(profile.edges),
            heavy_seconds=0.05,
            db_seconds=0.05,
            static_rate=0,
            origin_db=str(db),
            edge_config=str(config),
            log_dir=tmp / "logs",
            startup_timeout=60,
        )
    )
    say(f"starting origin, redis-server :{redis_port} and {profile.edges} edge nodes")
    await topo.start()
    try:
        assert any(s.role == "redis" for s in topo.services), "chaos needs its own redis-server"
        run = Run(topo, profile, report, tag, db)
        for phase in PHASES:
            await phase(run)
    finally:
        for s in topo.services:
            if s.role == "edge" and not s.running:
                report.crashes += 1
                report.crash_notes.append(f"{s.name} exited: {s.log_tail(5)}")
        await topo.stop()
        for s in topo.services:
            if s.role == "edge":
                n = s.log_path.read_text(errors="replace").count("Traceback")
                if n:
                    report.crash_notes.append(f"{s.name}: {n} traceback(s) in its log")


async def run(profile: Profile, tmp: Path, faults: bool = True, memory: bool = True) -> Report:
    report = Report("long" if profile is LONG else "short")
    if faults:
        await run_faults(profile, tmp, report)
    if memory:
        say(
            f"memory: {profile.memory_objects} distinct objects of {profile.memory_object_bytes} "
            f"bytes through a {profile.memory_tier_mb} MiB tier"
        )
        report.memory = await run_memory(
            profile.memory_tier_mb, profile.memory_objects, profile.memory_object_bytes, tmp
        )
        say(f"memory: {report.memory}")
    return report
