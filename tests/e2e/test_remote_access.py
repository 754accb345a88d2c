"""The API over TCP with TLS: bearer tokens made by kbackupctl on the socket, used over real
HTTPS; roles, revocation, expiry (the daemon's fake clock), guessing throttled per address;
the browser safeguards (Host, Origin, security headers) on both listeners; [web] config
errors as one line."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import KBACKUPD, KbEnv, free_port, wait_for, write_fake_now
from web_access import Remote, self_signed, socket_request, tls_daemon


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KbEnv, Remote, Path]]:
    base = tmp_path_factory.mktemp("remote")
    now_file = base / "fake-now"
    write_fake_now(now_file, datetime.now(UTC))
    with tls_daemon(base, env={"KBACKUP_FAKE_NOW_FILE": str(now_file)}) as (kb, http):
        yield kb, http, now_file


def create_token(kb: KbEnv, name: str, role: str, *extra: str) -> str:
    result = kb.ctl("token", "create", name, "--role", role, *extra)
    assert result.returncode == 0, result.stderr
    assert "shown only now" in result.stderr
    token = result.stdout.strip()
    assert token.startswith("kbk_") and len(token) > 40
    return token


def test_admin_token_runs_a_backup_and_is_never_logged(remote: tuple[KbEnv, Remote, Path]
                                                       ) -> None:
    kb, http, _ = remote
    token = create_token(kb, "shopapp", "admin", "--expires", "90d")
    started = http.request("POST", "/v1/jobs/docs/run", {"label": "from-app"}, token=token)
    assert started.status == 202, started.body
    run_id = started.json()["run_id"]

    def finished() -> dict[str, object] | None:
        run = http.request("GET", f"/v1/runs/{run_id}?wait=5", token=token).json()
        return run if run["status"] not in ("queued", "running") else None

    run = wait_for(finished, 60, "the run started over TCP")
    assert run["status"] == "complete", run
    backups = http.request("GET", "/v1/backups?job=docs", token=token).json()["items"]
    assert [b["label"] for b in backups] == ["from-app"]
    assert backups[0]["status"] == "complete"
    logs = kb.logs()
    assert "event=api.call method=POST path=/v1/jobs/docs/run user=token:shopapp" in logs
    assert token not in logs
    assert token[4:20] not in logs
    stored = (kb.state / "tokens.json").read_text()
    assert token not in stored and '"sha256"' in stored
    assert (kb.state / "tokens.json").stat().st_mode & 0o777 == 0o600
    table = kb.ctl("token", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST", "USED"]
    assert any(line.split()[:3] == ["shopapp", "admin", "active"] for line in table[1:])
    listed = {t["name"]: t for t in kb.ctl_json("token", "list")}
    assert listed["shopapp"]["role"] == "admin"
    assert listed["shopapp"]["state"] == "active"
    assert listed["shopapp"]["last_used"] is not None
    assert listed["shopapp"]["expires"] is not None


def test_viewer_token_reads_and_gets_403_on_every_change(remote: tuple[KbEnv, Remote, Path]
                                                        ) -> None:
    kb, http, _ = remote
    token = create_token(kb, "dashboard", "viewer")
    assert http.request("GET", "/v1/jobs", token=token).status == 200
    for method, path, body in (("POST", "/v1/jobs/docs/run", {}),
                               ("POST", "/v1/reload", {}),
                               ("DELETE", "/v1/backups/nothing", None),
                               ("POST", "/v1/jobs/docs/pause", {})):
        answer = http.request(method, path, body, token=token)
        assert answer.status == 403, (method, path, answer.body)
        assert answer.json()["error"] == (f"token:dashboard has the viewer role: {method}"
                                          f" {path} needs the admin role")
    assert kb.ctl_json("status")["jobs"][0]["paused"] is None


def test_no_or_malformed_credentials_get_401(remote: tuple[KbEnv, Remote, Path]) -> None:
    _, http, _ = remote
    answer = http.request("GET", "/v1/status")
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in answer.json()["error"]
    answer = http.request("GET", "/v1/status", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert answer.status == 401
    assert answer.json()["error"] == "Authorization: expected 'Bearer <token>'"
    # A page (not /v1) sends the browser to the login instead.
    page = http.request("GET", "/backups?job=docs")
    assert page.status == 303
    location = urlsplit(page.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/backups?job=docs"]}


def test_revoked_token_gets_401_saying_so(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, _ = remote
    token = create_token(kb, "old-app", "admin")
    assert http.request("GET", "/v1/status", token=token).status == 200
    result = kb.ctl("token", "revoke", "old-app")
    assert result.returncode == 0 and "revoked" in result.stdout, result.stderr
    answer = http.request("GET", "/v1/status", token=token)
    assert answer.status == 401
    assert answer.json()["error"].startswith("token old-app was revoked at ")
    listed = {t["name"]: t for t in kb.ctl_json("token", "list")}
    assert listed["old-app"]["state"] == "revoked"
    again = kb.ctl("token", "revoke", "no-such-token")
    assert again.returncode == 1 and "no token named 'no-such-token'" in again.stderr


def test_expired_token_gets_401_saying_so(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, now_file = remote
    token = create_token(kb, "short", "viewer", "--expires", "1d")
    assert http.request("GET", "/v1/status", token=token).status == 200
    try:
        write_fake_now(now_file, datetime.now(UTC) + timedelta(days=1, hours=1))
        answer = http.request("GET", "/v1/status", token=token)
        assert answer.status == 401
        assert answer.json()["error"].startswith("token short expired at ")
        listed = {t["name"]: t for t in kb.ctl_json("token", "list")}
        assert listed["short"]["state"] == "expired"
    finally:
        write_fake_now(now_file, datetime.now(UTC))
    bad = kb.ctl("token", "create", "x", "--role", "admin", "--expires", "soon")
    assert bad.returncode == 1 and bad.stderr.startswith("kbackupctl: expires:"), bad.stderr


def test_token_guessing_is_throttled_per_address(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, _ = remote
    good = create_token(kb, "guessed-at", "viewer")
    for attempt in range(10):
        answer = http.request("GET", "/v1/status", token=f"kbk_guess{attempt}",
                              source="127.0.0.9")
        assert answer.status == 401, attempt
        assert answer.json()["error"].startswith("invalid bearer token")
    throttled = http.request("GET", "/v1/status", token=good, source="127.0.0.9")
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "too many invalid tokens from 127.0.0.9" in throttled.json()["error"]
    assert http.request("GET", "/v1/status", token=good, source="127.0.0.10").status == 200


def test_tokens_are_managed_on_the_socket_only(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, _ = remote
    token = create_token(kb, "mint", "admin")
    answer = http.request("POST", "/v1/tokens", {"name": "more", "role": "admin"}, token=token)
    assert answer.status == 403
    assert "Unix socket only" in answer.json()["error"]
    assert http.request("GET", "/v1/tokens", token=token).status == 403
    assert "more" not in {t["name"] for t in kb.ctl_json("token", "list")}
    taken = kb.ctl("token", "create", "mint", "--role", "viewer")
    assert taken.returncode == 1 and "token mint already exists" in taken.stderr


def test_foreign_host_is_refused_on_both_listeners(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, _ = remote
    token = create_token(kb, "hosts", "viewer")
    answer = http.request("GET", "/v1/status", token=token, headers={"Host": "evil.example"})
    assert answer.status == 421
    assert "Host 'evil.example' is not a name of this kbackupd" in answer.json()["error"]
    status, _, body = socket_request(kb, "GET", "/v1/status",
                                     {"Host": "rebound.evil.example:8080"})
    assert status == 421, body
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "kbackupd"):
        status, _, body = socket_request(kb, "GET", "/v1/status", {"Host": host})
        assert status == 200, (host, body)
    assert http.request("GET", "/v1/status", token=token,
                        headers={"Host": f"localhost:{http.port}"}).status == 200


def test_cross_origin_changes_are_refused(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, _ = remote
    token = create_token(kb, "origins", "admin")
    here = f"https://127.0.0.1:{http.port}"
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://127.0.0.1:{http.port}"},
                    {"Sec-Fetch-Site": "cross-site"}):
        answer = http.request("POST", "/v1/jobs/no-such-job/run", {}, token=token,
                              headers=headers)
        assert answer.status == 403, (headers, answer.body)
        assert answer.json()["error"].startswith("refused:")
    for headers in ({"Origin": here, "Sec-Fetch-Site": "same-origin"},
                    {"Origin": "null", "Sec-Fetch-Site": "same-origin"}):  # no-referrer form
        same = http.request("POST", "/v1/jobs/no-such-job/run", {}, token=token,
                            headers=headers)
        assert same.status == 404, headers  # past the safeguards: the job does not exist
    sandboxed = http.request("POST", "/v1/jobs/no-such-job/run", {}, token=token,
                             headers={"Origin": "null", "Sec-Fetch-Site": "same-site"})
    assert sandboxed.status == 403
    status, _, _ = socket_request(kb, "POST", "/v1/reload", {
        "Host": "localhost:8080", "Origin": "http://evil.example", "Content-Length": "0"})
    assert status == 403


def test_security_headers_on_every_answer(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, http, _ = remote
    token = create_token(kb, "headers", "viewer")
    for answer in (http.request("GET", "/v1/status", token=token),
                   http.request("GET", "/v1/status"),  # a 401
                   http.request("GET", "/login")):
        csp = answer.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    status, headers, _ = socket_request(kb, "GET", "/v1/status", {"Host": "localhost:8080"})
    assert status == 200
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in headers  # no TLS on the socket


def test_openapi_documents_the_bearer_scheme(remote: tuple[KbEnv, Remote, Path]) -> None:
    kb, _, _ = remote
    status, _, body = socket_request(kb, "GET", "/v1/openapi.json", {"Host": "kbackupd"})
    assert status == 200
    document = json.loads(body)
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": document["components"][
            "securitySchemes"]["bearerAuth"]["description"]}
    assert {"bearerAuth": []} in document["security"]
    assert "post" in document["paths"]["/v1/tokens"]
    assert "401" in document["paths"]["/v1/jobs/{job}/run"]["post"]["responses"]


def test_reload_moves_the_listener(remote: tuple[KbEnv, Remote, Path]) -> None:
    """Last in the module: it changes the daemon's port (and puts it back)."""
    kb, http, _ = remote
    token = create_token(kb, "reloads", "viewer")
    config = (kb.config_dir / "kbackupd.toml").read_text()
    port = free_port()
    try:
        (kb.config_dir / "kbackupd.toml").write_text(
            config.replace(f"127.0.0.1:{http.port}", f"127.0.0.1:{port}"))
        assert kb.ctl("reload").returncode == 0
        moved = Remote(port, kb.base / "cert.pem")
        assert moved.request("GET", "/v1/status", token=token).status == 200
        with pytest.raises(ConnectionRefusedError):
            http.request("GET", "/v1/status", token=token)
    finally:
        (kb.config_dir / "kbackupd.toml").write_text(config)
        assert kb.ctl("reload").returncode == 0
    assert http.request("GET", "/v1/status", token=token).status == 200


