"""The dashboard in a real headless Chromium against a real kbackupd and PostgreSQL.

The browser reaches the daemon's Unix socket through a TCP forwarder (as `ssh -L` would): run
in the test process (root) it is an admin; run as kbt-reader (socket group only) a viewer.
Screenshots are saved to $KBACKUP_SCREENSHOTS (or the test's temp dir) and were looked at.
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from browser import chromium, full_page, screenshot_dir, until
from kb_users import grouped_daemon
from unix_forward import Forwarder, ForwarderAs

from conftest import SHOP_COUNTS, SHOP_SCHEMA, KbEnv, PgServer, made_database, table_counts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(pg: PgServer) -> Iterator[str]:
    with made_database(pg, "kbt_dash", SHOP_SCHEMA) as name:
        yield name


@pytest.fixture(scope="module")
def dash(pg: PgServer, shop: str, test_users: dict[str, int],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbEnv]:
    """A daemon with socket_group kbt-read and admin_group kbt-admin, and a job whose backups
    take a couple of seconds (a before_backup hook sleeps) so their progress can be seen."""
    sockdir = Path(tempfile.mkdtemp(prefix="kbs", dir="/tmp"))
    sockdir.chmod(0o755)
    kb = KbEnv(tmp_path_factory.mktemp("dash"), sockdir)
    grouped_daemon(kb)
    kb.shop_job(pg, shop, None, extra='[hooks]\nbefore_backup = [["sleep", "3"]]\n')
    kb.start()
    try:
        yield kb
    finally:
        kb.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(dash: KbEnv) -> Iterator[Forwarder]:
    forwarder = Forwarder(dash.socket)
    yield forwarder
    forwarder.close()


@pytest.fixture(scope="module")
def viewer(dash: KbEnv) -> Iterator[ForwarderAs]:
    forwarder = ForwarderAs(dash.socket, "kbt-reader")
    yield forwarder
    forwarder.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


def css(driver: Any, selector: str) -> list[Any]:
    return list(driver.find_elements("css selector", selector))


def flash(driver: Any) -> str:
    found = css(driver, ".flash")
    return " ".join(f.text for f in found)


def fill(driver: Any, form: str, **fields: str) -> None:
    for name, value in fields.items():
        field = driver.find_element("css selector", f"{form} [name={name}]")
        if field.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(field).select_by_visible_text(value)
        else:
            field.clear()
            field.send_keys(value)
    submit(driver, driver.find_element("css selector", f"{form} button[type=submit]"))


def submit(driver: Any, button: Any) -> None:
    """Click a form's button and wait for the next page (the redirect's target) to load."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element("tag name", "html")
    button.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(page))
    until(driver, lambda: driver.execute_script("return document.readyState") == "complete",
          30, "the page to load")


def backup_ids(kb: KbEnv) -> list[str]:
    return [b["id"] for b in kb.ctl_items("backups", "shop")]


