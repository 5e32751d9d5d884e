"""The report of `bench table`: the Markdown (with the lab's table quoted) and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report
from bench.table.measure import TableRun
from bench.table.model import COLUMNS, LAB_TABLE, RANGE_HEADER, RANGE_PATH


def render_markdown(run: TableRun, origin_impl: str, started: str) -> str:
    headers = ["configuration"] + [f"{m} {p}" for m, p in COLUMNS] + ["notes"]
    body: list[list[str]] = []
    for row in run.results:
        cells = []
        for m, p in COLUMNS:
            value = row.cells.get(f"{m}_{p}")
            text = report.seconds(value)
            if row.quoted and value is not None:
                text += " (quoted)"
            if f"{m}_{p}" in row.flags:
                text += " †"
            cells.append(text)
        notes = [row.note] if row.note else []
        notes += [f"{k}: {v}" for k, v in row.flags.items()]
        page = [s for s in row.samples if s.metric == "page" and s.error is None]
        if page:
            notes.append(f"page = {page[0].files} files, {page[0].bytes / 1e6:.2f} MB")
        body.append([row.label, *cells, "; ".join(notes)])
    d = run.delays
    lines = [
        f"## Lab table 7.1 reproduced ({started}, code at {report.git_rev()})",
        "",
        f"Origin: {origin_impl}; heavy {d.heavy_seconds:g} s, DB {d.db_seconds:g} s, "
        f"static {d.static_rate / 1024:g} KB/s per response; hit = median of {run.hits} "
        "calls after the miss (one call where nothing caches the answer). "
        "Every number below comes from this one run on this machine.",
        "",
        report.markdown_table(headers, body, left=(0, -1)),
        "† the response contradicts the column (e.g. a 'miss' served as a HIT); see the JSON.",
        "",
        f"range = `Range: {RANGE_HEADER}` of `{RANGE_PATH}`, on a cold cache of its own (each "
        "row's servers are started again for it).",
        "",
        "### The lab's own table 7.1 (quoted)",
        "",
        report.markdown_table(
            ["version", "recursive page load", "heavy API", "DB API"],
            [
                [
                    str(r["version"]),
                    _lab_cell(r["page"]),
                    _lab_cell(r["heavy"], r.get("heavy_hit")),
                    _lab_cell(r["db"], r.get("db_hit")),
                ]
                for r in LAB_TABLE
            ],
        ),
    ]
    return "\n".join(lines)


def _lab_cell(value: Any, hit: Any = None) -> str:
    text = f"{value:.3f} s" if isinstance(value, float) else str(value)
    if hit is not None:
        text = f"{text} miss / {hit:.3f} s hit"
    return text


def chart(run: TableRun, path: Path) -> Path:
    groups = [r.label for r in run.results]
    series = {f"{m} {p}": [r.cells.get(f"{m}_{p}") for r in run.results] for m, p in COLUMNS}
    return report.bar_chart(
        path,
        "Lab table 7.1 reproduced: miss and hit per configuration (hatched: quoted)",
        groups,
        series,
        hatched=[r.quoted for r in run.results],
    )
