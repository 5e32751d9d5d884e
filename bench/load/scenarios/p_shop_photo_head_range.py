"""p. the photo's first KiB (Range): the shop's own, through config/edge.yaml."""

from __future__ import annotations

from bench.load.shop import ShopHits


class Scenario(ShopHits):
    letter = "p"
    title = "the photo's first KiB (Range)"
    path = "/5mo.jpg"
    headers = (("Range", "bytes=0-1023"),)


SCENARIO = Scenario()
