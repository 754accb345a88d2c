"""Who may do what on the daemon's socket: real users, real groups, real SO_PEERCRED.

A session fixture creates (as root, idempotently) the groups kbt-read and kbt-admin and three
system users without a home: kbt-reader (kbt-read), kbt-operator (kbt-read + kbt-admin) and
kbt-stranger (no group). kbackupctl then runs as each of them through setpriv. The users and
groups are left in place for the next run (creation is a no-op when they already exist).
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator

import pytest
from kb_users import ADMIN_GROUP, READ_GROUP, grouped_daemon

from conftest import KBACKUPCTL, KbEnv, PgServer


@pytest.fixture
def grouped_kb(kb: KbEnv, pg: PgServer, shop_db: str,
               test_users: dict[str, int]) -> Iterator[KbEnv]:
    grouped_daemon(kb)
    kb.shop_job(pg, shop_db, None)
    kb.start()
    yield kb


class UnixHTTPConnection(http.client.HTTPConnection):
    """A plain HTTP/1.1 client on the Unix socket, independent of kbackupctl's own."""

    def __init__(self, path: str, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def http_get(kb: KbEnv, path: str) -> tuple[int, str, bytes]:
    conn = UnixHTTPConnection(str(kb.socket), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------- socket permissions


def test_socket_is_0660_owned_by_the_socket_group(grouped_kb: KbEnv) -> None:
    st = grouped_kb.socket.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam(READ_GROUP).gr_gid
    assert st.st_uid == 0


@pytest.mark.parametrize("user", [None, "kbt-reader", "kbt-operator"])
def test_status_allowed_for_root_and_group_members(grouped_kb: KbEnv, user: str | None) -> None:
    result = grouped_kb.ctl("--json", "status", user=user)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["daemon"]["pid"] == grouped_kb.proc.pid  # type: ignore[union-attr]
    assert [j["job"] for j in status["jobs"]] == ["shop"]


def test_stranger_is_refused_by_the_socket_permissions(grouped_kb: KbEnv) -> None:
    result = grouped_kb.ctl("status", user="kbt-stranger")
    assert result.returncode != 0
    assert result.stdout == ""
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kbackupctl: permission denied on")
    assert str(grouped_kb.socket) in err
    assert READ_GROUP in err  # names the group to join: the socket's real group
    assert "Traceback" not in result.stderr


def test_stranger_is_refused_by_the_daemon_when_the_socket_is_world_writable(
    grouped_kb: KbEnv, test_users: dict[str, int]
) -> None:
    """Filesystem permissions are not the only gate: the daemon checks SO_PEERCRED itself."""
    os.chmod(grouped_kb.socket, 0o666)
    result = grouped_kb.ctl("status", user="kbt-stranger")
    assert result.returncode == 1, result.stderr
    uid = test_users["kbt-stranger"]
    assert result.stderr.strip() == (
        f"kbackupctl: user kbt-stranger (uid {uid}) is not in group {READ_GROUP}:"
        " read access denied"
    )
    for args in (("jobs",), ("backups",), ("run", "shop"), ("reload",)):
        refused = grouped_kb.ctl(*args, user="kbt-stranger")
        assert refused.returncode == 1, args
        assert "read access denied" in refused.stderr, args
    # Nothing was started by the refused `run`.
    assert grouped_kb.ctl_json("runs")["items"] == []
    # Group members still get in through the world-writable socket as before.
    assert grouped_kb.ctl("status", user="kbt-reader").returncode == 0


# ---------------------------------------------------------------------- read vs admin


def test_reader_may_not_run_a_backup(grouped_kb: KbEnv) -> None:
    result = grouped_kb.ctl("run", "shop", user="kbt-reader")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "kbackupctl: user kbt-reader may only read: POST /v1/jobs/shop/run needs membership"
        f" in group {ADMIN_GROUP} (or root)"
    )
    reload = grouped_kb.ctl("reload", user="kbt-reader")
    assert reload.returncode == 1
    assert ADMIN_GROUP in reload.stderr
    assert grouped_kb.ctl_json("runs")["items"] == []  # the refused run never started
    for args in (("pause", "shop", "--reason", "x"), ("resume", "shop")):  # admin only
        refused = grouped_kb.ctl(*args, user="kbt-reader")
        assert refused.returncode == 1, args
        assert f"needs membership in group {ADMIN_GROUP}" in refused.stderr, args
    assert grouped_kb.ctl_json("status")["jobs"][0]["paused"] is None
    # Reads are fine for a reader.
    assert grouped_kb.ctl("jobs", user="kbt-reader").returncode == 0
    assert grouped_kb.ctl("backups", user="kbt-reader").returncode == 0


def test_operator_runs_a_backup_that_completes(
    grouped_kb: KbEnv, test_users: dict[str, int]
) -> None:
    result = grouped_kb.ctl("run", "shop", "--wait", user="kbt-operator")
    assert result.returncode == 0, f"{result.stderr}\n{grouped_kb.logs()}"
    backup_id = result.stdout.strip().splitlines()[-1]
    backup = grouped_kb.ctl_json("show", backup_id)
    assert backup["status"] == "complete"
    manifest = grouped_kb.backup_dir(backup) / "manifest.json"
    assert json.loads(manifest.read_text())["id"] == backup_id
    # The reader sees the operator's backup.
    listing = grouped_kb.ctl("--json", "backups", user="kbt-reader")
    assert listing.returncode == 0, listing.stderr
    assert [b["id"] for b in json.loads(listing.stdout)["items"]] == [backup_id]
    # The state-changing call is logged with who made it.
    uid = test_users["kbt-operator"]
    assert (f"event=api.call method=POST path=/v1/jobs/shop/run user=kbt-operator uid={uid}"
            " status=202") in grouped_kb.logs()


# ---------------------------------------------------------------------- API surface, errors


def test_openapi_document_lists_the_api(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    status, content_type, body = http_get(kb, "/v1/openapi.json")
    assert status == 200
    assert content_type.startswith("application/json")
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    assert "get" in paths["/v1/status"]
    assert "post" in paths["/v1/jobs/{job}/run"]
    for path, operations in paths.items():
        assert path.startswith("/v1/"), path
        for method, op in operations.items():
            assert method in ("get", "post", "put", "delete", "patch"), (path, method)
            assert op["summary"] and op["responses"], (path, method)
            for response in op["responses"].values():
                ref = response.get("$ref")
                if ref:  # every $ref resolves inside the document
                    node = doc
                    for part in ref.removeprefix("#/").split("/"):
                        node = node[part]
    # Every documented parameterless GET really answers 200 with JSON.
    for path, operations in paths.items():
        if "get" in operations and "{" not in path:
            got, _, data = http_get(kb, path)
            assert got == 200, path
            json.loads(data)
    # An undocumented path is a JSON 404, not an HTML page.
    got, content_type, data = http_get(kb, "/v1/nope")
    assert got == 404
    assert json.loads(data)["status"] == 404


def test_unknown_job_is_named_in_the_error(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    result = kb.ctl("run", "payroll", "--wait")
    assert result.returncode == 1
    assert result.stderr.strip() == "kbackupctl: no job named 'payroll' (jobs: shop)"
    assert kb.ctl_json("runs")["items"] == []


def test_unknown_backup_id_in_show(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    result = kb.ctl("show", "20990101T000000Z-abcdef")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "kbackupctl: no backup with id '20990101T000000Z-abcdef' (see `kbackupctl backups`)"
    )


def test_cli_says_not_running_without_a_daemon(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    # Never started: no socket file at all.
    result = kb.ctl("status")
    assert result.returncode != 0
    assert "kbackupd is not running" in result.stderr
    assert str(kb.socket) in result.stderr
    assert "Traceback" not in result.stderr

    # Killed: the socket file is left behind, nobody listens on it.
    kb.shop_job(pg, shop_db, None)
    kb.start()
    kb.stop(sig=9)
    assert kb.socket.exists()
    result = kb.ctl("status")
    assert result.returncode != 0
    assert "not running" in result.stderr, result.stderr
    assert str(kb.socket) in result.stderr
    assert "Traceback" not in result.stderr


def test_socket_path_from_config_when_no_socket_option(kb: KbEnv, pg: PgServer,
                                                        shop_db: str) -> None:
    """Without --socket or KBACKUP_SOCKET, kbackupctl finds the socket in kbackupd.toml."""
    kb.shop_job(pg, shop_db, None)
    kb.start()
    env = {k: v for k, v in kb.env.items() if k != "KBACKUP_SOCKET"}
    result = subprocess.run([KBACKUPCTL, "--config-dir", str(kb.config_dir), "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"pid {kb.proc.pid}" in result.stdout  # type: ignore[union-attr]
