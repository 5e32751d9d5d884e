"""f. `If-None-Match` revalidations of the cached 4.6 KB shop page, answered 304 from cache.

Browsers revalidate what they hold with the ETag the cache gave them; each measured request
carries `If-None-Match: <that ETag>` (wrk -H) and the answer is a 304 with no body. Hits/s
and CPU per request, with --connections connections like a.
"""

from __future__ import annotations

from bench.load.context import PAGE
from bench.load.hits import HitScenario
from bench.load.options import Options
from bench.load.scenario import Metric


class Revalidate(HitScenario):
    letter = "f"
    title = "If-None-Match revalidations (304)"
    path = PAGE
    metric = Metric("304s/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")

    def request_headers(self, stored: dict[str, str]) -> dict[str, str]:
        etag = next((v for k, v in stored.items() if k.lower() == "etag"), None)
        if etag is None:
            raise ValueError("the stored answer has no ETag to revalidate with")
        return {"If-None-Match": etag}

    def describe(self, opts: Options) -> str:
        return f"GET {self.path} with If-None-Match: <its ETag> (304 expected)"


SCENARIO = Revalidate()
