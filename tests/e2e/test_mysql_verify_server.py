"""A [[mysql]] entry's `restore_test` server: restore-tests load into a scratch database on
that second private MariaDB server, never on the source's, compare the row counts there and
drop it; a refused login there is one line naming the entry and that server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mariadb_server import USER, MariaDb, mariadb, private_server  # noqa: F401 - fixture
from test_mysql import apps, ctl, job, ok, rewrite, verify  # noqa: F401 - apps: a fixture

from conftest import KbEnv


@pytest.fixture(scope="module")
def second() -> Iterator[MariaDb]:
    """Another private server, for the scratch databases only."""
    with private_server("kbt-mariadb2-") as server:
        yield server


def restore_test_entry(server: MariaDb, password_file: Path) -> str:
    return (f'restore_test = {{ host = "127.0.0.1", port = {server.port}, user = "{USER}",'
            f' password_file = "{password_file}" }}\nexclude = ["scratch_*"]')


@pytest.fixture
def logged(apps: MariaDb, second: MariaDb) -> Iterator[tuple[MariaDb, MariaDb]]:  # noqa: F811
    """Both servers log every statement to mysql.general_log while the test runs."""
    for server in (apps, second):
        server.sql("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = ON;"
                   " TRUNCATE TABLE mysql.general_log")
    yield apps, second
    for server in (apps, second):
        server.sql("SET GLOBAL general_log = OFF; TRUNCATE TABLE mysql.general_log")


def statements(server: MariaDb, like: str) -> list[str]:
    """The logged statements mentioning `like` (but these lookups themselves)."""
    return [r[0] for r in server.sql(
        "SELECT CONVERT(argument USING utf8mb4) AS a FROM mysql.general_log"
        f" HAVING a LIKE '%{like}%' AND a NOT LIKE '%general_log%'")]


def scratch(server: MariaDb) -> list[str]:
    return [d for d in server.databases() if d.startswith("kbackup_verify")]


def test_restore_test_on_the_configured_server(
        kb: KbEnv, logged: tuple[MariaDb, MariaDb]) -> None:
    source, other = logged
    kb.write_job("shop", job(source, extra=restore_test_entry(other, other.password_file)))
    kb.start()
    described = kb.ctl_json("jobs")
    assert f"127.0.0.1:{other.port}" in str(described), described
    [probe] = kb.ctl_json("sources", "check", "shop")
    assert probe["ok"] and "MariaDB" in probe["restore_test_server"], probe
    backup = kb.run_backup()
    name = f"kbackup_verify_{backup['id'][-6:]}"
    code, output = verify(kb, backup["id"], "restore-test")
    assert code == 0, output + kb.logs()[-3000:]
    details = kb.ctl_json("show", backup["id"])["verifications"][0]["details"]
    assert details["scratch_databases"] == [name, name]
    assert details["rows_main:app_a"] == sum(source.counts("app_a").values())
    # Created, filled and dropped on the configured server; never named on the source's.
    assert any(s.startswith(f"CREATE DATABASE `{name}`") for s in statements(other, name))
    assert any(s.startswith("INSERT INTO `items`") for s in statements(other, "INSERT INTO"))
    assert any(s.startswith(f"DROP DATABASE IF EXISTS `{name}`")
               for s in statements(other, name))
    assert statements(source, "kbackup_verify") == []
    assert scratch(source) == [] and scratch(other) == []

    # The counts are compared there: a row too many in the manifest fails the test.
    rewrite(kb, backup, "main:app_b",
            change_manifest=lambda c: c["database"]["row_counts"].update(t=3))
    code, output = verify(kb, backup["id"], "restore-test")
    assert code == 1 and "table t: 3 rows in manifest, 2 restored" in output, output
    assert statements(source, "kbackup_verify") == []
    assert scratch(source) == [] and scratch(other) == []


def test_wrong_password_of_the_restore_test_server(
        kb: KbEnv, logged: tuple[MariaDb, MariaDb], tmp_path: Path) -> None:
    source, other = logged
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    kb.write_job("shop", job(source, extra=restore_test_entry(other, wrong)))
    kb.start()
    probe = ctl(kb, "sources", "check", "shop")  # says so before any verification
    assert probe.returncode == 1, probe.stdout + probe.stderr
    assert len(probe.stdout.strip().splitlines()) == 1, probe.stdout
    assert f"mysql main (restore_test server 127.0.0.1:{other.port}): ERROR 1045" \
        in probe.stdout, probe.stdout
    backup = kb.run_backup()  # the source's own login backs up
    result = ctl(kb, "verify", backup["id"], "--level", "restore-test", "--wait")
    assert result.returncode != 0
    [line] = [x for x in (result.stdout + result.stderr).splitlines() if "Access denied" in x]
    assert f"mysql main (restore_test server 127.0.0.1:{other.port})" in line, line
    assert "wrong restore_test.user or restore_test.password_file?" in line, line
    shown = kb.ctl_json("show", backup["id"])["verifications"][0]  # the newest
    assert shown["level"] == "restore-test", shown
    assert shown["problem"].startswith("could not verify: mysql main (restore_test server")
    assert "\n" not in shown["problem"]
    assert kb.ctl_json("show", backup["id"])["status"] != "corrupt"  # not the backup's fault
    assert "not the password" not in kb.logs()
    assert statements(source, "kbackup_verify") == []
    assert scratch(source) == [] and scratch(other) == []
    ok(ctl(kb, "verify", backup["id"], "--level", "structure", "--wait"), kb)
