"""h. HTTPS (HTTP/1.1 over TLS) hits on a cached 1 KB object, edge vs nginx (wrk -t2 -c64)."""

from __future__ import annotations

from bench.load.context import SMALL
from bench.load.scenario import Metric
from bench.load.tls_hits import TlsHitScenario


class TlsHits(TlsHitScenario):
    letter = "h"
    title = "1 KB hits over HTTPS (HTTP/1.1)"
    path = SMALL
    metric = Metric("hits/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")


SCENARIO = TlsHits()
