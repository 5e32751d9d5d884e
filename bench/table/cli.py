"""`python -m bench table`: its options, and the run from them to the published report."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from bench import report
from bench.progress import Progress
from bench.servers import resolve_impl
from bench.table.measure import TableRun
from bench.table.model import ALL_ROWS, LAB_DELAYS, LAB_TABLE, QUICK_DELAYS, Delays
from bench.table.render import chart, render_markdown


def parse_targets(values: list[str]) -> dict[str, str]:
    targets: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"--target wants NAME=http(s)://..., got {value!r}")
        targets[name] = url
    return targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scaled-down delays (heavy 0.2 s, DB 0.3 s, 3 MB/s) instead of the lab's",
    )
    parser.add_argument("--heavy-seconds", type=float, default=None)
    parser.add_argument("--db-seconds", type=float, default=None)
    parser.add_argument("--static-rate", type=int, default=None, help="bytes/s, 0 = no limit")
    parser.add_argument(
        "--rows",
        default="all",
        help=f"comma-separated rows to run, or 'all' or 'none': {','.join(ALL_ROWS)}",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="also measure a deployment that already runs (repeatable)",
    )
    parser.add_argument("--hits", type=int, default=3, help="hit calls per column (median)")
    parser.add_argument(
        "--origin",
        dest="origin_impl",
        choices=("auto", "real", "standin"),
        default="auto",
        help="the project's origin (real), the bench stand-in, or real when present (auto)",
    )
    parser.add_argument("--edge-workers", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--out", type=Path, default=report.DEFAULT_OUT)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--no-files", action="store_true", help="write nothing under --out")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> int:
    base = QUICK_DELAYS if args.quick else LAB_DELAYS
    delays = Delays(
        args.heavy_seconds if args.heavy_seconds is not None else base.heavy_seconds,
        args.db_seconds if args.db_seconds is not None else base.db_seconds,
        args.static_rate if args.static_rate is not None else base.static_rate,
    )
    if args.rows == "all":
        rows = list(ALL_ROWS)
    elif args.rows == "none":
        rows = []
    else:
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        print_fn(f"unknown rows: {', '.join(unknown)} (known: {', '.join(ALL_ROWS)})")
        return 2
    targets = parse_targets(args.target)
    origin_impl = resolve_impl(args.origin_impl) if any(r != "gcore" for r in rows) else "-"
    run = TableRun(
        delays=delays,
        rows=rows,
        targets=targets,
        redis_url=args.redis,
        hits=max(1, args.hits),
        origin_impl=args.origin_impl,
        edge_workers=args.edge_workers,
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    total = sum(run.expected(k) for k in rows) + len(targets) * run.expected("target")
    with Progress(total, label="bench table", enabled=not args.quiet) as progress:
        run.progress = progress
        asyncio.run(run.run())
    origin_label = {"real": "python -m origin serve", "standin": "bench stand-in origin"}.get(
        origin_impl, origin_impl
    )
    markdown = render_markdown(run, origin_label, started)
    data = {
        "kind": "table",
        "started": started,
        "run_id": run.run_id,
        "origin": origin_impl,
        "delays": delays.as_json(),
        "hits": run.hits,
        "machine": report.machine(),
        "rows": [r.as_json() for r in run.results],
        "lab_table": LAB_TABLE,
    }
    report.publish(
        "table",
        markdown,
        data,
        lambda path: chart(run, path),
        args.out,
        write_files=not args.no_files,
        as_json=args.json,
        print_fn=print_fn,
    )
    return 0
