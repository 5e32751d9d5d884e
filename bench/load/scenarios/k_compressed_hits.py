"""k. Hits of the 4.6 KB shop page as browsers ask for it (Accept-Encoding: gzip, deflate, br,
zstd), against the same page's identity hits (l): what a compressed hit costs.

The edge compresses each stored object once per coding (br, zstd, gzip) and serves the stored
variant on a hit, so a compressed hit should cost about what an identity hit costs, with
fewer bytes sent. nginx (the peer) has `gzip on` for proxied answers: it compresses on every
hit (its brotli module is not in Debian's build), so it answers `br, gzip` with gzip.
"""

from __future__ import annotations

from bench.load.context import PAGE
from bench.load.hits import HitScenario
from bench.load.options import Options
from bench.load.scenario import Metric

BROWSER_ACCEPT_ENCODING = "gzip, deflate, br, zstd"  # what Chromium sends


class CompressedHits(HitScenario):
    letter = "k"
    title = "compressed page hits (Accept-Encoding of a browser)"
    path = PAGE
    metric = Metric("hits/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")

    def request_headers(self, stored: dict[str, str]) -> dict[str, str]:
        return {"Accept-Encoding": BROWSER_ACCEPT_ENCODING}

    def describe(self, opts: Options) -> str:
        return f"GET {self.path} with Accept-Encoding: {BROWSER_ACCEPT_ENCODING}"


SCENARIO = CompressedHits()
