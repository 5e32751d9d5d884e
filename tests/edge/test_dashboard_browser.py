"""The dashboard in headless Chromium, on two real edge nodes sharing a real Redis: the page
renders, its numbers and charts move with traffic, and a purge sent from its form empties
what it names on both nodes. Makes the README's screenshot (docs/dashboard.png when
UPDATE_SCREENSHOTS=1, else in the test's directory)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.delivery.browser import chromium
from tests.edge.ops_helpers import ROOT, TOKEN, EdgeProcess, fetch, start_edge, wait_for
from tests.origin.conftest import start_origin
from tests.origin.test_origin_browser import _require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.redis]
CACHED_ONLY = {"Cache-Control": "only-if-cached"}


def cached(edge: EdgeProcess, path: str) -> bool:
    """Whether the node holds `path` (only-if-cached: 504 when it does not)."""
    status, headers, _ = fetch(edge.url(path), CACHED_ONLY)
    return status == 200 and headers["X-Cache"] == "HIT"


def load(edges: list[EdgeProcess], seconds: float, stop: threading.Event) -> None:
    """Traffic of changing rates for a while: hits mostly, some misses."""
    start = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        phase = int(time.monotonic() - start)
        for edge in edges:
            fetch(edge.url("/"))
            fetch(edge.url(f"/api/misc/heavy?name=n{i % (2 + phase)}"))
            if i % 3 == 0:
                fetch(edge.url("/5mo.jpg"))
        i += 1
        time.sleep(0.02 * (1 + phase % 3))


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def test_dashboard_renders_moves_and_purges_every_node(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    _require_chromium()
    origin = start_origin(
        [
            "--static-rate",
            "0",
            "--heavy-seconds",
            "0.05",
            "--db-seconds",
            "0.05",
            "--db",
            f"sqlite:///{tmp_path}/w.sqlite3",
        ],
        tmp_path / "origin.log",
    )
    config = tmp_path / "edge.yaml"
    config.write_text(
        (ROOT / "config" / "edge.yaml")
        .read_text()
        .replace("  prefix: edge", f"  prefix: {key_prefix}")
    )
    common = ("--redis", redis_url)
    a = start_edge(
        tmp_path,
        origin.base_url,
        *common,
        "--node",
        "edge-a",
        "--workers",
        "2",
        config=config,
        name="a",
    )
    b = start_edge(tmp_path, origin.base_url, *common, "--node", "edge-b", config=config, name="b")
    stop = threading.Event()
    try:
        for edge in (a, b):
            for path in ("/5mo.jpg", "/"):
                fetch(edge.url(path))
            wait_for(lambda e=edge: cached(e, "/5mo.jpg"), timeout=5)
        with chromium() as driver:
            driver.set_window_size(1440, 1200)  # type: ignore[attr-defined]
            driver.get(a.url("/_edge/dashboard"))  # type: ignore[attr-defined]
            wait_for(lambda: driver.execute_script("return document.body.dataset.ready"))  # type: ignore[attr-defined]
            assert driver.title == "Woodytoys Edge · dashboard"  # type: ignore[attr-defined]
            assert text(driver, "node-name") == "edge-a"
            assert not driver.find_elements("id", "purge-form")  # type: ignore[attr-defined]
            assert text(driver, "workers-count") == "2"
            before = int(driver.execute_script("return document.body.dataset.requests"))  # type: ignore[attr-defined]

            worker = threading.Thread(target=load, args=([a, b], 6.0, stop))
            worker.start()
            worker.join(20)

            def moved() -> int:
                now = int(driver.execute_script("return document.body.dataset.requests"))  # type: ignore[attr-defined]
                return now if now >= before + 50 else 0

            wait_for(moved, timeout=10)
            assert int(driver.find_element("id", "chart-requests").get_attribute("data-points")) > 3  # type: ignore[attr-defined]
            assert text(driver, "rps") not in ("-", "0.0")
            assert "/5mo.jpg" in text(driver, "top-bytes")
            assert "/" in text(driver, "top-hits")

            def both_nodes() -> str:
                shown = text(driver, "nodes")
                return shown if "edge-a" in shown and "edge-b" in shown else ""

            nodes = wait_for(both_nodes, timeout=10)
            assert "edge-b" in nodes

            # the purge form appears with the token only, and purges every node
            driver.find_element("id", "token").send_keys(TOKEN)  # type: ignore[attr-defined]
            driver.find_element("id", "unlock").click()  # type: ignore[attr-defined]
            wait_for(lambda: driver.find_elements("id", "purge-form"))  # type: ignore[attr-defined]
            assert cached(a, "/5mo.jpg") and cached(b, "/5mo.jpg")
            driver.find_element("id", "purge-url").send_keys("/5mo.jpg")  # type: ignore[attr-defined]
            driver.find_element("id", "purge-submit").click()  # type: ignore[attr-defined]
            wait_for(
                lambda: driver.find_element("id", "purge-result").get_attribute("data-done")  # type: ignore[attr-defined]
            )
            result = text(driver, "purge-result")
            assert result.startswith("urls: ") and "acks 3/3" in result, result
            assert not cached(a, "/5mo.jpg") and not cached(b, "/5mo.jpg")
            wait_for(lambda: "urls by edge-a" in text(driver, "last-purge"), timeout=5)
            # the screenshot: the last minute, from the top of the page
            from selenium.webdriver.support.ui import Select

            Select(driver.find_element("id", "window")).select_by_value("60")  # type: ignore[attr-defined]
            driver.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
            time.sleep(1.2)  # one more refresh of the charts
            shot = tmp_path / "dashboard.png"
            driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
        assert shot.stat().st_size > 20_000
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copy(shot, ROOT / "docs" / "dashboard.png")
    finally:
        stop.set()
        for edge in (a, b):
            edge.stop()
        origin.stop()
