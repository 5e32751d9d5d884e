"""g. `Range: bytes=0-1023` of the cached 5 MB object, answered 206 from cache.

What a video player or a resumed download sends: every measured request carries the same
Range header (wrk -H) and gets the first KiB as a 206. Hits/s and CPU per request, with
--connections connections like a.
"""

from __future__ import annotations

from bench.load.context import LARGE
from bench.load.hits import HitScenario
from bench.load.options import Options
from bench.load.scenario import Metric

RANGE = "bytes=0-1023"


class RangeHits(HitScenario):
    letter = "g"
    title = f"Range: {RANGE} of the 5 MB object (206)"
    path = LARGE
    metric = Metric("206s/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")

    def request_headers(self, stored: dict[str, str]) -> dict[str, str]:
        return {"Range": RANGE}

    def describe(self, opts: Options) -> str:
        return f"GET {self.path} with Range: {RANGE} (206 expected)"


SCENARIO = RangeHits()
