"""The front page, checked in a real browser; reusable against any base URL (origin or edge).

    from tests.origin.browser_checks import run_page_checks
    answers = run_page_checks(driver, "http://127.0.0.1:8080")

Through a caching edge, pass `expect_fresh=False`: `last` may then be a cached answer that does
not name the product just added.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
BUTTON_IDS = (
    "btn-time",
    "btn-heavy",
    "btn-add-product",
    "btn-last",
    "btn-order",
    "btn-check-order",
)

_LOAD_BACKGROUND = """
const done = arguments[arguments.length - 1];
const css = getComputedStyle(document.body).backgroundImage;
const match = /url\\(["']?(.*?)["']?\\)/.exec(css);
if (!match) { done({ok: false, reason: "no background image in " + css}); return; }
const image = new Image();
image.onload = () => done({ok: true, url: image.src, width: image.naturalWidth,
                           height: image.naturalHeight});
image.onerror = () => done({ok: false, url: image.src, reason: "the image did not load"});
image.src = match[1];
"""


def _answer(driver: WebDriver, ident: str, timeout: float) -> str:
    """Wait until the answer element `ident` shows something, then return its text."""
    WebDriverWait(driver, timeout).until(
        lambda d: (d.find_element(By.ID, ident).get_attribute("textContent") or "").strip()
    )
    return str(driver.find_element(By.ID, ident).get_attribute("textContent")).strip()


def _type(driver: WebDriver, ident: str, text: str) -> None:
    field = driver.find_element(By.ID, ident)
    field.clear()
    field.send_keys(text)


def _click_and_read(driver: WebDriver, button: str, answer: str, timeout: float) -> str:
    driver.execute_script("document.getElementById(arguments[0]).textContent = ''", answer)
    driver.find_element(By.ID, button).click()
    return _answer(driver, answer, timeout)


def run_page_checks(
    driver: WebDriver,
    base_url: str,
    *,
    timeout: float = 60.0,
    expect_fresh: bool = True,
    check_spinner: bool = True,
) -> dict[str, Any]:
    """Load the shop's page at `base_url`, check its background image, click every button and
    check every answer. Returns what was seen. `check_spinner` needs a heavy call of at least
    a few tenths of a second."""
    base = base_url.rstrip("/")
    seen: dict[str, Any] = {}
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)
    driver.get(f"{base}/")
    assert driver.title == "Woody stuff", driver.title
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return typeof htmx !== 'undefined' && !!htmx.version")
    )
    seen["htmx"] = driver.execute_script("return htmx.version")
    for ident in BUTTON_IDS:
        assert driver.find_element(By.ID, ident).is_displayed(), ident

    background = driver.execute_async_script(_LOAD_BACKGROUND)
    assert background["ok"], background
    assert background["url"].endswith("/5mo.jpg"), background
    assert background["width"] > 0 and background["height"] > 0, background
    seen["background"] = background

    seen["time"] = _click_and_read(driver, "btn-time", "answer-time", timeout)
    assert re.fullmatch(r"misc: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", seen["time"]), seen

    name = f"selenium-{uuid.uuid4().hex[:8]}"
    _type(driver, "input-heavy", name)
    driver.execute_script("document.getElementById('answer-heavy').textContent = ''")
    driver.find_element(By.ID, "btn-heavy").click()
    if check_spinner:
        spinner = driver.find_element(By.ID, "spinner-heavy")
        WebDriverWait(driver, 5, poll_frequency=0.02).until(lambda d: spinner.is_displayed())
        seen["spinner_shown"] = True
    seen["heavy"] = _answer(driver, "answer-heavy", timeout)
    assert seen["heavy"].endswith(f": Woody -{name}- Woody"), seen
    if check_spinner:
        assert not driver.find_element(By.ID, "spinner-heavy").is_displayed()

    product = f"Toupie {uuid.uuid4().hex[:6]} <b>&'\""
    _type(driver, "input-product", product)
    seen["add_product"] = _click_and_read(driver, "btn-add-product", "answer-add-product", timeout)
    assert seen["add_product"] == product, seen  # shown as text, never as HTML

    seen["last"] = _click_and_read(driver, "btn-last", "answer-last", timeout)
    if expect_fresh:
        assert re.fullmatch(r"db: .+ - \d+ products \(last=.+\)", seen["last"], re.S), seen
        assert seen["last"].endswith(f"(last={product})"), seen
    else:
        assert seen["last"].startswith("db: ") or seen["last"] == "No product found", seen

    _type(driver, "input-order", "Yoyo")
    seen["order"] = _click_and_read(driver, "btn-order", "answer-order", timeout)
    match = re.fullmatch(rf"order ({UUID}) created for product: Yoyo", seen["order"])
    assert match, seen
    order_id = match.group(1)

    _type(driver, "input-order-id", order_id)
    seen["check_order"] = _click_and_read(driver, "btn-check-order", "answer-check-order", timeout)
    assert seen["check_order"] == f'order "{order_id}": Success', seen

    _type(driver, "input-order-id", "no-such-order")
    seen["check_unknown"] = _click_and_read(
        driver, "btn-check-order", "answer-check-order", timeout
    )
    assert seen["check_unknown"] == 'order "no-such-order": not found', seen
    seen["checked_at"] = time.time()
    return seen
