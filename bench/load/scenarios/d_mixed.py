"""d. Mixed: 95 % Zipf-popular reads, 5 % writes (/api/products?product=); hit ratio, offload."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench import report
from bench.load.context import Context, origin_count, origin_stats
from bench.load.options import Options
from bench.load.scenario import Metric, Outcome, Scenario, Table, Target
from bench.loadgen import LoadResult, aio_load
from bench.peers import Server
from bench.stats import ZipfSampler


def _delta(before: Any, after: Any, prefix: str) -> int:
    return origin_count(after, prefix) - origin_count(before, prefix)


class Mixed(Scenario):
    letter = "d"
    title = "mixed Zipf reads + writes"
    metric = Metric("origin offload", lambda oc: oc.extra.get("offload"), True)
    errors_below_table = False

    def expected_seconds(self, opts: Options, servers: int) -> float:
        return servers * (opts.duration + 1.0) + 2.0 * (servers + 1)

    def start(self, ctx: Context) -> list[Target]:
        return ctx.start_caches(ctx.api_origin(0.02), self.letter)

    def measure(self, ctx: Context, targets: list[Target]) -> list[Outcome]:
        o = ctx.opts

        def one(outcome: Outcome, server: Server) -> None:
            outcome.result, outcome.extra = self._once(o, ctx.origin, server)

        doing = f"Zipf s={o.zipf_s}, {o.keys} keys"
        return ctx.each(self.letter, targets, doing, o.duration, one)

    def _once(
        self, o: Options, origin: Server, server: Server
    ) -> tuple[LoadResult, dict[str, Any]]:
        run = uuid.uuid4().hex[:8]
        zipf = ZipfSampler(o.keys, o.zipf_s, seed=11)
        every = max(1, round(1 / o.write_ratio)) if o.write_ratio > 0 else 0

        def make(i: int) -> tuple[str, str]:
            if every and i % every == every - 1:
                return "write", f"{server.url}/api/products?product=bench-{run}-{i}"
            return "read", f"{server.url}/api/misc/heavy?name={run}-{zipf.sample()}"

        stats0 = origin_stats(origin)
        result = asyncio.run(aio_load(make, connections=o.mixed_connections, duration=o.duration))
        time.sleep(0.2)
        stats1 = origin_stats(origin)
        reads = result.kinds.get("read", 0)
        hits = sum(n for k, n in result.cache.items() if k.startswith("read:HIT"))
        origin_reads = _delta(stats0, stats1, "/api/misc/heavy")
        # /api/products?product= are the writes; /api/products/<id> and /last are reads
        writes = _delta(stats0, stats1, "/api/products") - _delta(stats0, stats1, "/api/products/")
        extra = {
            "reads": reads,
            "writes": result.kinds.get("write", 0),
            "hit_ratio": hits / reads if reads else None,
            "origin_reads": origin_reads,
            "offload": 1 - origin_reads / reads if reads else None,
            "origin_writes": writes,
            "keys": o.keys,
            "zipf_s": o.zipf_s,
        }
        return result, extra

    def rows(self, opts: Options, outcomes: list[Outcome]) -> Table:
        intro = (
            f"{opts.mixed_connections} connections; reads of {opts.keys} heavy-call URLs with "
            f"Zipf s={opts.zipf_s:g}, {opts.write_ratio:.0%} writes; "
            "offload = 1 − origin reads / reads."
        )
        headers = [
            "server",
            "requests/s",
            "hit ratio",
            "origin offload",
            "writes passed",
            "p50",
            "p99",
        ]
        rows = []
        for oc in outcomes:
            r, x = oc.result, oc.extra
            hr, off = x.get("hit_ratio"), x.get("offload")
            rows.append(
                [
                    oc.error or report.si(r.rps if r else None),
                    f"{hr:.1%}" if hr is not None else "n/a",
                    f"{off:.1%}" if off is not None else "n/a",
                    f"{x.get('origin_writes', 'n/a')}/{x.get('writes', 'n/a')}",
                    report.ms(r.p(50.0) if r else None),
                    report.ms(r.p(99.0) if r else None),
                ]
            )
            rows[-1].insert(0, oc.server)
        return Table(intro, headers, rows)


SCENARIO = Mixed()
