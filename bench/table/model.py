"""What `bench table` measures and reports: its columns, rows, samples, the lab's figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEAVY_PATH = "/api/misc/heavy?name=bench"
DB_PATH = "/api/products/last"
PAGE_PATH = "/"
RANGE_PATH = "/5mo.jpg"
RANGE_HEADER = "bytes=2500000-2500999"
"""Issue 16: one KB in the middle of the cold 5 MB image (measured first, on a cold cache)."""
METRICS = ("page", "heavy", "db", "range")
COLUMNS = [(m, p) for m in METRICS for p in ("miss", "hit")]

# Table 7.1 of the seed, as the lab measured it on its Swarm (seconds).
LAB_TABLE: list[dict[str, Any]] = [
    {"version": "baseline", "page": 16.065, "heavy": 5.029, "db": 15.198},
    {"version": "5 API replicas", "page": 16.093, "heavy": 5.040, "db": 15.169},
    {
        "version": "Redis API cache",
        "page": 16.102,
        "heavy": 5.058,
        "heavy_hit": 0.021,
        "db": 15.214,
        "db_hit": 0.032,
    },
    {"version": "Gcore CDN", "page": 0.030, "heavy": "same", "db": "same"},
]

ALL_ROWS = ("baseline", "replicas", "api-cache", "edge", "edge-redis", "nginx", "varnish", "gcore")
ROW_LABELS = {
    "baseline": "baseline origin",
    "replicas": "5 API replicas",
    "api-cache": "in-API Redis cache",
    "edge": "our edge (memory)",
    "edge-redis": "our edge + Redis, 3 nodes",
    "nginx": "nginx proxy_cache (peer)",
    "varnish": "Varnish (peer)",
    "gcore": "Gcore CDN (quoted from the lab)",
}


@dataclass(frozen=True)
class Delays:
    heavy_seconds: float
    db_seconds: float
    static_rate: int

    def as_json(self) -> dict[str, float]:
        return {
            "heavy_seconds": self.heavy_seconds,
            "db_seconds": self.db_seconds,
            "static_rate": self.static_rate,
        }


LAB_DELAYS = Delays(5.0, 15.0, 300 * 1024)
QUICK_DELAYS = Delays(0.2, 0.3, 3_000_000)
IMAGE_BYTES = 5 * 1024 * 1024


@dataclass
class Sample:
    row: str
    metric: str
    phase: str
    url: str
    seconds: float
    status: int
    bytes: int
    x_cache: str | None = None
    cache_status: str | None = None
    files: int = 1
    error: str | None = None


@dataclass
class Row:
    key: str
    label: str
    quoted: bool = False
    note: str = ""
    cells: dict[str, float | None] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "quoted": self.quoted,
            "note": self.note,
            "cells": self.cells,
            "flags": self.flags,
            "samples": [s.__dict__ for s in self.samples],
        }


@dataclass
class Endpoints:
    """Where to send the miss (first) and the hit (later) calls of one configuration."""

    miss: str
    hit: str
    caching: bool
    page_cached: bool = True


def gcore_row() -> Row:
    row = Row("gcore", ROW_LABELS["gcore"], quoted=True)
    row.cells = {
        "page_miss": None,
        "page_hit": 0.030,
        "heavy_miss": None,
        "heavy_hit": None,
        "db_miss": None,
        "db_hit": None,
    }
    row.note = (
        "quoted, lab's Swarm, one figure (miss or hit not stated); API not cached by the CDN "
        "(lab: 'same' as without it); the lab's page pointed 5mo.jpg at the CDN host, which "
        "`wget -r` (no -H) does not follow"
    )
    return row