# ---------------------------------------------------------------------- config errors


def check_config(tmp_path: Path, web: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "kbackupd.toml").write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\n\n[web]\n'
                                        + web)
    return subprocess.run([KBACKUPD, "--config-dir", str(conf), "--check"],
                           capture_output=True, text=True, timeout=60)


def test_listen_off_loopback_needs_tls(tmp_path: Path) -> None:
    result = check_config(tmp_path, 'listen = "0.0.0.0:8443"\n')
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{tmp_path}/conf/kbackupd.toml: web: listen = '0.0.0.0:8443' is not a loopback"
        " address: TLS is required there (set tls_cert_file and tls_key_file)")
    assert check_config(tmp_path, 'listen = "127.0.0.1:8443"\n').returncode == 0
    assert check_config(tmp_path, 'listen = "[::1]:8443"\n').returncode == 0


def test_missing_or_bad_certificate_is_one_line(tmp_path: Path) -> None:
    result = check_config(tmp_path, f'listen = "0.0.0.0:8443"\ntls_cert_file = "{tmp_path}/no'
                                    f'.pem"\ntls_key_file = "{tmp_path}/no.key"\n')
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{tmp_path}/conf/kbackupd.toml: web.tls_cert_file:"
                                     f" {tmp_path}/no.pem does not exist or is not a file")
    cert, key = self_signed(tmp_path)
    (tmp_path / "other.key").write_text("not a key\n")
    result = check_config(tmp_path, f'listen = "0.0.0.0:8443"\ntls_cert_file = "{cert}"\n'
                                    f'tls_key_file = "{tmp_path}/other.key"\n')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"web.tls_cert_file: cannot load {cert} with {tmp_path}/other.key" in result.stderr
    result = check_config(tmp_path, f'listen = "0.0.0.0:8443"\ntls_cert_file = "{cert}"\n')
    assert result.returncode == 1
    assert result.stderr.strip().endswith("web: tls_cert_file and tls_key_file go together:"
                                          " set both or neither")
    result = check_config(tmp_path, 'listen = "8443"\n')
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{tmp_path}/conf/kbackupd.toml: web.listen: expected"
                                     " HOST:PORT like \"127.0.0.1:8443\" or \"[::1]:8443\","
                                     " got '8443'")
    good = check_config(tmp_path, f'listen = "0.0.0.0:8443"\ntls_cert_file = "{cert}"\n'
                                  f'tls_key_file = "{key}"\n')
    assert good.returncode == 0, good.stderr


