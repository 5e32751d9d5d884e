"""`/_edge/metrics`: the node's numbers (every worker summed, see `edge.ops.nodeview`) in the
Prometheus text exposition format, version 0.0.4.

Names follow Prometheus' conventions: an `edge_` prefix, base units in the name
(`_seconds`, `_bytes`), `_total` on every counter and on nothing else, one unit per
metric, labels for what varies (`result`, `kind`, `cache`). Latency is a histogram per
cache path (`edge_request_duration_seconds{cache="hit"|"miss"|"pass"}`), so
`histogram_quantile(0.99, rate(edge_request_duration_seconds_bucket{cache="hit"}[1m]))`
gives the p99 of hits. Checked by `promtool check metrics` and by prometheus-client's
parser in tests/edge/test_metrics.py.
"""

from __future__ import annotations

from typing import Any

from edge import __version__
from edge.base import ledger
from edge.base.guard import TLS_RESULTS
from edge.base.observe import PATHS
from edge.base.stats import CACHE_RESULTS

Samples = list[tuple[str, float]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


class _Text:
    def __init__(self, node: str) -> None:
        self.label = f'node="{_escape(node)}"'
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Samples) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: str, value: float) -> None:
        all_labels = f"{self.label},{labels}" if labels else self.label
        self.lines.append(f"{name}{{{all_labels}}} {_num(value)}")

    def by(self, label: str, counts: dict[str, Any]) -> Samples:
        return [(f'{label}="{_escape(str(k))}"', v) for k, v in sorted(counts.items())]


