"""Shared bits of the bench tests: run the CLI in-process, skip or fail on missing tools."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest

from bench.peers import nginx_binary, varnishd_binary, wrk_binary
from bench.servers import edge_available

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> None:
    """Skip when nginx/varnishd/wrk/valgrind is missing; under CI=true that is a failure."""
    finders = {"nginx": nginx_binary, "varnishd": varnishd_binary, "wrk": wrk_binary}
    found = finders[name]() if name in finders else shutil.which(name)
    if found:
        return
    message = f"{name} is not installed"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: .ci/run installs it)")
    pytest.skip(f"{message}: apt-get install it to run this test")


def require_edge() -> None:
    """The edge rows need `python -m edge serve`: a broken one must fail, not skip."""
    assert edge_available(), "`python -m edge serve` does not start"


def run_json(argv: list[str]) -> dict[str, Any]:
    """Run `python -m bench ...--json` in-process and parse what it printed."""
    import bench.load
    import bench.table
    from bench.__main__ import build_parser

    out: list[str] = []
    command = argv[0]
    args = build_parser().parse_args([*argv, "--json", "--no-files", "--quiet"])
    module = bench.table if command == "table" else bench.load
    code = module.main(args, print_fn=out.append)
    assert code == 0
    data: dict[str, Any] = json.loads(out[-1])
    return data
