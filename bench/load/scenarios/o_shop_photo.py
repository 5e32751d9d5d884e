"""o. the shop's 5 MB photo, whole (sliced at 128 KB): the shop's own, through config/edge.yaml."""

from __future__ import annotations

from bench.load.options import Options
from bench.load.shop import ShopHits


class Scenario(ShopHits):
    letter = "o"
    title = "the shop's 5 MB photo, whole (sliced at 128 KB)"
    path = "/5mo.jpg"
    headers = ()

    def connections(self, opts: Options) -> int:
        return opts.large_connections  # as b: 5 MB answers


SCENARIO = Scenario()
