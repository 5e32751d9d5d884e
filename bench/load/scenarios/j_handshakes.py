"""j. TLS handshakes per second: a new connection for every 1 KB hit, edge vs nginx."""

from __future__ import annotations

from bench.load.context import SMALL
from bench.load.scenario import Metric
from bench.load.tls_hits import HandshakeScenario


class Handshakes(HandshakeScenario):
    letter = "j"
    title = "TLS handshakes (a new connection per request)"
    path = SMALL
    metric = Metric("handshakes/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")


SCENARIO = Handshakes()
