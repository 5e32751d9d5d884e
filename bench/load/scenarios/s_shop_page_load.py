"""s. The shop's page with its assets over one connection, as `wget -r` fetches them.

The page, then what it references (stylesheet, script, spinner, the 5 MB photo), in turn on
one keep-alive connection (`bench.fetcher`, wget's order), every body read to its end; each
server warmed by one such load, then `--page-loads` loads timed. The figure is the time of a
whole load (median and p90), and the server's CPU per load.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from bench import report
from bench.fetcher import fetch_page
from bench.load.context import Context, with_cpu
from bench.load.hits import cpu_cell
from bench.load.options import Options
from bench.load.scenario import Metric, Outcome, Scenario, Table, Target
from bench.load.shop import shop_origin
from bench.loadgen import LoadResult
from bench.peers import Server
from bench.stats import percentiles

LOADS = 200


def _loads(url: str, count: int) -> LoadResult:
    """`count` whole page loads in turn; each load's time is one sample."""
    samples: list[float] = []
    size = 0
    resources = 0
    began = time.perf_counter()
    for _ in range(count):
        load = asyncio.run(fetch_page(url))
        if not load.ok:
            raise ValueError(
                f"page load failed: {load.errors or [r.status for r in load.resources]}"
            )
        samples.append(load.seconds * 1000)
        size += load.total_bytes
        resources = len(load.resources)
    return LoadResult(
        tool="bench.fetcher",
        requests=count * resources,
        seconds=time.perf_counter() - began,
        bytes=size,
        errors=0,
        percentiles_ms=percentiles(samples),
        samples_ms=samples,
        raw={"resources": resources, "loads": count},
    )


class PageLoad(Scenario):
    letter = "s"
    title = "the shop page with its assets, one connection (wget -r)"
    metric = Metric(
        "page load p50 (ms)", lambda oc: oc.result.p(50.0) if oc.result else None, False
    )
    cpu = True

    def expected_seconds(self, opts: Options, servers: int) -> float:
        return (servers + 1) * 6.0

    def start(self, ctx: Context) -> list[Target]:
        origin = shop_origin(ctx)
        assert origin.server is not None
        return [origin, *ctx.start_caches(origin.server, self.letter)]

    def measure(self, ctx: Context, targets: list[Target]) -> list[Outcome]:
        def one(outcome: Outcome, server: Server) -> None:
            url = server.url + "/"
            _loads(url, 2)  # warm: every resource stored (the photo's slices too)
            result, cpu = with_cpu(server, partial(_loads, url, LOADS))
            outcome.result = result
            loads = result.raw["loads"]
            outcome.extra["cpu_per_request"] = cpu.per_request_us(loads)  # per page load

        return ctx.each(self.letter, targets, f"{LOADS} page loads", 6.0, one)

    def rows(self, opts: Options, outcomes: list[Outcome]) -> Table:
        intro = (
            f"{LOADS} loads of / and everything it references, in turn on one keep-alive "
            "connection as wget -r fetches them (bench.fetcher), after one warm load; CPU = µs "
            "of the server's own process tree per page load."
        )
        headers = ["server", "resources", "bytes", "p50", "p90", "CPU µs/load"]
        rows = []
        for oc in outcomes:
            r = oc.result
            rows.append(
                [
                    oc.server,
                    str(r.raw["resources"]) if r else "n/a",
                    report.si(r.bytes / max(1, r.raw["loads"]), "B") if r else "n/a",
                    report.ms(r.p(50.0) if r else None),
                    report.ms(r.p(90.0) if r else None),
                    cpu_cell(oc),
                ]
            )
        return Table(intro, headers, rows)


SCENARIO = PageLoad()
