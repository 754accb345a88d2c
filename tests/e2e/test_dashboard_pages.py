"""The dashboard's pages over the daemon's socket, without a browser: every page answers HTML
with no inline script, missing things are 404 pages, a bad filter is one line, the static
files are the installed package data, forms are refused without their CSRF token."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from importlib import resources
from urllib.parse import quote

import pytest

from conftest import KbEnv, request

pytestmark = pytest.mark.e2e
PAGES = ["/", "/jobs/docs", "/backups", "/backups?job=docs&status=complete", "/runs",
         "/runs?job=docs", "/audit", "/alerts"]


@pytest.fixture(scope="module")
def backup_id(api: KbEnv) -> str:
    return str(api.run_backup("docs")["id"])


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_html_without_inline_script(api: KbEnv, backup_id: str,
                                                  path: str) -> None:
    status, headers, body = request(api, "GET", path)
    text = body.decode()
    assert status == 200, text[:500]
    assert headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-store"
    scripts = re.findall(r"<script([^>]*)>", text)
    assert scripts == [' src="/static/live.js" defer']  # the only script, a static file
    assert not re.search(r"\son[a-z]+=", text)  # no inline event handlers
    assert 'name="viewport"' in text


def test_a_backup_page_shows_its_components_and_checksums(api: KbEnv, backup_id: str) -> None:
    shown = api.ctl_json("show", backup_id)
    status, _, body = request(api, "GET", f"/backups/{backup_id}")
    text = body.decode()
    assert status == 200
    for component in shown["components"]:
        assert component["sha256"] in text and component["file"] in text
    assert "local: complete" in text
    status, _, body = request(api, "GET", "/backups")
    assert f'data-backup="{backup_id}"' in body.decode()


def test_what_does_not_exist_is_a_404_page(api: KbEnv) -> None:
    for path, words in (("/backups/nope", "no backup with id 'nope'"),
                        ("/jobs/nope", "no job named 'nope'")):
        status, headers, body = request(api, "GET", path)
        assert status == 404 and headers["content-type"].startswith("text/html")
        assert words in html.unescape(body.decode())


def test_a_bad_filter_is_one_line_above_the_full_list(api: KbEnv, backup_id: str) -> None:
    status, _, body = request(api, "GET", "/backups?status=bogus")
    text = body.decode()
    assert status == 200
    error = re.search(r'id="flash-error">([^<]*)<', text)
    assert error and error.group(1).startswith("status: expected one of")
    assert f'data-backup="{backup_id}"' in text


def test_progress_json_lists_the_work_under_way(api: KbEnv) -> None:
    status, headers, body = request(api, "GET", "/progress.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"running": []}


def test_static_files_are_the_installed_package_data(api: KbEnv) -> None:
    static = resources.files("kbackup.web") / "static"
    for name, kind in (("dash.css", "text/css"), ("live.js", "javascript")):
        status, headers, body = request(api, "GET", f"/static/{name}")
        assert status == 200 and kind in headers["content-type"]
        assert body == (static / name).read_bytes()
    assert (resources.files("kbackup.web") / "templates" / "overview.html").is_file()


def test_a_form_post_without_csrf_token_changes_nothing(api: KbEnv) -> None:
    runs = api.ctl_json("runs")["total"]
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "0"}
    status, _, body = request(api, "POST", "/jobs/docs/run", headers=form)
    assert status == 403 and b"CSRF" in body
    assert api.ctl_json("runs")["total"] == runs


def test_kbackupctl_never_loads_the_web_code_and_the_daemon_loads_jinja2_late() -> None:
    probe = ("import sys, kbackup.{}; print(sorted(m for m in sys.modules"
             " if m.startswith(('kbackup.web', 'jinja2', 'markupsafe'))))")
    cli = subprocess.run([sys.executable, "-c", probe.format("cli")], capture_output=True,
                         text=True, check=True)
    assert cli.stdout.strip() == "[]"
    daemon = subprocess.run([sys.executable, "-c", probe.format("api.server")],
                            capture_output=True, text=True, check=True)
    loaded = daemon.stdout.strip()
    assert "kbackup.web.pages" in loaded and "jinja2" not in loaded, loaded


def test_an_outcome_is_shown_once_from_its_cookie_never_from_the_url(api: KbEnv) -> None:
    status, _, body = request(api, "GET", "/?error=Your+backups+are+gone%2C+call+555")
    assert status == 200 and b"backups are gone" not in body
    cookie = {"Cookie": "kb_flash=" + quote(json.dumps({"notice": "docs: <b>started</b>"}))
              + "; kb_csrf=" + "c" * 43}  # a CSRF cookie already: no new one set
    status, headers, body = request(api, "GET", "/alerts", headers=cookie)
    assert status == 200
    assert b'id="flash-notice">docs: &lt;b&gt;started&lt;/b&gt;<' in body  # escaped
    assert headers["set-cookie"].startswith('kb_flash=""; expires=')  # shown once
