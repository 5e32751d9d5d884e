"""Hits of what the shop itself serves, through the edge's own configuration.

The stand-in scenarios (a, b, f, g) measure objects nginx serves as files, never sliced. These
measure the real Woodytoys origin (`python -m origin serve`, no throttle) behind the edge on
`config/edge.yaml` (the page cached by its rule, the 5 MB photo in 128 KB slices) and behind
nginx `proxy_cache` with the same origin: the page, its stylesheet, the photo whole and by
Range, the page revalidated.
"""

from __future__ import annotations

from bench.load.context import Context
from bench.load.hits import HitScenario
from bench.load.options import Options
from bench.load.scenario import Metric, Target
from bench.servers import OriginSpec, start_origin

RPS = Metric("hits/s", lambda oc: oc.result.rps if oc.result else None, True, "rps")


def shop_origin(ctx: Context) -> Target:
    """The real shop, fast: no throttle, short API delays (only its static files are read)."""
    spec = OriginSpec(heavy_seconds=0.05, db_seconds=0.05, static_rate=0, impl="real")
    server = start_origin(ctx.group, spec, name=f"shop-origin-{len(ctx.origins)}")
    ctx.origins["shop"] = "the Woodytoys origin (python -m origin serve, --static-rate 0)"
    ctx._origin = server
    return Target("origin direct", server)


class ShopHits(HitScenario):
    """A hit scenario on one of the shop's own objects."""

    metric = RPS
    headers: tuple[tuple[str, str], ...] = ()

    def start(self, ctx: Context) -> list[Target]:
        origin = shop_origin(ctx)
        assert origin.server is not None
        return [origin, *ctx.start_caches(origin.server, self.letter)]

    def request_headers(self, stored: dict[str, str]) -> dict[str, str]:
        return dict(self.headers)

    def describe(self, opts: Options) -> str:
        sent = "".join(f" with {k}: {v}" for k, v in self.headers)
        return f"GET {self.path}{sent}, the shop's own, through config/edge.yaml"
