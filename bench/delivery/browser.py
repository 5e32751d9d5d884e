"""Headless Chromium for the delivery measurements, and the edge set-up they share."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO, ProcessGroup
from bench.servers import Server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
SPKI: list[str] = []  # `hints --tls`: the bench certificate's key, trusted by this browser
ENTRIES_JS = """
const out = [];
for (const e of performance.getEntriesByType('navigation').concat(
        performance.getEntriesByType('resource'))) {
  out.push({name: e.name, start: e.startTime, responseStart: e.responseStart,
            end: e.responseEnd, transfer: e.transferSize, encoded: e.encodedBodySize,
            decoded: e.decodedBodySize, protocol: e.nextHopProtocol,
            initiator: e.initiatorType});
}
return out;
"""


@contextlib.contextmanager
def chromium(
    performance_log: bool = False, viewport: tuple[int, int, float] | None = None
) -> Iterator[Any]:
    """A fresh headless Chromium with an empty cache (the bench's and the browser tests');
    `viewport`: (width, height, device pixel ratio) of the page, exactly (DevTools'
    Emulation.setDeviceMetricsOverride), instead of the 1280x900 window's."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    if viewport is not None:
        options.add_argument(f"--force-device-scale-factor={viewport[2]}")
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    if SPKI:
        # Trusted as a valid certificate (a secure context), unlike --ignore-certificate-errors.
        options.add_argument("--ignore-certificate-errors-spki-list=" + ",".join(SPKI))
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        if viewport is not None:
            width, height, dpr = viewport
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": dpr, "mobile": False},
            )
        yield driver
    finally:
        driver.quit()


def visit(
    driver: Any, url: str, timeout: float = 60
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open `url` in a browser started with `performance_log`; once the page has loaded, its
    Resource Timing entries and the DevTools messages (`Network.*`) of the load."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.05)
    time.sleep(0.3)
    entries: list[dict[str, Any]] = driver.execute_script(ENTRIES_JS)
    messages = [json.loads(r["message"])["message"] for r in driver.get_log("performance")]
    return entries, messages


def load(url: str) -> list[dict[str, Any]]:
    """Load `url` in a fresh browser; the Resource Timing entries once the page has loaded."""
    with chromium(performance_log=True) as driver:
        entries, messages = visit(driver, url)
        # When each request really left the browser (DevTools' Network.requestWillBeSent:
        # Resource Timing dates a preload from an early hint when the page first uses it).
        sent: dict[str, float] = {}
        hints = 0
        for message in messages:
            if message.get("method") == "Network.responseReceivedEarlyHints":
                hints += 1
            if message.get("method") == "Network.requestWillBeSent":
                params = message["params"]
                sent.setdefault(params["request"]["url"], float(params["timestamp"]))
        first = min(sent.values(), default=0.0)
        for e in entries:
            if e["name"] in sent:
                e["sent_ms"] = (sent[e["name"]] - first) * 1000
            e["early_hints_seen"] = hints
        return entries


def edge_config(group: ProcessGroup, name: str, extra: dict[str, Any]) -> Path:
    raw = yaml.safe_load((REPO / "config" / "edge.yaml").read_text())
    raw.update(extra)
    path = group.subdir(name) / "edge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def purge_all(edge: Server, token: str) -> None:
    req = urllib.request.Request(
        edge.url + "/_edge/purge",
        data=json.dumps({"all": True}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def wait_tls(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the edge's TLS port {port} did not open")


def short(name: str) -> str:
    path = name.split("//", 1)[-1].split("/", 1)[-1]
    return "/" + path
