"""e. Miss cost: p50 of a miss through each cache vs. the origin directly, and CPU per miss.

`--miss-requests` requests in turn, each for a new URL (a miss), on one connection, to a fast
origin (nginx serving files); the CPU is that of the cache's process tree alone.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

from bench import report
from bench.load.context import SMALL, Context, with_cpu
from bench.load.hits import cpu_cell
from bench.load.options import Options
from bench.load.scenario import Metric, Outcome, Scenario, Table, Target
from bench.loadgen import LoadResult, aio_load
from bench.peers import Server


def _misses(url: str, o: Options) -> LoadResult:
    """`o.miss_requests` requests in turn on one connection, each for a new URL."""
    return asyncio.run(
        aio_load(
            lambda i: ("read", f"{url}{i}"),
            connections=1,
            duration=o.duration,
            max_requests=o.miss_requests,
        )
    )


class MissCost(Scenario):
    letter = "e"
    title = "miss cost"
    metric = Metric("miss p50 (ms)", lambda oc: oc.result.p(50.0) if oc.result else None, False)
    cpu = True

    def expected_seconds(self, opts: Options, servers: int) -> float:
        return (servers + 1) * min(opts.duration, 3.0) + 2.0 * (servers + 1)

    def start(self, ctx: Context) -> list[Target]:
        origin = ctx.fast_origin()
        return [Target("origin direct", origin), *ctx.start_caches(origin, self.letter)]

    def measure(self, ctx: Context, targets: list[Target]) -> list[Outcome]:
        o = ctx.opts

        def one(outcome: Outcome, server: Server) -> None:
            url = f"{server.url}{SMALL}?miss={uuid.uuid4().hex[:8]}-"
            result, cpu = with_cpu(server, partial(_misses, url, o))
            outcome.result = result
            outcome.extra["cpu_per_request"] = cpu.per_request_us(result.requests)

        doing = f"{o.miss_requests} misses"
        return ctx.each(self.letter, targets, doing, min(o.duration, 3.0), one)

    def rows(self, opts: Options, outcomes: list[Outcome]) -> Table:
        intro = (
            f"{opts.miss_requests} sequential requests, each for a new URL (a miss), one "
            "connection; added = p50 through the cache − p50 of the origin directly; CPU = µs "
            "of the server's own process tree per request (the origin's not included)."
        )
        headers = ["server", "p50", "p90", "p99", "added p50", "p50 ratio", "CPU µs/req"]
        direct = next((oc for oc in outcomes if oc.server == "origin direct"), None)
        d50 = direct.result.p(50.0) if direct and direct.result else None
        rows = []
        for oc in outcomes:
            r = oc.result
            p50 = r.p(50.0) if r else None
            rows.append(
                [
                    oc.server,
                    report.ms(p50),
                    report.ms(r.p(90.0) if r else None),
                    report.ms(r.p(99.0) if r else None),
                    report.ms(p50 - d50) if p50 is not None and d50 is not None else "n/a",
                    report.ratio(p50, d50),
                    cpu_cell(oc),
                ]
            )
        return Table(intro, headers, rows)


SCENARIO = MissCost()
