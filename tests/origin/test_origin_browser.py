"""End to end in headless Chromium: the page, its background image, every button."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from bench.delivery.browser import CHROMEDRIVER, CHROMIUM, chromium
from tests.origin.browser_checks import run_page_checks
from tests.origin.conftest import OriginProcess

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (Debian packages chromium, chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true: the browser test must run")
    pytest.skip(message)


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    _require_chromium()
    with chromium() as chrome:
        yield chrome


def test_page_in_chromium(driver: WebDriver, origin_process: Callable[..., OriginProcess]) -> None:
    origin = origin_process("--heavy-seconds", "0.6", "--db-seconds", "0.3", "--static-rate", "50m")
    seen = run_page_checks(driver, origin.base_url, timeout=30)
    assert seen["background"]["width"] == 3200
    assert seen["spinner_shown"]
    assert seen["htmx"].startswith("2.")
