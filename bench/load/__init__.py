"""`python -m bench load`: throughput, latency and CPU per request of the edge beside nginx
and Varnish.

Every scenario runs against our edge and, when installed, nginx `proxy_cache` and Varnish,
all configured by the bench in front of the SAME origin in the same run; the result is
the ratio edge/nginx and edge/Varnish (absolute numbers on a shared 2-core box are noise).
Where a scenario says so, it also reports the CPU microseconds per request of each server's
whole process tree (utime + stime from /proc), the figure that holds from run to run.

The fast origin of the hit scenarios and of e is nginx serving files
(`Cache-Control: max-age=3600`) or, without nginx, the bench's stand-in with no throttle;
c and d use the Woodytoys origin (the project's own when it has landed, else the stand-in)
with short delays.

Modules: `options`, `scenario` (what a scenario is), `context` (servers, load tools, CPU
readings), `hits` (the wrk scenarios), `scenarios/` (one module per scenario and the
registry), `render` (ratios, Markdown, chart), `run` (the run and `main`).
"""

from __future__ import annotations

import argparse
import sys

from bench.load import options
from bench.load.context import origin_count
from bench.load.options import Options
from bench.load.run import KNOWN, LoadRun, main
from bench.load.scenarios import REGISTRY

__all__ = ["REGISTRY", "LoadRun", "Options", "add_arguments", "description", "main", "origin_count"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, KNOWN)


def description() -> str:
    """The help text: this docstring's first paragraphs and one line per scenario."""
    head = (__doc__ or "").split("\nModules:")[0].rstrip()
    lines = []
    for scenario in REGISTRY.values():
        doc = sys.modules[type(scenario).__module__].__doc__ or scenario.title
        lines.append("  " + doc.strip().splitlines()[0].replace(". ", "  ", 1))
    return head + "\n\n" + "\n".join(lines) + "\n"
