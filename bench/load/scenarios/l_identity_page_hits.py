"""l. Hits of the 4.6 KB shop page without Accept-Encoding (identity): the baseline of k."""

from __future__ import annotations

from bench.load.context import PAGE
from bench.load.hits import HitScenario
from bench.load.options import Options
from bench.load.scenario import Metric


class IdentityPageHits(HitScenario):
    letter = "l"
    title = "identity page hits (no Accept-Encoding)"
    path = PAGE
    metric = Metric("hits/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")

    def describe(self, opts: Options) -> str:
        return f"GET {self.path} without Accept-Encoding (identity, the baseline of k)"


SCENARIO = IdentityPageHits()
