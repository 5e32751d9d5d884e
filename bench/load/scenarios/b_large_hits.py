"""b. Bytes/s and CPU per hit on the cached 5 MB object (8 connections)."""

from __future__ import annotations

from bench.load.context import LARGE
from bench.load.hits import HitScenario
from bench.load.options import Options
from bench.load.scenario import Metric


class LargeHits(HitScenario):
    letter = "b"
    title = "5 MB hits"
    path = LARGE
    metric = Metric(
        "bytes/s", lambda oc: oc.result.bytes_per_s if oc.result else None, True, "bytes_per_s"
    )

    def connections(self, opts: Options) -> int:
        return opts.large_connections


SCENARIO = LargeHits()