def post(url: str, path: str, body: str, cookie: str = "") -> tuple[int, str]:
    """A form POST from outside the browser (a forged one)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_overview_lists_the_jobs(dash: KbEnv, admin: Forwarder, browser: Any,
                                 shots: Path) -> None:
    browser.get(admin.url + "/")
    card = browser.find_element("id", "job-shop")
    assert "shop" in card.text and "none yet" in card.text
    assert css(browser, "#job-shop button[name=run]")  # an admin sees the action
    full_page(browser, shots / "overview-empty.png")


def test_run_now_shows_progress_then_the_new_backup(dash: KbEnv, admin: Forwarder,
                                                    browser: Any, shots: Path) -> None:
    before = set(backup_ids(dash))
    browser.get(admin.url + "/")
    submit(browser, browser.find_element("css selector", "#job-shop button[name=run]"))
    notice = browser.find_element("id", "flash-notice").text
    backup_id = notice.rsplit(" ", 1)[-1]
    assert notice.startswith("shop: started backup") and backup_id not in before
    bar = browser.find_element("css selector", f'#running .progress[data-run="{backup_id}"]')
    assert backup_id in bar.text  # shown as the page was rendered: the hook is sleeping
    until(browser, lambda: browser.find_element("id", "running").get_attribute("data-polled"),
          10, "live.js polling /progress.json")
    browser.save_screenshot(str(shots / "overview-running.png"))
    # live.js reloads the page once the run ends: the card then shows the new backup.
    until(browser, lambda: backup_id in browser.find_element(
        "css selector", "#job-shop .backup-id").text, 60, "the new backup on the overview")
    assert not css(browser, f'.progress[data-run="{backup_id}"]')
    assert set(backup_ids(dash)) == before | {backup_id}
    assert "event=api.call method=POST path=/jobs/shop/run user=root" in dash.logs()
    browser.get(admin.url + "/backups")
    row = browser.find_element("css selector", f'tr[data-backup="{backup_id}"]')
    assert "complete" in row.text and "shop" in row.text
    full_page(browser, shots / "backups.png")


def latest(dash: KbEnv) -> str:
    ids = backup_ids(dash)
    return ids[0] if ids else dash.run_backup()["id"]


def test_verify_from_the_backup_page(dash: KbEnv, admin: Forwarder, browser: Any,
                                     shots: Path) -> None:
    backup_id = latest(dash)
    browser.get(f"{admin.url}/backups/{backup_id}")
    fill(browser, "#verify-form", level="structure")
    assert "structure verification started" in flash(browser)
    until(browser, lambda: "passed" in browser.find_element("id", "verifications").text,
          90, "the verification to pass", reload=True)
    shown = dash.ctl_json("show", backup_id)["verification"]
    assert shown["level"] == "structure" and shown["ok"] is True
    components = browser.find_element("id", "components").text
    assert "shop" in components
    assert all(c["sha256"] in components for c in dash.ctl_json("show", backup_id)
               ["components"])
    rows = browser.find_element("css selector", "details.rows").text
    assert "public.invoices" in rows and "2000" in rows
    full_page(browser, shots / "backup.png")


def test_restore_into_a_new_database(dash: KbEnv, admin: Forwarder, browser: Any,
                                     pg: PgServer) -> None:
    backup_id = latest(dash)
    target = f"kbt_dash_new_{uuid.uuid4().hex[:6]}"
    browser.get(f"{admin.url}/backups/{backup_id}")
    fill(browser, "#restore-form", to_database=target, confirm=target + "x")
    assert "not restored: type the new database's name" in flash(browser)
    assert not pg.query("postgres", "SELECT 1 FROM pg_database WHERE datname=%s", (target,))
    try:
        fill(browser, "#restore-form", to_database=target, confirm=target)
        assert f"into database {target} started" in flash(browser)
        assert urlparse(browser.current_url).path == "/audit"
        until(browser, lambda: "complete" in browser.find_element("id", "audit").text,
              90, "the restore to finish", reload=True)
        assert table_counts(pg, target) == SHOP_COUNTS
        entry = dash.ctl_items("audit")[0]
        assert entry["kind"] == "restore" and entry["user"] == "root"
    finally:
        pg.drop_database(target)


def test_delete_needs_the_typed_id(dash: KbEnv, admin: Forwarder, browser: Any) -> None:
    older = latest(dash)
    dash.run_backup()  # the newest complete backup may not be deleted: delete an older one
    browser.get(f"{admin.url}/backups/{older}")
    fill(browser, "#delete-form", confirm="yes")
    assert f"not deleted: type the backup id {older}" in flash(browser)
    assert older in backup_ids(dash)
    fill(browser, "#delete-form", confirm=older)
    assert f"backup {older} deleted" in flash(browser)
    assert urlparse(browser.current_url).path == "/backups"
    assert not css(browser, f'tr[data-backup="{older}"]')
    assert older not in backup_ids(dash)
    assert dash.ctl("show", older).returncode != 0


def test_silence_and_unsilence_an_alert(dash: KbEnv, admin: Forwarder, browser: Any,
                                        shots: Path) -> None:
    browser.get(admin.url + "/alerts")
    fill(browser, "#silence-form", match="shop", reason="moving the server")
    assert "shop silenced for 1d" in flash(browser)
    row = browser.find_element("css selector", 'tr[data-silence="shop"]')
    assert "moving the server" in row.text and "root" in row.text
    assert dash.ctl_json("alerts")["silences"][0]["match"] == "shop"
    full_page(browser, shots / "alerts.png")
    submit(browser, row.find_element("css selector", "button[name=unsilence]"))
    assert "shop unsilenced" in flash(browser)
    assert not css(browser, 'tr[data-silence="shop"]')
    assert dash.ctl_json("alerts")["silences"] == []


def test_a_viewer_sees_no_actions_and_cannot_post(dash: KbEnv, viewer: ForwarderAs,
                                                  browser: Any) -> None:
    backup_id = latest(dash)
    for page in ("/", "/jobs/shop", "/backups", f"/backups/{backup_id}", "/alerts", "/runs"):
        browser.get(viewer.url + page)
        assert "kbt-reader · viewer" in browser.find_element("css selector", ".who").text
        assert not css(browser, "form[method=post]"), page
        assert not css(browser, "button[name=run], button[name=delete]"), page
    runs = dash.ctl_json("runs")["total"]
    token = "t" * 43  # a well-formed cookie/field pair: CSRF passes, the role does not
    status, body = post(viewer.url, "/jobs/shop/run", f"csrf_token={token}",
                        f"kb_csrf={token}")
    assert status == 403 and "kbt-reader may only read" in body
    status, body = post(viewer.url, f"/backups/{backup_id}/delete",
                        f"csrf_token={token}&confirm={backup_id}", f"kb_csrf={token}")
    assert status == 403
    assert backup_id in backup_ids(dash) and dash.ctl_json("runs")["total"] == runs


def test_a_form_without_its_csrf_token_is_refused(dash: KbEnv, admin: Forwarder,
                                                  browser: Any) -> None:
    runs = dash.ctl_json("runs")["total"]
    status, body = post(admin.url, "/jobs/shop/run", "")
    assert status == 403 and "CSRF" in body
    status, _ = post(admin.url, "/jobs/shop/run", "csrf_token=" + "a" * 43, "kb_csrf=" + "b" * 43)
    assert status == 403
    # The browser's own form with its hidden field emptied (as a page of another origin
    # would post it: without the token it cannot read).
    browser.get(admin.url + "/")
    browser.execute_script(
        "document.querySelector('#job-shop input[name=csrf_token]').value = ''")
    submit(browser, browser.find_element("css selector", "#job-shop button[name=run]"))
    assert "CSRF" in browser.find_element("tag name", "body").text
    assert dash.ctl_json("runs")["total"] == runs


def test_pages_keep_working_through_a_reload(dash: KbEnv, admin: Forwarder, browser: Any,
                                             pg: PgServer, shop: str) -> None:
    browser.get(admin.url + "/")
    assert not css(browser, "#job-files")
    tree = dash.base / "docs"
    tree.mkdir(exist_ok=True)
    (tree / "a.txt").write_text("hello\n")
    dash.write_job("files", f'targets = ["local"]\n\n[[files]]\nname = "docs"\npath = "{tree}"\n')
    try:
        assert dash.ctl("reload").returncode == 0
        browser.get(admin.url + "/")
        assert "files" in browser.find_element("id", "job-files").text
        browser.get(admin.url + "/jobs/files")
        assert browser.find_element("tag name", "h1").text.startswith("files")
    finally:
        (dash.jobs_dir / "files.toml").unlink()
        dash.ctl("reload")


def test_job_page_draws_the_history(dash: KbEnv, admin: Forwarder, browser: Any,
                                    shots: Path) -> None:
    backups = backup_ids(dash)
    browser.get(admin.url + "/jobs/shop")
    charts = css(browser, "svg.chart")
    assert len(charts) == 3
    dots = css(browser, "svg.chart circle.dot")
    sizes = charts[0].find_elements("css selector", "circle")
    assert len(sizes) == len(backups) and dots
    full_page(browser, shots / "job.png")
    browser.set_window_size(390, 844)  # a phone
    browser.get(admin.url + "/")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the overview is {width}px wide at phone width"
    full_page(browser, shots / "overview-phone.png")
    browser.set_window_size(1280, 900)
