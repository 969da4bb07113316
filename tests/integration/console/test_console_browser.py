"""The console in Debian's Chromium (headless, driven by Selenium through /usr/bin/chromedriver:
Selenium Manager never downloads anything) against the console stack: a cold model scaled up by
the real controller for a playground message, the fleet view, the jobs view, and a normal key
kept out of the fleet view.

Screenshots of each page are saved under the test's temporary directory (the path is printed);
`PAGEFLEET_UPDATE_SCREENSHOTS=1` also writes them to docs/console-*.png for the README.
The tests of this module run in order and share one browser (a Chromium start is the slow part).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.integration.console.conftest import ADMIN_KEY, MODEL, USER_KEY, ConsoleStack

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parents[3] / "docs"
WAIT_S = 30


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make setup` installs Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="pf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


def _screenshot(driver: WebDriver, shots: Path, name: str) -> None:
    path = shots / f"console-{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    if os.environ.get("PAGEFLEET_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / path.name)


def _wait(driver: WebDriver, condition, message: str):
    # The fleet view re-renders every 2 s: an element found a moment ago may be gone; look again.
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def _sign_in(driver: WebDriver, console: ConsoleStack, key: str) -> None:
    driver.get(console.url)
    driver.execute_script("sessionStorage.clear()")
    driver.get(console.url)
    field = _wait(driver, ec.visibility_of_element_located((By.ID, "key-input")), "no key prompt")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    _wait(driver, ec.invisibility_of_element_located((By.ID, "key-view")), "the key was not accepted")
    assert key not in driver.current_url


def _text(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_the_fleet_page_shows_the_cold_model_at_zero_replicas(
        browser: WebDriver, console: ConsoleStack) -> None:
    _sign_in(browser, console, ADMIN_KEY)
    card = f"#model-{MODEL}"
    _wait(browser, ec.visibility_of_element_located((By.CSS_SELECTOR, card)), "no model card")
    assert _text(browser, f"{card} .ready-count") == "0"
    assert "No live workers" in _text(browser, card)
    assert "CPU" in _text(browser, card)


def test_a_playground_message_starts_a_worker_and_streams_a_reply(
        browser: WebDriver, console: ConsoleStack, shots: Path) -> None:
    browser.find_element(By.ID, "tab-playground").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#model-select option[value='{MODEL}']"),
          "the model list did not load")
    Select(browser.find_element(By.ID, "model-select")).select_by_value(MODEL)
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys("6")
    browser.find_element(By.ID, "prompt").send_keys("hello from the console")
    # Every status the page shows, recorded as it changes (the cold start may be brief).
    browser.execute_script("""
        window.statuses = [];
        new MutationObserver(() => window.statuses.push(document.getElementById('chat-status').textContent))
          .observe(document.getElementById('chat-status'), {childList: true, characterData: true, subtree: true});""")
    browser.find_element(By.ID, "send").click()
    _wait(browser, lambda d: _text(d, "#chat-status").startswith("Done"),
          "the reply did not finish")
    statuses = browser.execute_script("return window.statuses")
    assert any(s.startswith("Starting a worker") for s in statuses), statuses
    assert "Streaming…" in statuses
    assert _text(browser, "#transcript .assistant").strip() == "hello from the console hello from"
    assert _text(browser, "#chat-status") == "Done: 6 tokens."
    assert _text(browser, "#ttft").endswith(" ms")
    assert f'"model":"{MODEL}"' in _text(browser, "#curl-snippet")
    assert USER_KEY not in _text(browser, "#python-snippet") and ADMIN_KEY not in _text(browser, "#curl-snippet")
    _screenshot(browser, shots, "playground")


def test_copy_buttons_work_without_the_async_clipboard(browser: WebDriver) -> None:
    """Plain http on another host is not a secure context: no `navigator.clipboard`. The page
    must copy anyway (a selected textarea and `execCommand('copy')`); what that copies is
    recorded at the moment of the copy."""
    browser.execute_script("""
        Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true});
        window.copied = [];
        const original = document.execCommand.bind(document);
        document.execCommand = (command) => {
          const a = document.activeElement;
          window.copied.push(a.value.substring(a.selectionStart, a.selectionEnd));
          return original(command);
        };""")
    for target in ("curl-snippet", "python-snippet"):
        button = browser.find_element(By.CSS_SELECTOR, f".copy[data-target='{target}']")
        button.click()
        _wait(browser, lambda d, b=button: b.text == "Copied", f"{target} was not copied")
        snippet = browser.execute_script("return document.getElementById(arguments[0]).textContent", target)
        assert snippet and browser.execute_script("return window.copied.pop()") == snippet
    assert not browser.find_elements(By.CSS_SELECTOR, "textarea.copy-buffer")  # cleaned up


def test_the_fleet_page_then_shows_one_ready_replica_and_the_scale_up_event(
        browser: WebDriver, console: ConsoleStack, shots: Path) -> None:
    browser.find_element(By.ID, "tab-fleet").click()
    card = f"#model-{MODEL}"
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{card} .ready-count")
          and _text(d, f"{card} .ready-count") == "1", "no ready replica shown")
    assert "ready" in _text(browser, f"{card} table")
    event = f"#events li[data-model='{MODEL}']"
    _wait(browser, ec.visibility_of_element_located((By.CSS_SELECTOR, event)), "no scaling event")
    assert "0 → 1" in _text(browser, event)
    assert _text(browser, f"{event} .reason")  # the policy's reason, verbatim
    assert browser.find_element(By.CSS_SELECTOR, f"{event} a").get_attribute("href").endswith(f"#model-{MODEL}")
    assert browser.find_elements(By.CSS_SELECTOR, "#queues svg.chart")
    # The playground's request left a TTFT sample; the history is the server's, so a fresh
    # page load shows it too.
    for load in ("this page", "a fresh page load"):
        if load != "this page":
            browser.refresh()
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#queues .ttft-latest")
              and re.fullmatch(r"\d+ / \d+ ms", _text(d, "#queues .ttft-latest")),
              f"no TTFT figures on {load}")
        assert browser.find_elements(By.CSS_SELECTOR, "#queues td.ttft svg.chart polyline")
    _wait(browser, lambda d: _text(d, f"{card} .ready-count") == "1", "the fleet did not reload")
    _screenshot(browser, shots, "fleet")


def test_a_normal_key_sees_its_jobs_but_not_the_fleet(
        browser: WebDriver, console: ConsoleStack, shots: Path) -> None:
    created = httpx.post(f"{console.gateway.base_url}/jobs", timeout=10,
                         headers={"Authorization": f"Bearer {USER_KEY}"},
                         json={"endpoint": "/v1/chat/completions", "body": {
                             "model": MODEL, "max_tokens": 3,
                             "messages": [{"role": "user", "content": "a queued job"}]}})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    _sign_in(browser, console, USER_KEY)
    # A normal key lands on the playground; the fleet view refuses it.
    _wait(browser, ec.visibility_of_element_located((By.ID, "playground-view")), "no playground")
    browser.find_element(By.ID, "tab-fleet").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "fleet-denied")), "fleet not refused")
    assert not browser.find_element(By.ID, "fleet-body").is_displayed()
    browser.find_element(By.ID, "tab-jobs").click()
    row = f"#jobs tr[data-job='{job_id}']"
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row)
          and _text(d, f"{row} .status") == "succeeded", "the job did not show as succeeded")
    _screenshot(browser, shots, "jobs")


PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


def _overflow(driver: WebDriver) -> list[str]:
    """What sticks out to the right of a phone's viewport: the page itself, or a visible
    control (a table may scroll inside its own box; the page may not)."""
    return driver.execute_script("""
        const width = document.documentElement.clientWidth, out = [];
        if (document.documentElement.scrollWidth > width) out.push(`page ${document.documentElement.scrollWidth} > ${width}`);
        for (const c of document.querySelectorAll('button, input, select, textarea, a')) {
          const r = c.getBoundingClientRect();
          if (r.width && c.offsetParent && !c.closest('.scroll') && (r.left < 0 || r.right > width + 0.5))
            out.push(`${c.id || c.textContent.trim() || c.tagName} ${r.left}-${r.right}`);
        }
        return out;""")


def _unlabelled(driver: WebDriver) -> list[str]:
    return driver.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')]
          .filter((c) => c.type !== 'hidden' && !c.classList.contains('copy-buffer'))
          .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
          .map((c) => c.id || c.outerHTML);""")


