"""c. Thundering herd: N concurrent cold requests for one heavy call; origin requests counted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp

from bench import report
from bench.load.context import Context, origin_count, origin_stats
from bench.load.options import Options
from bench.load.scenario import Metric, Outcome, Scenario, Table, Target
from bench.loadgen import cache_verdict
from bench.peers import Server


class Herd(Scenario):
    letter = "c"
    title = "thundering herd"
    metric = Metric("origin requests", lambda oc: float(oc.extra["origin_requests"]), False)
    latency_chart = False
    errors_below_table = False

    def expected_seconds(self, opts: Options, servers: int) -> float:
        return servers * (opts.herd_seconds + 1.0) + 2.0 * (servers + 1)

    def start(self, ctx: Context) -> list[Target]:
        return ctx.start_caches(ctx.api_origin(ctx.opts.herd_seconds), self.letter)

    def measure(self, ctx: Context, targets: list[Target]) -> list[Outcome]:
        o = ctx.opts

        def one(outcome: Outcome, server: Server) -> None:
            outcome.extra = asyncio.run(self._once(o, ctx.origin, server))

        doing = f"{o.herd} cold requests"
        return ctx.each(self.letter, targets, doing, o.herd_seconds + 0.5, one)

    async def _once(self, o: Options, origin: Server, server: Server) -> dict[str, Any]:
        url = f"{server.url}/api/misc/heavy?name=herd-{uuid.uuid4().hex[:10]}"
        before = origin_count(origin_stats(origin), "/api/misc/heavy")
        connector = aiohttp.TCPConnector(limit=o.herd + 1)
        timeout = aiohttp.ClientTimeout(total=max(60.0, 10 * o.herd_seconds))
        start = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one() -> tuple[int, float, str, bytes]:
                async with session.get(url) as resp:
                    body = await resp.read()
                    elapsed = time.perf_counter() - start
                    return resp.status, elapsed, cache_verdict(resp.headers), body

            answers = await asyncio.gather(*(one() for _ in range(o.herd)))
        await asyncio.sleep(0.2)
        after = origin_count(origin_stats(origin), "/api/misc/heavy")
        statuses: dict[str, int] = {}
        verdicts: dict[str, int] = {}
        for status, _, verdict, _ in answers:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        return {
            "concurrent": o.herd,
            "origin_requests": after - before,
            "slowest_s": max(a[1] for a in answers),
            "fastest_s": min(a[1] for a in answers),
            "statuses": statuses,
            "verdicts": verdicts,
            "same_body": len({a[3] for a in answers}) == 1,
        }

    def rows(self, opts: Options, outcomes: list[Outcome]) -> Table:
        intro = (
            f"{opts.herd} concurrent cold requests for one heavy call "
            f"({opts.herd_seconds:g} s at the origin); 1 origin request = fully collapsed."
        )
        headers = ["server", "origin requests", "slowest answer", "statuses", "cache says"]
        rows = []
        for oc in outcomes:
            x = oc.extra
            rows.append(
                [
                    oc.server,
                    str(x.get("origin_requests", "n/a")) if not oc.error else "n/a",
                    report.seconds(x.get("slowest_s")),
                    json.dumps(x.get("statuses", {})),
                    json.dumps(x.get("verdicts", {})) if not oc.error else str(oc.error),
                ]
            )
        return Table(intro, headers, rows)


SCENARIO = Herd()
