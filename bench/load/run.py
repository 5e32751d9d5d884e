"""One run of `bench load`: every chosen scenario in turn, each with servers of its own."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from bench import report
from bench.load.context import Context, available_caches
from bench.load.options import Options, options_from
from bench.load.render import chart, ratios, render_markdown, round_ratios
from bench.load.scenario import CPU_METRIC, Outcome
from bench.load.scenarios import REGISTRY
from bench.peers import wrk_binary
from bench.procs import ProcessGroup
from bench.progress import Progress

KNOWN = "".join(REGISTRY)


class LoadRun:
    def __init__(self, opts: Options, progress: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress
        self.outcomes: list[Outcome] = []
        self.caches, self.missing = available_caches(opts.caches)
        self.wrk = wrk_binary() if opts.loader in ("auto", "wrk") else None
        if opts.loader == "wrk" and self.wrk is None:
            raise RuntimeError("--loader wrk but wrk is not installed")
        self.origins: dict[str, str] = {}

    def expected_seconds(self) -> float:
        n = len(self.caches)
        return sum(REGISTRY[s].expected_seconds(self.opts, n) for s in self.opts.scenarios)

    def run(self) -> list[Outcome]:
        for letter in self.opts.scenarios:
            scenario = REGISTRY[letter]
            with ProcessGroup() as group:
                ctx = Context(self.opts, group, self.caches, self.wrk, self.progress)
                with ctx.starting(letter):
                    targets = scenario.start(ctx)
                self.outcomes += scenario.measure(ctx, targets)
                self.origins.update(ctx.origins)
        return self.outcomes


def _forget_redis_keys(url: str, prefix: str) -> None:
    """Delete what the edges of this run wrote to the shared Redis."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        finally:
            client.close()
    except redis.RedisError:
        pass  # the keys expire on their own; nothing to fail the report for


def results(run: LoadRun, started: str) -> dict[str, Any]:
    """The JSON document of the run (every sample, the ratios, the CPU ratios)."""
    opts = run.opts
    chosen = [REGISTRY[s] for s in opts.scenarios]
    return {
        "kind": "load",
        "started": started,
        "options": opts.__dict__,
        "loader": "wrk" if run.wrk else "aiohttp",
        "caches": run.caches,
        "missing": run.missing,
        "origins": run.origins,
        "machine": report.machine(),
        "ratios": {s.letter: ratios(run.outcomes, s.letter, s.metric) for s in chosen},
        "round_ratios": {
            s.letter: round_ratios(run.outcomes, s.letter, s.metric)
            for s in chosen
            if s.metric.round_key
        },
        "cpu_ratios": {
            s.letter: ratios(run.outcomes, s.letter, CPU_METRIC) for s in chosen if s.cpu
        },
        "cpu_round_ratios": {
            s.letter: round_ratios(run.outcomes, s.letter, CPU_METRIC)
            for s in chosen
            if s.cpu and s.metric.round_key
        },
        "outcomes": [oc.as_json() for oc in run.outcomes],
    }


def main(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> int:
    opts = options_from(args, KNOWN)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run = LoadRun(opts)
    with Progress(run.expected_seconds(), label="bench load", enabled=not args.quiet) as progress:
        run.progress = progress
        try:
            run.run()
        finally:
            if opts.redis_url:
                _forget_redis_keys(opts.redis_url, f"woody-bench-load-{os.getpid()}-")
    report.publish(
        "load",
        render_markdown(run, started),
        results(run, started),
        lambda path: chart(run, path),
        args.out,
        write_files=not args.no_files,
        as_json=args.json,
        print_fn=print_fn,
    )
    return 0