def test_every_view_fits_a_phone_and_works_from_the_keyboard(
        browser: WebDriver, console: ConsoleStack, shots: Path) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        _sign_in(browser, console, ADMIN_KEY)
        assert browser.execute_script("return window.innerWidth") == PHONE["width"]
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#queues .ttft-latest"), "no fleet")
        assert _overflow(browser) == []
        _screenshot(browser, shots, "phone-fleet")
        # Keyboard only: Tab to the playground tab, Enter opens it, and on into its controls.
        browser.find_element(By.TAG_NAME, "body").click()
        active = None
        for _ in range(10):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            active = browser.switch_to.active_element
            if active.get_attribute("id") == "tab-playground":
                break
        assert active is not None and active.get_attribute("id") == "tab-playground"
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        _wait(browser, ec.visibility_of_element_located((By.ID, "playground-view")), "no playground")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"#model-select option[value='{MODEL}']"),
              "the model list did not load")
        assert _overflow(browser) == [] and _unlabelled(browser) == []
        reached = set()
        for _ in range(12):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            reached.add(browser.switch_to.active_element.get_attribute("id"))
        assert {"model-select", "temperature", "max-tokens", "top-p", "prompt", "send"} <= reached
        _screenshot(browser, shots, "phone-playground")
        browser.find_element(By.ID, "tab-jobs").click()
        _wait(browser, ec.visibility_of_element_located((By.ID, "jobs-view")), "no jobs view")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs p, #jobs table"), "jobs not loaded")
        assert _overflow(browser) == []
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
