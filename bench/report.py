"""Writing results: Markdown tables, JSON with every sample, PNG charts (matplotlib, Agg)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results"


def stamp() -> str:
    return time.strftime("%Y-%m-%d-%H%M%S")


def git_rev() -> str:
    """The commit the code under test was at (with '+dirty' when the tree had changes)."""
    from bench.procs import run_tool

    rev = run_tool(["git", "describe", "--always", "--dirty=+dirty"], 10, REPO)[1].strip()
    return rev or "unknown"


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they only compare within one run)."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "git": git_rev(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_kb"] = int(line.split()[1])
                break
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError, IndexError):
        pass
    return info


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)
) -> str:
    """A GitHub-flavoured Markdown table; columns in `left` left-aligned, the rest right."""
    align = [
        ":---" if i in left or i - len(headers) in left else "---:" for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def seconds(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "n/a"
    if value < 0.01:
        return f"{value * 1000:.2f} ms"
    return f"{value:.{digits}f} s"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value:.3f} ms"


def si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.1f} {unit}".rstrip()


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def publish(
    kind: str,
    markdown: str,
    data: dict[str, Any],
    draw: Callable[[Path], Path],
    out: Path,
    *,
    write_files: bool,
    as_json: bool,
    print_fn: Callable[[str], None],
) -> None:
    """Write `<kind>-<stamp>.md/.json/.png` under `out` (unless not `write_files`), then print
    the Markdown (and where it went) or, with `as_json`, the JSON."""
    if write_files:
        name = f"{kind}-{stamp()}"
        md = write_text(out / f"{name}.md", markdown)
        png = draw(out / f"{name}.png")
        data["files"] = {"markdown": str(md), "json": str(out / f"{name}.json"), "png": str(png)}
        write_json(out / f"{name}.json", data)
    if as_json:
        print_fn(json.dumps(data, default=str))
        return
    print_fn(markdown)
    if "files" in data:
        print_fn(f"written: {', '.join(data['files'].values())}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    path: Path,
    title: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    hatched: Sequence[bool] = (),
    ylabel: str = "seconds (log scale)",
) -> Path:
    """Grouped bars (one group per configuration, one bar per series) on a log axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8.0, 1.4 * len(groups) + 3), 5.0))
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs, ys, hs = [], [], []
        for g, value in enumerate(values):
            if value is not None and value > 0:
                xs.append(g - 0.4 + width * (i + 0.5))
                ys.append(value)
                hs.append(bool(hatched[g]) if g < len(hatched) else False)
        bars = ax.bar(xs, ys, width, label=name)
        for bar, hatch in zip(bars, hs, strict=True):
            if hatch:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def percentile_chart(
    path: Path,
    panels: dict[str, dict[str, list[tuple[float, float]]]],
    title: str,
) -> Path:
    """One panel per scenario: latency (ms, log) against percentile on a 'nines' axis."""
    import math

    plt = _pyplot()
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    ticks = [0.0, 50.0, 90.0, 99.0, 99.9, 99.99]
    names = list(dict.fromkeys(name for curves in panels.values() for name in curves))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=False):
        for name, all_points in curves.items():
            points = [(p, v) for p, v in all_points if p < 100.0]
            xs = [-math.log10(max(1e-6, 1 - p / 100)) for p, _ in points]
            ys = [max(v, 1e-3) for _, v in points]
            ax.plot(xs, ys, label=name, marker=".", markersize=3, color=colors[name])
        ax.set_xticks([-math.log10(1 - t / 100) for t in ticks])
        ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(panel, fontsize=9)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
