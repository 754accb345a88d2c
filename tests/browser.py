"""A real headless Chromium driven by selenium, for the dashboard's tests.

Debian's `chromium` and `chromium-driver` (scripts/sysdeps.sh installs them). The browser runs
with a fresh profile and without any of its own network traffic (this machine has none):
only the pages the test asks for. Screenshots go to $KBACKUP_SCREENSHOTS, or beside the test's
temporary files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A selenium WebDriver on a headless Chromium with a fresh --user-data-dir."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("chromium and chromium-driver are not installed (scripts/sysdeps.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kbchrome")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_window_size(width, height)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot_dir(fallback: Path) -> Path:
    folder = Path(os.environ.get("KBACKUP_SCREENSHOTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def full_page(driver: Any, path: Path) -> Path:
    """A screenshot of the whole page (the window grown to the page's height)."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height) + 120, 400), 4000))
    driver.save_screenshot(str(path))
    return path


def until(driver: Any, check: Callable[[], Any], timeout: float = 60.0,
          what: str = "", reload: bool = False) -> Any:
    """The first true value of `check`, tried every 0.2 s (reloading the page between tries
    when asked); AssertionError naming `what` and showing the page after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # an element replaced by a reload while we read it
            value = None
        if value:
            return value
        time.sleep(0.2)
        if reload:
            driver.refresh()
    text = driver.find_element("tag name", "body").text[:2000]
    raise AssertionError(f"timed out waiting for {what} on {driver.current_url}:\n{text}")
