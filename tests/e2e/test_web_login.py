"""Web users and their logins on the TCP listener over TLS: kbackupctl web user add/list/remove
on the socket, the /login form with its CSRF token, the session cookie's flags, roles of a
session, logout, throttled guessing (per address and per name)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from conftest import KbEnv
from web_access import Answer, Remote, socket_request, tls_daemon

PASSWORDS = {"alice": "correct horse battery", "victor": "viewer only please",
             "mallory": "will be guessed at"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KbEnv, Remote]]:
    base = tmp_path_factory.mktemp("weblogin")
    with tls_daemon(base) as (kb, http):
        for name, role in (("alice", "admin"), ("victor", "viewer"), ("mallory", "admin")):
            secret = base / f"{name}.password"
            secret.write_text(PASSWORDS[name] + "\n")
            result = kb.ctl("web", "user", "add", name, "--role", role,
                            "--password-file", str(secret))
            assert result.returncode == 0, result.stderr
        yield kb, http


def login_form(http: Remote, source: str = "127.0.0.1") -> tuple[str, str]:
    """GET /login: the CSRF cookie and the form's hidden token (the same value)."""
    page = http.request("GET", "/login?next=/jobs", source=source)
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store"
    field = re.search(rb'name="csrf_token" value="([^"]+)"', page.body)
    assert field is not None, page.body
    cookie = page.cookies()["kb_csrf"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    return cookie.split(";")[0].split("=", 1)[1], field.group(1).decode()


def log_in(http: Remote, user: str, password: str, source: str = "127.0.0.1") -> Answer:
    cookie, token = login_form(http, source)
    return http.request("POST", "/login", source=source, headers={"Cookie": f"kb_csrf={cookie}"},
                        form={"csrf_token": token, "user": user, "password": password,
                              "next": "/jobs"})


def session_of(answer: Answer) -> str:
    assert answer.status == 303, answer.body
    return answer.cookies()["kb_session"].split(";")[0].split("=", 1)[1]


def test_users_are_listed_without_their_hashes(site: tuple[KbEnv, Remote]) -> None:
    kb, _ = site
    users = {u["name"]: u for u in kb.ctl_json("web", "user", "list")}
    assert {n: u["role"] for n, u in users.items()} == {"alice": "admin", "victor": "viewer",
                                                        "mallory": "admin"}
    stored = (kb.state / "web-users.json").read_text()
    assert "$argon2id$" in stored
    assert (kb.state / "web-users.json").stat().st_mode & 0o777 == 0o600
    assert all(password not in stored for password in PASSWORDS.values())
    assert all(password not in kb.logs() for password in PASSWORDS.values())
    again = kb.ctl("web", "user", "add", "alice", "--role", "viewer", "--password-file",
                   str(kb.base / "alice.password"))
    assert again.returncode == 1 and "web user alice already exists" in again.stderr
    short = kb.base / "short.password"
    short.write_text("short\n")
    bad = kb.ctl("web", "user", "add", "bob", "--role", "viewer", "--password-file", str(short))
    assert bad.returncode == 1
    assert bad.stderr.strip() == "kbackupctl: password: expected 10 to 1024 characters, got 5"
    no_tty = kb.ctl("web", "user", "add", "bob", "--role", "viewer")
    assert no_tty.returncode == 2 and "--password-file" in no_tty.stderr


def test_login_sets_a_strict_session_cookie(site: tuple[KbEnv, Remote]) -> None:
    kb, http = site
    answer = log_in(http, "alice", PASSWORDS["alice"])
    assert answer.headers["Location"] == "/jobs"
    cookie = answer.cookies()["kb_session"]
    flags = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in flags and "Secure" in flags and "SameSite=Strict" in flags
    assert "Path=/" in flags and any(f.startswith("Max-Age=") for f in flags)
    sid = session_of(answer)
    assert len(sid) >= 40
    status = http.request("GET", "/v1/status", headers={"Cookie": f"kb_session={sid}"})
    assert status.status == 200 and status.json()["jobs"][0]["job"] == "docs"
    missing = http.request("POST", "/v1/jobs/no-such-job/run", {},
                           headers={"Cookie": f"kb_session={sid}"})
    assert missing.status == 404  # an admin session gets past the guard
    assert kb.ctl("reload").returncode == 0  # sessions outlive a reload
    assert http.request("GET", "/v1/jobs", headers={"Cookie": f"kb_session={sid}"}).status == 200
    assert "event=web.login user=alice role=admin from=127.0.0.1" in kb.logs()


def test_viewer_session_reads_only(site: tuple[KbEnv, Remote]) -> None:
    _, http = site
    sid = session_of(log_in(http, "victor", PASSWORDS["victor"]))
    cookie = {"Cookie": f"kb_session={sid}"}
    assert http.request("GET", "/v1/jobs", headers=cookie).status == 200
    refused = http.request("POST", "/v1/jobs/docs/run", {}, headers=cookie)
    assert refused.status == 403
    assert refused.json()["error"] == ("web:victor has the viewer role: POST /v1/jobs/docs/run"
                                       " needs the admin role")


def test_login_form_needs_its_csrf_token(site: tuple[KbEnv, Remote]) -> None:
    _, http = site
    cookie, token = login_form(http)
    fields = {"user": "alice", "password": PASSWORDS["alice"]}
    for headers, form in (({}, {**fields, "csrf_token": token}),  # no cookie
                          ({"Cookie": f"kb_csrf={cookie}"}, fields),  # no field
                          ({"Cookie": f"kb_csrf={cookie}"}, {**fields, "csrf_token": "x" * 43})):
        answer = http.request("POST", "/login", headers=headers, form=form)
        assert answer.status == 403, answer.body
        assert "CSRF token" in answer.json()["error"]
        assert "kb_session" not in answer.cookies()
    cross = http.request("POST", "/login", form={**fields, "csrf_token": token},
                         headers={"Cookie": f"kb_csrf={cookie}",
                                  "Origin": "https://evil.example"})
    assert cross.status == 403 and "kb_session" not in cross.cookies()


def test_wrong_passwords_are_throttled(site: tuple[KbEnv, Remote]) -> None:
    kb, http = site
    for attempt in range(5):
        answer = log_in(http, "mallory", f"guess number {attempt}", source="127.0.0.20")
        assert answer.status == 401, attempt
        assert b"Wrong user name or password." in answer.body
    throttled = log_in(http, "mallory", PASSWORDS["mallory"], source="127.0.0.20")
    assert throttled.status == 429
    assert b"Too many failed logins: try again in" in throttled.body
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "kb_session" not in throttled.cookies()
    # The name is throttled from any address; the address for any name.
    assert log_in(http, "mallory", PASSWORDS["mallory"], source="127.0.0.21").status == 429
    assert log_in(http, "alice", PASSWORDS["alice"], source="127.0.0.20").status == 429
    assert log_in(http, "alice", PASSWORDS["alice"], source="127.0.0.21").status == 303
    assert "event=web.login_throttled user='mallory' from=127.0.0.20" in kb.logs()
    # An unknown name costs the same and counts for the address too.
    assert log_in(http, "nobody", "whatever it is", source="127.0.0.22").status == 401


def test_logout_and_removal_end_sessions(site: tuple[KbEnv, Remote]) -> None:
    kb, http = site
    sid = session_of(log_in(http, "alice", PASSWORDS["alice"]))
    cookie, token = login_form(http)
    out = http.request("POST", "/logout", form={"csrf_token": token},
                       headers={"Cookie": f"kb_csrf={cookie}; kb_session={sid}"})
    assert out.status == 303 and out.headers["Location"] == "/login"
    ended = http.request("GET", "/v1/status", headers={"Cookie": f"kb_session={sid}"})
    assert ended.status == 401
    assert ended.json()["error"] == "session expired or ended: log in again at /login"

    secret = kb.base / "temp.password"
    secret.write_text("temporary password\n")
    assert kb.ctl("web", "user", "add", "temp", "--role", "viewer", "--password-file",
                  str(secret)).returncode == 0
    sid = session_of(log_in(http, "temp", "temporary password"))
    assert http.request("GET", "/v1/jobs", headers={"Cookie": f"kb_session={sid}"}).status == 200
    removed = kb.ctl("web", "user", "remove", "temp")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert http.request("GET", "/v1/jobs", headers={"Cookie": f"kb_session={sid}"}).status == 401
    assert "temp" not in {u["name"] for u in kb.ctl_json("web", "user", "list")}


def test_a_session_page_logs_out_with_its_own_form(site: tuple[KbEnv, Remote]) -> None:
    """Every page of a web login has a Log out form; posting it (the page's own CSRF token)
    ends the session. On the socket there is nothing to log out of, so no form."""
    kb, http = site
    sid = session_of(log_in(http, "victor", PASSWORDS["victor"]))
    page = http.request("GET", "/", headers={"Cookie": f"kb_session={sid}"})
    assert page.status == 200 and b'action="/logout"' in page.body
    token = re.search(rb'action="/logout".*?name="csrf_token" value="([^"]+)"', page.body)
    assert token is not None, page.body
    cookie = page.cookies()["kb_csrf"].split(";")[0].split("=", 1)[1]
    assert cookie == token.group(1).decode()
    out = http.request("POST", "/logout", form={"csrf_token": cookie},
                       headers={"Cookie": f"kb_csrf={cookie}; kb_session={sid}"})
    assert out.status == 303 and out.headers["Location"] == "/login"
    after = http.request("GET", "/v1/jobs", headers={"Cookie": f"kb_session={sid}"})
    assert after.status == 401
    _, _, socket_page = socket_request(kb, "GET", "/", {"Host": "localhost:8080"})
    assert b"Overview" in socket_page and b'action="/logout"' not in socket_page


def test_the_socket_needs_no_login(site: tuple[KbEnv, Remote]) -> None:
    kb, _ = site
    status, headers, _ = socket_request(kb, "GET", "/login?next=/jobs",
                                        {"Host": "localhost:8080"})
    assert status == 303 and headers["location"] == "/jobs"
    status, headers, _ = socket_request(kb, "GET", "/login?next=//evil.example/",
                                        {"Host": "localhost:8080"})
    assert status == 303 and headers["location"] == "/"


def test_login_page_is_plain_html_without_script(site: tuple[KbEnv, Remote]) -> None:
    _, http = site
    page = http.request("GET", "/login")
    assert page.headers["Content-Type"].startswith("text/html")
    assert b"<script" not in page.body and b" style=" not in page.body
    assert b'<form method="post" action="/login" class="action">' in page.body