def render(
    node: str,
    merged: dict[str, Any],
    memory: dict[str, Any],
    redis_up: int,
    buckets: tuple[float, ...],
    redis_failovers: int = 0,
) -> str:
    """The exposition of a merged node view (`edge.ops.nodeview.merge`)."""
    c = merged["counters"]
    conn = merged["connections"]
    out = _Text(node)
    results = c.get("results", {})
    out.family(
        "edge_build_info",
        "gauge",
        "Always 1; the edge's version as a label.",
        [(f'version="{_escape(__version__)}"', 1)],
    )
    out.family("edge_workers", "gauge", "Worker processes counted.", [("", merged["workers"])])
    out.family(
        "edge_requests_total",
        "counter",
        "Requests answered, by X-Cache result.",
        [(f'result="{k}"', results.get(k, 0)) for k in CACHE_RESULTS],
    )
    out.family(
        "edge_bytes_served_total",
        "counter",
        "Body bytes sent to clients.",
        [("", c.get("bytes_served", 0))],
    )
    out.family(
        "edge_origin_fetches_total",
        "counter",
        "Requests sent to the origin.",
        [("", c.get("origin_fetches", 0))],
    )
    out.family(
        "edge_origin_errors_total",
        "counter",
        "Origin failures, by kind.",
        out.by("kind", c.get("origin_errors", {})),
    )
    out.family(
        "edge_origin_wait_seconds_total",
        "counter",
        "Time spent waiting for origin response heads.",
        [("", float(c.get("origin_seconds", 0.0)))],
    )
    out.family(
        "edge_collapsed_total",
        "counter",
        "Requests that waited for another request's origin fetch.",
        [("", c.get("collapsed", 0))],
    )
    out.family("edge_stored_total", "counter", "Responses stored.", [("", c.get("stored", 0))])
    img = merged.get("images") or {}
    out.family(
        "edge_image_conversions_total",
        "counter",
        "Image conversions (edge.engine.images), by format and outcome.",
        [
            (f'format="{_escape(fmt)}",outcome="{_escape(outcome)}"', n)
            for fmt, outcomes in sorted(img.get("conversions", {}).items())
            for outcome, n in sorted(outcomes.items())
        ],
    )
    out.family(
        "edge_image_conversion_seconds_total",
        "counter",
        "CPU time of the image conversion processes.",
        [("", float(img.get("seconds", 0.0)))],
    )
    out.family(
        "edge_image_bytes_saved_total",
        "counter",
        "Original bytes minus converted bytes, per variant stored.",
        [("", img.get("bytes_saved", 0))],
    )
    out.family(
        "edge_background_refreshes_total",
        "counter",
        "Stale-while-revalidate refreshes started.",
        [("", c.get("background_refreshes", 0))],
    )
    out.family(
        "edge_purges_total",
        "counter",
        "Purge requests taken by this node, by kind.",
        out.by("kind", c.get("purges", {})),
    )
    out.family(
        "edge_purged_entries_total",
        "counter",
        "Entries removed or marked stale by purges.",
        [("", c.get("purged_entries", 0))],
    )
    out.family(
        "edge_purge_failures_total",
        "counter",
        "Purges applied on this node only: the shared tier was unreachable.",
        [("", c.get("purge_failures", 0))],
    )
    out.family(
        "edge_bus_purges_total",
        "counter",
        "Purges of other nodes applied from the purge bus, by kind.",
        out.by("kind", c.get("bus_purges", {})),
    )
    out.family(
        "edge_bus_purged_entries_total",
        "counter",
        "Entries removed or marked stale by purges from the bus.",
        [("", c.get("bus_purged_entries", 0))],
    )
    out.family(
        "edge_memory_entries",
        "gauge",
        "Entries in the node's memory tiers.",
        [("", memory.get("entries", 0))],
    )
    out.family(
        "edge_memory_bytes",
        "gauge",
        "Bytes in the node's memory tiers.",
        [("", memory.get("bytes", 0))],
    )
    out.family(
        "edge_redis_up",
        "gauge",
        "1 when the shared tier answers: every shared storage (Redis) up; 0 when one is "
        "degraded or down, or none is on.",
        [("", redis_up)],
    )
    out.family(
        "edge_redis_failovers_total",
        "counter",
        "Redis primaries replaced (Sentinel or Cluster failovers) seen by this node.",
        [("", redis_failovers)],
    )
    out.family(
        "edge_client_connections_open",
        "gauge",
        "Open client connections.",
        [("", conn.get("open", 0))],
    )
    for name, key, text in (
        ("edge_client_connections_total", "accepted", "Client connections accepted."),
        (
            "edge_header_timeouts_total",
            "header_timeouts",
            "Connections closed for not sending a request head in time.",
        ),
        (
            "edge_body_timeouts_total",
            "body_timeouts",
            "Requests answered 408 for sending their body slower than limits.body_min_rate.",
        ),
        (
            "edge_connections_refused_total",
            "refused",
            "Connections refused over limits.max_connections.",
        ),
        (
            "edge_clients_gone_total",
            "clients_gone",
            "Responses abandoned because the client closed its connection first.",
        ),
        (
            "edge_bad_requests_total",
            "bad_requests",
            "Malformed requests answered 400/431 by the HTTP parser.",
        ),
    ):
        out.family(name, "counter", text, [("", conn.get(key, 0))])
    handshakes = conn.get("tls_handshakes", {})
    out.family(
        "edge_tls_handshakes_total",
        "counter",
        "TLS handshakes, by result: full, resumed (a session ticket), failed.",
        [(f'result="{k}"', handshakes.get(k, 0)) for k in TLS_RESULTS],
    )
    kept = merged.get("kept", {})
    for name, key, kind, text in (
        ("edge_kept_bytes", "bytes", "gauge", "Bytes workers keep beyond one request, by kind."),
        ("edge_kept_limit_bytes", "limit", "gauge", "limits.kept per worker, summed, by kind."),
        (
            "edge_kept_refused_total",
            "refused",
            "counter",
            "Things not kept (or requests refused) because their kind was at its bound.",
        ),
    ):
        values = kept.get(key, {})
        out.family(name, kind, text, [(f'kind="{k}"', values.get(k, 0)) for k in ledger.KINDS])
    name = "edge_request_duration_seconds"
    out.lines.append(
        f"# HELP {name} Time from the end of the request head to the last byte of the "
        "answer, by cache path (hit: HIT, STALE; miss: MISS, EXPIRED, REVALIDATED; "
        "pass: BYPASS)."
    )
    out.lines.append(f"# TYPE {name} histogram")
    latency = merged.get("latency", {})
    for path in PATHS:
        h = latency.get(path) or {"counts": [0] * (len(buckets) + 1), "sum": 0.0}
        running = 0
        bounds = [*(f"{b:g}" for b in buckets), "+Inf"]
        for le, n in zip(bounds, h["counts"], strict=True):
            running += n
            out.sample(f"{name}_bucket", f'cache="{path}",le="{le}"', running)
        out.sample(f"{name}_sum", f'cache="{path}"', float(h["sum"]))
        out.sample(f"{name}_count", f'cache="{path}"', running)
    return "\n".join(out.lines) + "\n"
