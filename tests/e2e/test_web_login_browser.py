"""The login of the TCP listener in a real headless Chromium, over TLS with the test's
self-signed certificate: a page without a session leads to /login, a wrong password is said
so on the page, the right one lands on the dashboard with a session cookie the page's scripts
cannot read; a viewer gets no action buttons. Screenshots are saved (KBACKUP_SCREENSHOTS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, full_page, screenshot_dir, until

from conftest import KbEnv
from web_access import Remote, tls_daemon

USERS = {"alice": ("admin", "alice's long password"), "vera": ("viewer", "vera's long password")}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KbEnv, Remote]]:
    base = tmp_path_factory.mktemp("loginbrowser")
    with tls_daemon(base) as (kb, http):
        for name, (role, password) in USERS.items():
            secret = base / f"{name}.password"
            secret.write_text(password + "\n")
            assert kb.ctl("web", "user", "add", name, "--role", role, "--password-file",
                          str(secret)).returncode == 0
        yield kb, http


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        # The test's certificate is self-signed: the browser is told to take it.
        driver.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": True})
        yield driver


def log_in(driver: Any, url: str, user: str, password: str) -> None:
    driver.find_element("id", "user").clear()
    driver.find_element("id", "user").send_keys(user)
    driver.find_element("id", "password").send_keys(password)
    driver.find_element("css selector", "form[action='/login'] button").click()


def test_login_in_a_browser_leads_to_the_dashboard(site: tuple[KbEnv, Remote], browser: Any,
                                                   tmp_path: Path) -> None:
    _, http = site
    url = f"https://127.0.0.1:{http.port}"
    shots = screenshot_dir(tmp_path)
    browser.get(url + "/jobs/docs")
    until(browser, lambda: browser.current_url.startswith(url + "/login"), 30, "the login")
    log_in(browser, url, "alice", "not her password")
    message = until(browser, lambda: browser.find_element("id", "login-error").text, 30,
                    "the refusal")
    assert message == "Wrong user name or password."
    full_page(browser, shots / "login-refused.png")
    log_in(browser, url, "alice", USERS["alice"][1])
    until(browser, lambda: browser.current_url == url + "/jobs/docs", 30, "the job page")
    assert browser.find_element("tag name", "h1").text.startswith("docs")
    assert "web:alice · admin" in browser.find_element("class name", "who").text
    assert browser.find_elements("css selector", "button[name=run]")  # an admin's actions
    cookie = browser.get_cookie("kb_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie").find("kb_session") == -1
    full_page(browser, shots / "login-admin-job.png")


def test_a_viewer_sees_no_action_buttons(site: tuple[KbEnv, Remote], browser: Any) -> None:
    _, http = site
    url = f"https://127.0.0.1:{http.port}"
    browser.get(url + "/login")
    log_in(browser, url, "vera", USERS["vera"][1])
    until(browser, lambda: browser.current_url == url + "/", 30, "the overview")
    assert "job-docs" in browser.page_source
    assert "web:vera · viewer" in browser.find_element("class name", "who").text
    assert not browser.find_elements("css selector", "button[name=run]")
