"""q. 1 KiB in the middle of the photo (Range): the shop's own, through config/edge.yaml."""

from __future__ import annotations

from bench.load.shop import ShopHits


class Scenario(ShopHits):
    letter = "q"
    title = "1 KiB in the middle of the photo (Range)"
    path = "/5mo.jpg"
    headers = (("Range", "bytes=2500000-2501023"),)


SCENARIO = Scenario()
