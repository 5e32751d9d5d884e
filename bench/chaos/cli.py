"""`python -m bench chaos`: run the suite, print what it counted and the verdict."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.chaos.common import say
from bench.chaos.report import LONG, SHORT, summary, verdict
from bench.chaos.suite import run
from bench.procs import REPO


def main(argv: list[str] | None = None) -> int:
    import bench.chaos as package  # its docstring is the help text

    parser = argparse.ArgumentParser(
        prog="python -m bench chaos",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--short", action="store_true", help="the short run of make test")
    parser.add_argument("--memory", action="store_true", help="only the bounded-memory run")
    parser.add_argument("--no-memory", action="store_true", help="skip the bounded-memory run")
    parser.add_argument(
        "--hostile", action="store_true", help="only the hostile-memory run (bench.chaos.hostile)"
    )
    parser.add_argument(
        "--settle", type=float, default=60.0, help="hostile: seconds before the PSS after"
    )
    parser.add_argument("--json", type=Path, help="write the counts here as JSON")
    args = parser.parse_args(argv)
    profile = SHORT if args.short else LONG
    work = REPO / "var" / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    say(f"logs and databases in {work}")
    if args.hostile:
        return _hostile(work, args.settle, args.json)
    try:
        import uvloop

        report = uvloop.run(run(profile, work, faults=not args.memory, memory=not args.no_memory))
    except KeyboardInterrupt:
        return 130
    print(summary(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2, default=str))
    bad = verdict(report)
    print("\nverdict: " + ("PASS" if not bad else "FAIL\n  " + "\n  ".join(bad)), flush=True)
    return 0 if not bad else 1


def _hostile(work: Path, settle: float, out: Path | None) -> int:
    import asyncio

    from bench.chaos.hostile import run_hostile, table

    try:
        result = asyncio.run(run_hostile(work, settle))
    except KeyboardInterrupt:
        return 130
    print("\n== bench chaos --hostile ==\n" + table(result), flush=True)
    if out:
        out.write_text(json.dumps(result, indent=2, default=str))
    return 0 if not result["verdict"] else 1
