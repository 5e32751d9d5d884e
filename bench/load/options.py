"""The options of `bench load`: the command line and what it becomes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report

CACHES = ("edge", "nginx", "varnish", "floor", "floor-hit")
DEFAULT_CACHES = ("edge", "nginx", "varnish")  # the floor is asked for by name


@dataclass
class Options:
    duration: float = 8.0
    rounds: int = 3
    connections: int = 64
    large_connections: int = 8
    threads: int = 2
    scenarios: str = "abcde"
    """Letters to run, in order; the command line's default is every registered scenario."""
    edge_workers: int = 2
    caches: tuple[str, ...] = DEFAULT_CACHES
    herd: int = 32
    herd_seconds: float = 1.0
    keys: int = 200
    zipf_s: float = 1.0
    write_ratio: float = 0.05
    mixed_connections: int = 16
    miss_requests: int = 300
    origin_impl: str = "auto"
    loader: str = "auto"
    redis_url: str | None = None
    edge_sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`--edge-set` keys over config/edge.yaml's, by section (e.g. node_cache: enabled)."""

    @property
    def round_seconds(self) -> float:
        """Hit scenarios split --duration into rounds of whole seconds (wrk's unit)."""
        return float(max(1, round(self.duration / max(1, self.rounds))))


def add_arguments(parser: argparse.ArgumentParser, known: str) -> None:
    """`known`: the registered scenario letters, all run by default."""
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="hit scenarios: split --duration into rounds"
    )
    parser.add_argument("--connections", type=int, default=64, help="connections for a (1 KB)")
    parser.add_argument("--large-connections", type=int, default=8, help="connections for b")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    every = ",".join(known)
    parser.add_argument("--scenarios", default=every, help=f"comma-separated: {every}")
    parser.add_argument("--edge-workers", type=int, default=2)
    parser.add_argument(
        "--redis",
        default=None,
        help="give the edge its shared Redis tier (its workers then collapse misses together)",
    )
    parser.add_argument(
        "--edge-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a key of the edge's configuration over config/edge.yaml's, for what a feature "
        "costs (e.g. node_cache.enabled=false); repeatable, the value read as YAML",
    )
    parser.add_argument(
        "--caches",
        default=",".join(DEFAULT_CACHES),
        help="edge,nginx,varnish; floor (bench.floor: the stack's cost without a cache) and "
        "floor-hit (bench.floor --hit: the least a cache does for a hit), in a, h and j "
        "(and floor in e: bench.floor --proxy, the least a proxy does for a miss), "
        "when named",
    )
    parser.add_argument("--herd", type=int, default=32, help="concurrent cold requests in c")
    parser.add_argument("--herd-seconds", type=float, default=1.0, help="heavy call time in c")
    parser.add_argument("--keys", type=int, default=200, help="distinct URLs in d")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent in d")
    parser.add_argument("--mixed-connections", type=int, default=16)
    parser.add_argument("--miss-requests", type=int, default=300, help="misses per server in e")
    parser.add_argument("--loader", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument(
        "--origin", dest="origin_impl", choices=("auto", "real", "standin"), default="auto"
    )
    parser.add_argument("--out", type=Path, default=report.DEFAULT_OUT)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--no-files", action="store_true", help="write nothing under --out")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def options_from(args: argparse.Namespace, known: str) -> Options:
    scenarios = "".join(s.strip() for s in args.scenarios.split(",") if s.strip())
    bad = [s for s in scenarios if s not in known]
    if bad:
        raise SystemExit(f"unknown scenarios: {','.join(bad)} (known: {','.join(known)})")
    caches = tuple(c.strip() for c in args.caches.split(",") if c.strip())
    bad = [c for c in caches if c not in CACHES]
    if bad:
        raise SystemExit(f"unknown caches: {','.join(bad)} (known: {','.join(CACHES)})")
    return Options(
        duration=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        large_connections=args.large_connections,
        threads=args.threads,
        scenarios=scenarios,
        edge_workers=args.edge_workers,
        caches=caches,
        herd=args.herd,
        herd_seconds=args.herd_seconds,
        keys=args.keys,
        zipf_s=args.zipf,
        mixed_connections=args.mixed_connections,
        miss_requests=args.miss_requests,
        origin_impl=args.origin_impl,
        loader=args.loader,
        redis_url=args.redis,
        edge_sections=edge_sections(args.edge_set),
    )


def edge_sections(settings: list[str]) -> dict[str, dict[str, Any]]:
    """`--edge-set` values as configuration sections: ["node_cache.enabled=false"] ->
    {"node_cache": {"enabled": False}}."""
    import yaml

    sections: dict[str, dict[str, Any]] = {}
    for setting in settings:
        name, eq, raw = setting.partition("=")
        section, dot, key = name.strip().partition(".")
        if not (eq and dot and section and key):
            raise SystemExit(f"--edge-set {setting!r}: expected SECTION.KEY=VALUE")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise SystemExit(f"--edge-set {setting!r}: the value is not YAML ({exc})") from exc
        sections.setdefault(section, {})[key] = value
    return sections