def test_reload_serves_a_renewed_certificate_and_keeps_a_bad_one_out(tmp_path: Path) -> None:
    with tls_daemon(tmp_path) as (kb, http):
        token = create_token(kb, "renewal", "viewer")
        assert http.request("GET", "/v1/status", token=token).status == 200
        renewed = tmp_path / "renewed"
        renewed.mkdir()
        new_cert, new_key = self_signed(renewed)
        (tmp_path / "cert.pem").write_bytes(new_cert.read_bytes())
        (tmp_path / "key.pem").write_bytes(new_key.read_bytes())
        assert kb.ctl("reload").returncode == 0
        with pytest.raises(ssl.SSLCertVerificationError):
            http.request("GET", "/v1/status", token=token)  # trusts the old certificate only
        fresh = Remote(http.port, new_cert)
        assert fresh.request("GET", "/v1/status", token=token).status == 200

        config = (kb.config_dir / "kbackupd.toml").read_text()
        (kb.config_dir / "kbackupd.toml").write_text(
            config.replace(str(tmp_path / "key.pem"), str(tmp_path / "gone.pem")))
        refused = kb.ctl("reload")
        assert refused.returncode == 1
        assert f"web.tls_key_file: {tmp_path}/gone.pem does not exist" in refused.stderr
        assert fresh.request("GET", "/v1/status", token=token).status == 200


def test_a_damaged_token_file_stops_the_start_in_one_line(kb: KbEnv) -> None:
    kb.state.mkdir(parents=True)
    (kb.state / "tokens.json").write_text("{not json")
    proc = kb.start(wait=False)
    assert proc.wait(30) == 1
    errors = [line for line in kb.logs().splitlines() if "event=daemon.start_failed" in line]
    assert len(errors) == 1 and f"{kb.state}/tokens.json: cannot read" in errors[0], kb.logs()
    assert (kb.state / "tokens.json").read_text() == "{not json"  # left as it was


def test_loopback_listener_without_tls(kb: KbEnv) -> None:
    port = free_port()
    kb.write_daemon(extra=f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
    kb.start()
    token = create_token(kb, "local", "viewer")
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read() == b"[]"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Strict-Transport-Security"] is None  # no TLS here
    finally:
        conn.close()
