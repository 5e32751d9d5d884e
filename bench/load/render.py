"""The report of `bench load`: ratios edge ÷ peer, the Markdown, the chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from bench import report
from bench.load.scenario import CPU_METRIC, Metric, Outcome, Scenario
from bench.load.scenarios import REGISTRY

if TYPE_CHECKING:
    from bench.load.run import LoadRun

PEERS = ("nginx", "varnish", "floor", "floor-hit")


def find(outcomes: list[Outcome], scenario: str, server: str) -> Outcome | None:
    for outcome in outcomes:
        if outcome.scenario == scenario and outcome.server == server:
            return outcome
    return None


def value(outcome: Outcome | None, metric: Metric) -> float | None:
    if outcome is None or outcome.error:
        return None
    try:
        return metric.value(outcome)
    except (TypeError, KeyError, AttributeError):
        return None


def round_ratios(outcomes: list[Outcome], scenario: str, metric: Metric) -> dict[str, list[float]]:
    """The ratio edge/peer in each round (round i of both ran back to back)."""
    key = metric.round_key
    edge = find(outcomes, scenario, "edge")
    out: dict[str, list[float]] = {}
    if key is None or edge is None:
        return out
    for peer in PEERS:
        other = find(outcomes, scenario, peer)
        if other is None:
            continue
        pairs = zip(edge.extra.get("rounds", []), other.extra.get("rounds", []), strict=False)
        out[f"edge/{peer}"] = [e[key] / p[key] for e, p in pairs if p.get(key) and key in e]
    return out


def ratios(outcomes: list[Outcome], scenario: str, metric: Metric) -> dict[str, float | None]:
    """edge/peer of the metric: the median of the paired per-round ratios where there are
    rounds, else the ratio of the two values."""
    edge = value(find(outcomes, scenario, "edge"), metric)
    out: dict[str, float | None] = {}
    for peer in PEERS:
        other = value(find(outcomes, scenario, peer), metric)
        out[f"edge/{peer}"] = edge / other if edge is not None and other else None
    for key, values in round_ratios(outcomes, scenario, metric).items():
        if values:
            out[key] = statistics.median(values)
    return out


def ratio_line(outcomes: list[Outcome], scenario: str, metric: Metric) -> str:
    spread = round_ratios(outcomes, scenario, metric)

    def fmt(k: str, v: float | None) -> str:
        if v is None:
            return f"{k} = n/a"
        rs = spread.get(k, [])
        per = f" (rounds: {', '.join(f'{x:.2f}' for x in rs)})" if len(rs) > 1 else ""
        return f"{k} = {v:.2f}×{per}"

    these = ratios(outcomes, scenario, metric)
    return (
        f"Ratio ({metric.what}): "
        + ", ".join(fmt(k, v) for k, v in these.items())
        + ("" if metric.higher_is_better else " (lower is better)")
    )


def scenario_section(run: LoadRun, scenario: Scenario) -> list[str]:
    these = [oc for oc in run.outcomes if oc.scenario == scenario.letter]
    if not these:
        return []
    table = scenario.rows(run.opts, these)
    lines = [f"### {scenario.letter}. {scenario.title}", "", table.intro, ""]
    lines.append(report.markdown_table(table.headers, table.rows))
    if scenario.errors_below_table:
        lines += [f"- {oc.server}: {oc.error}" for oc in these if oc.error]
    lines.append(ratio_line(run.outcomes, scenario.letter, scenario.metric))
    if scenario.cpu:
        lines.append(ratio_line(run.outcomes, scenario.letter, CPU_METRIC))
    return [*lines, ""]


def render_markdown(run: LoadRun, started: str) -> str:
    o = run.opts
    chosen = [REGISTRY[s] for s in o.scenarios]
    wrk_ones = "/".join(s.letter for s in chosen if s.metric.round_key)
    others = "/".join(s.letter for s in chosen if not s.metric.round_key)
    loaders = [f"{'wrk' if run.wrk else 'aiohttp (ours)'} for {wrk_ones}"] if wrk_ones else []
    loaders += [f"aiohttp (ours) for {others}"] if others else []
    lines = [
        f"## Load test ({started}, code at {report.git_rev()})",
        "",
        f"Loader: {', '.join(loaders)}; {o.duration:g} s per measurement; edge workers "
        f"{o.edge_workers}, nginx 2 workers, Varnish default threads; all on this machine's "
        "loopback.",
        f"Fast origin: {run.origins.get('fast', '-')}; API origin: {run.origins.get('api', '-')}.",
        "Ratios are edge ÷ peer from this one run.",
        "",
    ]
    if o.edge_sections:
        keys = ", ".join(
            f"{section}.{key}={json.dumps(value)}"
            for section, values in o.edge_sections.items()
            for key, value in values.items()
        )
        lines[-1:-1] = [f"The edge on config/edge.yaml with {keys} (`--edge-set`)."]
    if run.missing:
        lines += [f"Not run: {', '.join(f'{k} ({v})' for k, v in run.missing.items())}.", ""]
    for scenario in chosen:
        lines += scenario_section(run, scenario)
    return "\n".join(lines)


def chart(run: LoadRun, path: Path) -> Path:
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for s in run.opts.scenarios:
        scenario = REGISTRY[s]
        if not scenario.latency_chart:
            continue
        curves = {
            oc.server: oc.result.percentiles_ms
            for oc in run.outcomes
            if oc.scenario == s and oc.result and oc.result.percentiles_ms
        }
        if curves:
            panels[f"{s}. {scenario.title}"] = curves
    return report.percentile_chart(path, panels, "Latency by percentile (same run, same origin)")
