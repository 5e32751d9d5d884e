"""a. Hits/s, p50/p99/p99.9 and CPU per hit on a cached 1 KB object (wrk -t2 -c64)."""

from __future__ import annotations

from bench.load.context import SMALL
from bench.load.hits import HitScenario
from bench.load.scenario import Metric


class SmallHits(HitScenario):
    letter = "a"
    title = "1 KB hits"
    path = SMALL
    metric = Metric("hits/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")


SCENARIO = SmallHits()
