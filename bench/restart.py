"""`python -m bench.restart`: does a restarted edge node serve its cache at once?

One origin with the lab's static rate (300 KB/s per response by default), one edge node with
its node tier on disk (`node_cache.path` in a directory of the run). The shop's page and
everything it references (the 5 MB image too) are loaded recursively, as `bench table` does:
cold (the misses fill the cache), then warm; then the node is stopped and a new one started
on the same directory, once after a clean stop (SIGTERM) and once after a crash (SIGKILL of
the whole process group), and the page is loaded again. The first answer after each restart
is the page's HTML: its `X-Cache` says whether the cache survived. A Markdown table on
stdout; `bench/results/restart-<stamp>.md/.json/.png` unless `--no-files`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import report
from bench.fetcher import PageLoad, fetch_page
from bench.procs import REPO, ProcessGroup
from bench.progress import Progress
from bench.servers import OriginSpec, Server, start_edge, start_origin

RESULTS = REPO / "bench" / "results"


def _edge_config(group: ProcessGroup, node_path: Path) -> Path:
    raw = yaml.safe_load((REPO / "config" / "edge.yaml").read_text())
    raw["node_cache"] = {**(raw.get("node_cache") or {}), "enabled": True, "path": str(node_path)}
    path = group.subdir("edge-config") / "edge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _load(edge: Server) -> PageLoad:
    page = asyncio.run(fetch_page(edge.url + "/"))
    if not page.ok:
        raise RuntimeError(f"page load through {edge.url} failed: {page.errors}")
    return page


def _row(label: str, loads: list[PageLoad]) -> dict[str, Any]:
    first = loads[0].resources[0] if loads[0].resources else None
    return {
        "load": label,
        "seconds": statistics.median(p.seconds for p in loads),
        "runs": len(loads),
        "first_x_cache": first.x_cache if first else None,
        "x_cache": [r.x_cache for p in loads for r in p.resources],
        "bytes": loads[0].total_bytes,
        "files": len(loads[0].resources),
    }


def _cold_seconds(static_rate: int) -> float:
    return 5.06e6 / max(static_rate, 1)  # the page is 5.06 MB; slices may make it faster


def run(workers: int, static_rate: int, warm: int, progress: Progress) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with ProcessGroup() as group:
        node_path = group.subdir("node-cache")
        config = _edge_config(group, node_path)
        origin = start_origin(
            group, OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=static_rate)
        )

        def edge() -> Server:
            return start_edge(
                group, origin.url, node="edge-restart", workers=workers, config=config
            )

        node = edge()
        with progress.step("cold page (the misses fill the node tier)", _cold_seconds(static_rate)):
            rows.append(_row("cold, first start", [_load(node)]))
        with progress.step("warm page", 0.1 * warm):
            rows.append(_row("warm, before the restarts", [_load(node) for _ in range(warm)]))
        for how, label in (("stop", "clean stop (SIGTERM)"), ("kill", "crash (SIGKILL)")):
            with progress.step(f"{how} the node, start a new one on the same directory", 4.0):
                for child in node.managed:
                    if how == "stop":
                        child.stop()
                    else:
                        child.kill()
                began = time.monotonic()
                node = edge()
                started = time.monotonic() - began
            with progress.step(f"page after the {how}", 0.1 * warm):
                row = _row(f"after a {label}", [_load(node) for _ in range(warm)])
            row["restart_seconds"] = started
            rows.append(row)
    return {"rows": rows, "workers": workers, "static_rate": static_rate, "rev": report.git_rev()}


def markdown(data: dict[str, Any]) -> str:
    head = (
        f"## Restart with the node tier on disk ({report.stamp()}, code at {data['rev']})\n\n"
        f"One edge node ({data['workers']} workers), `node_cache.path` on disk; the origin's "
        f"static files at {data['static_rate'] // 1024} KB/s per response. Page = `/` and "
        "everything it references (5 files with the 5 MB image), loaded recursively on one "
        "connection; the median of the runs.\n\n"
    )
    rows = [
        [
            r["load"],
            report.seconds(r["seconds"]),
            str(r["runs"]),
            str(r["first_x_cache"]),
            ", ".join(f"{v}×{r['x_cache'].count(v)}" for v in sorted(set(map(str, r["x_cache"])))),
            report.seconds(r.get("restart_seconds")) if "restart_seconds" in r else "",
        ]
        for r in data["rows"]
    ]
    headers = ["load", "page", "runs", "first answer", "X-Cache of every file", "new node ready in"]
    return head + report.markdown_table(headers, rows)


def _chart(data: dict[str, Any], path: Path) -> Path:
    rows = data["rows"]
    return report.bar_chart(
        path,
        "Page load through a restarted edge (node tier on disk)",
        [r["load"] for r in rows],
        {"page load": [r["seconds"] for r in rows]},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--static-rate", type=int, default=300 * 1024, help="bytes/s per response")
    parser.add_argument("--warm", type=int, default=3, help="page loads per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-files", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    expected = 20.0 + _cold_seconds(args.static_rate)
    progress = Progress(expected, label="restart", enabled=not args.quiet)
    with progress:
        data = run(args.workers, args.static_rate, args.warm, progress)
    report.publish(
        "restart",
        markdown(data),
        data,
        lambda p: _chart(data, p),
        args.out,
        write_files=not args.no_files,
        as_json=args.json,
        print_fn=print,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
