"""u. hits on the shop's htmx.min.js (52 KB) as an original, no coding asked: the peer of t
(an original of about the size of the photo's AVIF variant), through config/edge.yaml."""

from __future__ import annotations

from bench.load.shop import ShopHits


class Scenario(ShopHits):
    letter = "u"
    title = "a 52 KB original (htmx.min.js), as t's peer"
    path = "/htmx.min.js"
    headers = (("Accept", "*/*"),)


SCENARIO = Scenario()
