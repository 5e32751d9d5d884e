"""m. shop page hits (4.6 KB): the shop's own, through config/edge.yaml."""

from __future__ import annotations

from bench.load.shop import ShopHits


class Scenario(ShopHits):
    letter = "m"
    title = "shop page hits (4.6 KB)"
    path = "/"
    headers = ()


SCENARIO = Scenario()
