"""n. shop stylesheet hits: the shop's own, through config/edge.yaml."""

from __future__ import annotations

from bench.load.shop import ShopHits


class Scenario(ShopHits):
    letter = "n"
    title = "shop stylesheet hits"
    path = "/woody.css"
    headers = ()


SCENARIO = Scenario()
