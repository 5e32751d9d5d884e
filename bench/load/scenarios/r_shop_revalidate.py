"""r. The shop page revalidated (If-None-Match: its ETag, 304) through config/edge.yaml."""

from __future__ import annotations

from bench.load.options import Options
from bench.load.scenarios.f_revalidate import Revalidate
from bench.load.shop import RPS, ShopHits


class Scenario(ShopHits):
    letter = "r"
    title = "shop page revalidations (304)"
    path = "/"
    metric = RPS

    def request_headers(self, stored: dict[str, str]) -> dict[str, str]:
        return Revalidate.request_headers(self, stored)  # type: ignore[arg-type]

    def describe(self, opts: Options) -> str:
        return (
            "GET / with If-None-Match: <its ETag> (304), the shop's own, through config/edge.yaml"
        )


SCENARIO = Scenario()
