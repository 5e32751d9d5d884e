"""Hits of one cached URL under wrk, in rounds in rotation, with CPU per request.

A hit scenario names a path, its connections and, optionally, the request headers every
measured request carries (learnt from the warm-up answer: an ETag for `If-None-Match`). Each
server is warmed on new connections (so every worker process gets some), then measured in
`--rounds` rounds in rotation across servers, so that a burst of load from elsewhere on the
machine hits every server about equally. Each round reads the CPU time of the server's whole
process tree before and after (`bench.procfs`); CPU per request = that time ÷ the requests wrk
counted. A server's result is its median round; a ratio is the median of the paired
per-round ratios.
"""

from __future__ import annotations

from functools import partial

from bench import report
from bench.load.context import Context, get, with_cpu
from bench.load.options import Options
from bench.load.scenario import Outcome, Scenario, Table, Target
from bench.loadgen import LoadResult, cache_verdict
from bench.procfs import CpuTimes

WARM = 3
"""Plain GETs that store the object, then as many with the scenario's headers."""


def cpu_cell(outcome: Outcome) -> str:
    """`43.1 (u 23.0 + s 20.1)` µs per request, or n/a."""
    cpu = outcome.extra.get("cpu_per_request")
    if not cpu:
        return "n/a"
    return f"{cpu['cpu_us']:.1f} (u {cpu['user_us']:.1f} + s {cpu['system_us']:.1f})"


def latency_cells(result: LoadResult | None) -> list[str]:
    if result is None:
        return ["n/a"] * 3
    return [report.ms(result.p(50.0)), report.ms(result.p(99.0)), report.ms(result.p(99.9))]


class HitScenario(Scenario):
    path: str
    cpu = True

    def connections(self, opts: Options) -> int:
        return opts.connections

    def request_headers(self, stored: dict[str, str]) -> dict[str, str]:
        """Headers of each measured request, given the headers of the stored answer."""
        return {}

    def describe(self, opts: Options) -> str:
        """What is measured, for the line above the table."""
        return f"GET {self.path}"

    def expected_seconds(self, opts: Options, servers: int) -> float:
        return (servers + 1) * (max(opts.duration, opts.rounds) + 0.5 * opts.rounds) + 2.0 * (
            servers + 1
        )

    def start(self, ctx: Context) -> list[Target]:
        origin = ctx.fast_origin()
        return [Target("origin direct", origin), *ctx.start_caches(origin, self.letter)]

    def load(
        self, ctx: Context, url: str, conns: int, seconds: float, headers: dict[str, str]
    ) -> LoadResult:
        """One measured round (wrk; bench.load.tls_hits: wrk over TLS and h2load)."""
        return ctx.hammer(url, conns, seconds, headers)

    def _warm(self, url: str) -> tuple[list[str], dict[str, str]]:
        verdicts: list[str] = []
        stored: dict[str, str] = {}
        for _ in range(WARM):
            status, stored, _ = get(url)
            verdicts.append(_verdict(status, stored))
        headers = self.request_headers(stored)
        if headers:
            for _ in range(WARM):
                status, answer, _ = get(url, headers)
                verdicts.append(_verdict(status, answer))
        else:
            verdicts += [_verdict(*get(url)[:2]) for _ in range(WARM)]
        return verdicts, headers

    def measure(self, ctx: Context, targets: list[Target]) -> list[Outcome]:
        opts, conns = ctx.opts, self.connections(ctx.opts)
        outcomes = [Outcome(self.letter, t.name, error=t.error) for t in targets]
        live: list[tuple[Outcome, Target, dict[str, str]]] = []
        for outcome, target in zip(outcomes, targets, strict=True):
            if target.server is None:
                continue
            try:
                verdicts, headers = self._warm(target.server.url + self.path)
            except (OSError, ValueError) as exc:  # ValueError: nothing to build headers from
                outcome.error = str(exc)[:300]
                continue
            outcome.extra["warm_verdicts"] = verdicts
            if headers:
                outcome.extra["request_headers"] = headers
            live.append((outcome, target, headers))
        per_round = opts.round_seconds
        done: dict[str, list[LoadResult]] = {oc.server: [] for oc, _, _ in live}
        spent: dict[str, CpuTimes] = {oc.server: CpuTimes() for oc, _, _ in live}
        for r in range(max(1, opts.rounds)):
            for outcome, target, headers in live:
                server = target.server
                if outcome.error or server is None:
                    continue
                hammer = partial(self.load, ctx, server.url + self.path, conns, per_round, headers)
                what = f"{self.letter}: {outcome.server} ({conns} conns, round {r + 1})"
                with ctx.step(what, per_round):
                    try:
                        got, cpu = with_cpu(server, hammer)
                    except (RuntimeError, OSError, ValueError) as exc:
                        outcome.error = str(exc)[:300]
                        continue
                done[outcome.server].append(got)
                spent[outcome.server] += cpu
                outcome.extra.setdefault("rounds", []).append(
                    {
                        "rps": got.rps,
                        "bytes_per_s": got.bytes_per_s,
                        "p50_ms": got.p(50.0),
                        "p99_ms": got.p(99.0),
                        "errors": got.errors,
                        "statuses": got.statuses,
                        **(cpu.per_request_us(got.requests) or {}),
                    }
                )
        for outcome, _, _ in live:
            results = sorted(done[outcome.server], key=lambda x: x.rps)
            if results and not outcome.error:
                outcome.result = results[len(results) // 2]
                requests = sum(x.requests for x in results)
                outcome.extra["cpu_per_request"] = spent[outcome.server].per_request_us(requests)
        return outcomes

    def rows(self, opts: Options, outcomes: list[Outcome]) -> Table:
        intro = (
            f"{self.describe(opts)}: {self.connections(opts)} connections, {opts.threads} "
            f"threads, object warmed first; {opts.rounds} rounds of {opts.round_seconds:g} s "
            "per server in rotation; the median round is shown, the ratio is the median of the "
            "per-round ratios. CPU = µs of CPU (user + system) of the server's whole process "
            "tree per request, over all rounds."
        )
        headers = [
            "server",
            "requests/s",
            "bytes/s",
            "CPU µs/req",
            "p50",
            "p99",
            "p99.9",
            "errors",
            "warm",
        ]
        rows = []
        for oc in outcomes:
            r = oc.result
            rows.append(
                [
                    oc.server,
                    report.si(r.rps if r else None),
                    report.si(r.bytes_per_s if r else None, "B"),
                    cpu_cell(oc),
                    *latency_cells(r),
                    str(r.errors) if r else (oc.error or "n/a"),
                    ",".join(oc.extra.get("warm_verdicts", [])),
                ]
            )
        return Table(intro, headers, rows)


def _verdict(status: int, headers: dict[str, str]) -> str:
    """HIT, MISS... with the status in front when it is not a 200 (`304 HIT`)."""
    verdict = cache_verdict(headers)
    return verdict if status == 200 else f"{status} {verdict}"
