"""The shop's page in real headless Chromium, through an edge node (both real processes):
every button works through the edge, and a second visitor's page comes from the cache."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.delivery.browser import chromium
from tests.origin.browser_checks import run_page_checks
from tests.origin.conftest import free_port, start_origin
from tests.origin.test_origin_browser import _require_chromium

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"edge exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if get_json(url)["status"] == "ok":
                return
        time.sleep(0.1)
    raise AssertionError("edge did not become healthy")


def test_page_through_the_edge(tmp_path: Path) -> None:
    _require_chromium()
    origin = start_origin(
        [
            "--heavy-seconds",
            "0.6",
            "--db-seconds",
            "0.3",
            "--static-rate",
            "20m",
            "--db",
            f"sqlite:///{tmp_path}/w.sqlite3",
        ],
        tmp_path / "origin.log",
    )
    port = free_port()
    log = (tmp_path / "edge.log").open("wb")
    edge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge",
            "serve",
            "--config",
            str(ROOT / "config" / "edge.yaml"),
            "--port",
            str(port),
            "--origin",
            origin.base_url,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_health(f"{base}/_edge/health", edge)
        with chromium() as driver:
            seen = run_page_checks(driver, base, timeout=30, expect_fresh=False)  # type: ignore[arg-type]
        assert seen["background"]["width"] > 0
        before = get_json(f"{base}/_edge/stats")
        with chromium() as driver:  # a second visitor, with an empty browser cache
            driver.get(f"{base}/")  # type: ignore[attr-defined]
            assert driver.title == "Woody stuff"  # type: ignore[attr-defined]
            driver.execute_async_script(  # type: ignore[attr-defined]
                "const done = arguments[0]; const i = new Image();"
                "i.onload = () => done(i.naturalWidth); i.onerror = () => done(0);"
                "i.src = '/5mo.jpg';"
            )
        after = get_json(f"{base}/_edge/stats")
        origin_stats = get_json(f"{origin.base_url}/_origin/stats")
    finally:
        edge.terminate()
        edge.wait(20)
        origin.stop()
    hits = after["results"]["HIT"] - before["results"]["HIT"]  # type: ignore[index]
    assert hits >= 2, (before, after)  # the page and the image at least
    # config/edge.yaml fetches the image once, in 128 KB slices (edge/engine/slices.py).
    slices = -(-(ROOT / "origin" / "static" / "5mo.jpg").stat().st_size // (128 * 1024))
    assert origin_stats["paths"]["/5mo.jpg"] == slices, origin_stats  # type: ignore[index]
    assert origin_stats["paths"]["/"] == 1, origin_stats  # type: ignore[index]
