"""What the chaos suite counts: per-phase tallies, the report, its summary and its verdict."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.common import CACHED


@dataclass
class Profile:
    outage: float  # seconds the origin, then Redis, stay down
    connections: int
    hold: float  # seconds the connections are held
    fuzz_cases: int
    edges: int
    memory_tier_mb: int
    memory_objects: int
    memory_object_bytes: int


LONG = Profile(30.0, 1000, 60.0, 2000, 3, 64, 10_000, 1 << 20)
SHORT = Profile(3.0, 200, 5.0, 120, 2, 16, 300, 256 << 10)


@dataclass
class Tally:
    """What one phase counted."""

    name: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    conn_errors: Counter[str] = field(default_factory=Counter)
    cached_requests: int = 0
    cached_5xx: Counter[int] = field(default_factory=Counter)
    cached_conn_errors: int = 0
    stale: int = 0
    seconds: float = 0.0

    def add(self, path: str, status: int | None, x_cache: str = "", error: str = "") -> None:
        self.requests += 1
        cached = path in CACHED
        self.cached_requests += cached
        if status is None:
            self.conn_errors[error or "error"] += 1
            self.cached_conn_errors += cached
            return
        self.statuses[status] += 1
        if cached and status >= 500:
            self.cached_5xx[status] += 1
        if x_cache == "STALE":
            self.stale += 1

    def fivexx(self) -> dict[int, int]:
        return {k: v for k, v in sorted(self.statuses.items()) if k >= 500}

    def line(self) -> str:
        errs = dict(self.conn_errors)
        return (
            f"{self.name:<22} requests {self.requests:>7}  5xx {self.fivexx() or 0}  "
            f"conn errors {errs or 0}  stale {self.stale}  cached: {self.cached_requests} "
            f"requests, 5xx {dict(self.cached_5xx) or 0}, conn errors {self.cached_conn_errors}"
        )


@dataclass
class Report:
    profile: str
    phases: list[Tally] = field(default_factory=list)
    orders_ok: int = 0
    orders_failed: int = 0
    orders_found: int = 0
    orders_lost: int = 0
    orders_duplicated: int = 0
    orders_unanswered_at_origin: int = 0
    origin_requests: int = 0
    edge_origin_fetches: int = 0
    fuzz: dict[str, Any] = field(default_factory=dict)
    crashes: int = 0
    crash_notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    def phase(self, name: str) -> Tally:
        for t in self.phases:
            if t.name == name:
                return t
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k not in ("phases", "crash_notes")
        }
        out["crash_notes"] = self.crash_notes
        out["phases"] = [
            {
                "name": t.name,
                "requests": t.requests,
                "statuses": dict(t.statuses),
                "conn_errors": dict(t.conn_errors),
                "stale": t.stale,
                "cached_requests": t.cached_requests,
                "cached_5xx": dict(t.cached_5xx),
                "cached_conn_errors": t.cached_conn_errors,
                "seconds": round(t.seconds, 1),
            }
            for t in self.phases
        ]
        return out


def summary(report: Report) -> str:
    lines = ["", f"== bench chaos ({report.profile}) =="]
    for t in report.phases:
        lines.append(t.line())
    total = Tally("total")
    for t in report.phases:
        total.requests += t.requests
        total.statuses.update(t.statuses)
        total.conn_errors.update(t.conn_errors)
        total.stale += t.stale
        total.cached_requests += t.cached_requests
        total.cached_5xx.update(t.cached_5xx)
        total.cached_conn_errors += t.cached_conn_errors
    if report.phases:
        lines.append(total.line())
        lines.append(f"statuses (all phases): {dict(sorted(total.statuses.items()))}")
        lines.append(
            f"origin requests: {report.origin_requests} (counted by the origin, before its kill "
            f"and since its restart); edge origin fetches: {report.edge_origin_fetches}"
        )
        lines.append(
            f"orders: {report.orders_ok} answered 200 by the edge, {report.orders_found} found at "
            f"the origin, LOST {report.orders_lost}, duplicated {report.orders_duplicated}; "
            f"{report.orders_failed} refused with an error (the client knows)"
        )
        lines.append(f"fuzzing: {report.fuzz}")
        lines.append(f"crashes: {report.crashes} {report.crash_notes or ''}")
    if report.memory:
        m = report.memory
        lines.append(
            f"memory: {m['objects']} x {m['object_bytes']} B through {m['tier_mib']} MiB: node "
            f"PSS peak {m['pss_peak_mib']} MiB (start {m['pss_start_mib']}, bound "
            f"{m['rss_bound_mib']}; RSS summed over its processes {m['rss_peak_mib']} MiB), "
            f"tier holds {m['memory_tier_bytes']} B in "
            f"{m['memory_tier_keys']} keys, {m['evictions']} evictions, hot object "
            f"{m['hot_object']} last {m['hot_object_last']}, statuses {m['statuses']}"
        )
    return "\n".join(lines)


def verdict(report: Report) -> list[str]:
    """What the issue's closing note needs; each failure is one line."""
    bad = []
    for name in ("origin down", "redis down"):
        with contextlib.suppress(KeyError):
            t = report.phase(name)
            if t.cached_5xx or t.cached_conn_errors:
                bad.append(
                    f"{name}: cached page/image got 5xx {dict(t.cached_5xx)} or "
                    f"{t.cached_conn_errors} connection errors"
                )
            if name == "redis down" and t.fivexx():
                bad.append(f"redis down: 5xx {t.fivexx()}")
    if report.phases:
        if report.orders_lost or report.orders_duplicated:
            bad.append(f"orders lost {report.orders_lost}, duplicated {report.orders_duplicated}")
        if report.fuzz.get("500s") or report.fuzz.get("failure"):
            bad.append(f"fuzzing: {report.fuzz.get('failure')}")
        if not report.fuzz.get("cached_image_intact_after"):
            bad.append("fuzzing: the cached image was not intact afterwards")
        if report.crashes or report.crash_notes:
            bad.append(f"crashes: {report.crashes} {report.crash_notes}")
        for t in report.phases:
            if t.name.endswith("connections") and (t.conn_errors or t.fivexx()):
                bad.append(f"{t.name}: connection errors {dict(t.conn_errors)}, 5xx {t.fivexx()}")
            if 500 in t.statuses:
                bad.append(f"{t.name}: {t.statuses[500]} answers 500")
    m = report.memory
    if m:
        if m["pss_peak_mib"] > m["rss_bound_mib"]:
            bad.append(f"memory: node PSS {m['pss_peak_mib']} MiB over {m['rss_bound_mib']}")
        if m["hot_object_last"] != "HIT" or m["wrong_length"]:
            bad.append(
                f"memory: hot object {m['hot_object_last']}, wrong lengths {m['wrong_length']}"
            )
    return bad
