"""t. hits on the shop photo's converted variant (AVIF, 1280 px wide: about 49 KB), asked for
as Chromium asks on a 1280 px screen (Accept and Client Hints), through config/edge.yaml.

The edge alone: nginx has no conversion and would answer the 5 MB original. What it is
compared with is u, a plain hit on an original of about the same size (the shop's
htmx.min.js, 52 KB) in the same run, where nginx is the peer (issue 31: a converted variant's
hit costs no more than a hit on an original of its size)."""

from __future__ import annotations

import time

from bench.load.context import Context, get
from bench.load.scenario import Target
from bench.load.shop import ShopHits

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
VARIANT = "avif-1280"
CONVERSION_WAIT = 120.0  # seconds the first conversion may take on a loaded machine


class Scenario(ShopHits):
    letter = "t"
    title = "the photo's AVIF variant (49 KB), as Chromium asks for it"
    path = "/5mo.jpg"
    headers = (("Accept", CHROME), ("Sec-CH-Viewport-Width", "1280"), ("Sec-CH-DPR", "1"))

    def start(self, ctx: Context) -> list[Target]:
        return [t for t in super().start(ctx) if t.name == "edge"]

    def _warm(self, url: str) -> tuple[list[str], dict[str, str]]:
        """Warmed until the variant is made and served (the first asks get the original)."""
        verdicts, headers = super()._warm(url)
        deadline = time.monotonic() + CONVERSION_WAIT
        while True:
            status, answer, _ = get(url, headers)
            detail = answer.get("Cache-Status", "")
            if status == 200 and f"detail={VARIANT}" in detail and "converting" not in detail:
                verdicts.append(VARIANT)
                return verdicts, headers
            if time.monotonic() > deadline:
                raise ValueError(f"no {VARIANT} variant after {CONVERSION_WAIT:g} s: {detail}")
            time.sleep(0.2)


SCENARIO = Scenario()
