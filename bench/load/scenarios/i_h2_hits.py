"""i. h2 hits on a cached 1 KB object, edge vs nginx (h2load: 8 connections x 8 streams)."""

from __future__ import annotations

from bench.load.context import SMALL
from bench.load.scenario import Metric
from bench.load.tls_hits import H2HitScenario


class H2Hits(H2HitScenario):
    letter = "i"
    title = "1 KB hits over h2"
    path = SMALL
    metric = Metric("hits/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")


SCENARIO = H2Hits()
