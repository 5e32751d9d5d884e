"""`bench table --quick` on a reduced set of rows: the output's shape and its sanity.

Nothing here depends on absolute speed: a hit must only be faster than its miss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main
from tests.bench.helpers import require_edge, require_tool, run_json

FAST = ["--quick", "--heavy-seconds", "0.3", "--db-seconds", "0.3", "--static-rate", "20000000"]


def _row(data: dict[str, Any], key: str) -> dict[str, Any]:
    return next(r for r in data["rows"] if r["key"] == key)


def _assert_hits_faster(row: dict[str, Any]) -> None:
    cells = row["cells"]
    for metric in ("page", "heavy", "db"):
        assert cells[f"{metric}_miss"] is not None, (metric, row)
        assert cells[f"{metric}_hit"] < cells[f"{metric}_miss"], (metric, cells)
    heavy_hits = [s for s in row["samples"] if s["metric"] == "heavy" and s["phase"] == "hit"]
    assert heavy_hits and all(s["status"] == 200 for s in heavy_hits)


def test_table_quick_baseline_and_nginx_as_the_cache() -> None:
    require_tool("nginx")
    data = run_json(["table", *FAST, "--rows", "baseline,nginx,gcore", "--hits", "2"])
    assert data["kind"] == "table"
    assert [r["key"] for r in data["rows"]] == ["baseline", "nginx", "gcore"]
    base = _row(data, "baseline")
    # every column measured, the slow calls take at least their delay
    assert base["cells"]["heavy_miss"] >= 0.3
    assert base["cells"]["db_miss"] >= 0.3
    page = [s for s in base["samples"] if s["metric"] == "page"]
    assert len(page) == 2  # one miss, one call again (nothing caches it: no median)
    assert all(s["files"] >= 5 and s["bytes"] > 5_000_000 for s in page)  # the 5 MB background
    _assert_hits_faster(_row(data, "nginx"))
    gcore = _row(data, "gcore")
    assert gcore["quoted"] and gcore["cells"]["page_hit"] == 0.030


def test_table_writes_markdown_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["table", "--rows", "gcore", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| Gcore CDN (quoted from the lab) |" in out and "0.030 s (quoted)" in out
    assert "16.065 s" in out  # the lab's own table, quoted below ours
    names = sorted(p.suffix for p in tmp_path.iterdir())
    assert names == [".json", ".md", ".png"]


def test_table_in_api_redis_cache(redis_url: str) -> None:
    data = run_json(["table", *FAST, "--rows", "api-cache", "--hits", "1", "--redis", redis_url])
    row = _row(data, "api-cache")
    cells = row["cells"]
    assert cells["heavy_hit"] < cells["heavy_miss"]
    assert cells["db_hit"] < cells["db_miss"]


def test_table_targets_an_already_running_deployment() -> None:
    require_tool("nginx")
    from bench.procs import ProcessGroup
    from bench.servers import OriginSpec, start_origin

    with ProcessGroup() as group:
        origin = start_origin(
            group, OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=0), "t-origin"
        )
        data = run_json(["table", "--rows", "none", "--hits", "1", "--target", f"t={origin.url}"])
    row = _row(data, "target:t")
    assert row["cells"]["heavy_miss"] >= 0.2
    assert row["cells"]["page_miss"] is not None


def test_table_edge_rows(redis_url: str) -> None:
    """Runs once `python -m edge serve` exists: memory edge and Redis on 3 nodes."""
    require_edge()
    # A slower static rate than FAST's: the image is filled in 8 parallel slices, so at
    # 20 MB/s its miss (80 ms) was within reach of a hit on a loaded machine.
    slow = ["--static-rate", "2000000"]
    data = run_json(
        ["table", *FAST, *slow, "--rows", "edge,edge-redis", "--hits", "1", "--redis", redis_url]
    )
    for key in ("edge", "edge-redis"):
        row = _row(data, key)
        assert not row["note"].startswith("skipped"), row["note"]
        _assert_hits_faster(row)
    hit = next(
        s
        for s in _row(data, "edge-redis")["samples"]
        if s["metric"] == "heavy" and s["phase"] == "hit"
    )
    assert (hit["x_cache"] or "").upper().startswith("HIT")  # node 3 never fetched it
