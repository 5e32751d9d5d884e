"""`bytes`: the bytes a browser downloads for the page, compression on and off."""

from __future__ import annotations

import time
from typing import Any

from bench.delivery.browser import edge_config, load, short
from bench.procs import ProcessGroup
from bench.servers import OriginSpec, start_edge, start_origin


def bytes_run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, compression in (("on", True), ("off", False)):
        with ProcessGroup() as group:
            origin = start_origin(
                group, OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=0)
            )
            cfg = edge_config(group, f"edge-{label}", {"compression": {"enabled": compression}})
            edge = start_edge(group, origin.url, node=f"edge-{label}", config=cfg)
            cold = load(edge.url + "/")
            # The first hits that accept a coding get identity and ask for the coded copies
            # (edge.engine.compress: made on first demand, in the background); later hits get them.
            load(edge.url + "/")
            time.sleep(1.0)
            warm = load(edge.url + "/")
            out[label] = {"cold": cold, "warm": warm}
    return out


def bytes_table(data: dict[str, Any]) -> str:
    text = (".html", "/", ".css", ".js", ".svg")
    lines = [
        "| resource | decoded bytes | off: on the wire | on, cold edge: on the wire | "
        "on, warm edge: on the wire |",
        "| :--- | ---: | ---: | ---: | ---: |",
    ]
    totals = {"decoded": 0, "off": 0, "cold": 0, "warm": 0}
    image = {"off": 0, "cold": 0, "warm": 0}

    def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {short(e["name"]): e for e in entries}

    off = by_name(data["off"]["warm"])
    cold = by_name(data["on"]["cold"])
    warm = by_name(data["on"]["warm"])
    for name in sorted(off):
        o, c, w = off[name], cold.get(name, {}), warm.get(name, {})
        if not name.endswith(text):
            image["off"] += o["transfer"]
            image["cold"] += c.get("transfer", 0)
            image["warm"] += w.get("transfer", 0)
            continue
        totals["decoded"] += o["decoded"]
        totals["off"] += o["transfer"]
        totals["cold"] += c.get("transfer", 0)
        totals["warm"] += w.get("transfer", 0)
        lines.append(
            f"| {name} | {o['decoded']:,} | {o['transfer']:,} | {c.get('transfer', 0):,} "
            f"({c.get('encoded', 0):,} body) | {w.get('transfer', 0):,} "
            f"({w.get('encoded', 0):,} body) |"
        )
    lines.append(
        f"| **page + text assets** | {totals['decoded']:,} | {totals['off']:,} | "
        f"{totals['cold']:,} | {totals['warm']:,} |"
    )
    lines.append(
        f"| 5mo.jpg (never compressed) | | {image['off']:,} | {image['cold']:,} | "
        f"{image['warm']:,} |"
    )
    return "\n".join(lines)
