"""`python -m bench.restart`: a node restarted on its disk tier answers from it at once."""

from __future__ import annotations

from bench import restart
from bench.progress import Progress
from tests.bench.helpers import require_edge


def test_a_restarted_node_serves_the_page_from_its_disk_tier() -> None:
    require_edge()
    data = restart.run(
        workers=1, static_rate=50_000_000, warm=1, progress=Progress(1, enabled=False)
    )
    cold, warm, stopped, killed = data["rows"]
    assert set(cold["x_cache"]) == {"MISS"}
    assert warm["x_cache"] == ["HIT"] * warm["files"]
    for row in (stopped, killed):  # after SIGTERM and after SIGKILL: every file a HIT
        assert row["first_x_cache"] == "HIT"
        assert row["x_cache"] == ["HIT"] * row["files"]
    text = restart.markdown(data)
    assert "after a crash (SIGKILL)" in text and "| HIT |" in text
