"""Every database of a server (`databases = "*"`), found at each run, through a real kbackupd.

The databases live in private clusters of this module (the shared server holds other tests'
databases, which "*" would find): one to back up, one fresh server to restore onto."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import KBACKUPCTL, KbEnv, PgServer, _start_private_cluster, table_counts

ROWS = {"app_a": 10, "app_b": 20, "scratch_x": 3}


def fill(server: PgServer, name: str, rows: int) -> None:
    server.create_database(name)
    server.query(name, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    server.query(name, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g",
                 (rows,))


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgServer]:
    """A private cluster with app_a, app_b (backed up) and scratch_x (excluded)."""
    base = Path(tempfile.mkdtemp(prefix="kbmdb"))
    server, stop = _start_private_cluster(base)
    try:
        # kbt_pw logs in with a password (the rest of the cluster trusts everyone).
        hba = base / "pgdata" / "pg_hba.conf"
        hba.write_text("host all kbt_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        server.query("postgres", "SELECT pg_reload_conf()")
        server.query("postgres", "CREATE ROLE kbt_pw LOGIN PASSWORD 'right' IN ROLE"
                                 " pg_read_all_data")
        server.query("postgres", "CREATE ROLE app_owner")
        for name, rows in ROWS.items():
            fill(server, name, rows)
        server.query("app_a", "ALTER TABLE t OWNER TO app_owner")
        yield server
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh() -> Iterator[PgServer]:
    """A new, empty server to restore onto."""
    base = Path(tempfile.mkdtemp(prefix="kbnew"))
    server, stop = _start_private_cluster(base)
    try:
        yield server
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def job(server: PgServer, user: str = "postgres", extra: str = "",
        exclude: str = '["scratch_*", "locked_*"]') -> str:
    return f"""
schedules = [ {{ cron = "0 2 * * *" }} ]
targets = ["local"]
timeout = "10m"

[[postgres]]
name = "main"
dsn = "host={server.host} port={server.port} user={user} dbname=postgres"
databases = "*"
exclude = {exclude}
{extra}
"""


def ctl(kb: KbEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KBACKUPCTL, "--socket", str(kb.socket), *args], env=kb.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=180)


def ok(result: subprocess.CompletedProcess[str], kb: KbEnv) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n" \
        f"{result.stderr}\n--- daemon log ---\n{kb.logs()[-4000:]}"
    return result.stdout


def components(backup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in backup["manifest"]["components"]}


def test_every_database_found_at_each_run_and_restored(kb: KbEnv, cluster: PgServer,
                                                       fresh: PgServer) -> None:
    kb.write_job("multi", job(cluster))
    kb.start()
    first = kb.run_backup("multi")
    held = components(first)
    assert sorted(held) == ["config", "main.globals", "main:app_a", "main:app_b",
                            "main:postgres"]
    assert held["main:app_a"]["database"]["row_counts"] == {"public.t": 10}
    assert held["main:app_b"]["database"]["row_counts"] == {"public.t": 20}
    assert held["main:app_a"]["file"].startswith("mdb-main.app_a.dump")
    assert "missing_components" not in first["manifest"]

    try:
        _appear_go_restore(kb, cluster, fresh, first)
    finally:
        for name in ("app_c", "app_c_copy"):
            cluster.drop_database(name)


def _appear_go_restore(kb: KbEnv, cluster: PgServer, fresh: PgServer,
                       first: dict[str, Any]) -> None:
    # Between two runs: a database appears, another one goes.
    fill(cluster, "app_c", 5)
    cluster.drop_database("app_b")
    try:
        second = kb.run_backup("multi")
    finally:
        fill(cluster, "app_b", ROWS["app_b"])
    held = components(second)
    assert "main:app_c" in held and "main:app_b" not in held
    assert held["main:app_c"]["database"]["row_counts"] == {"public.t": 5}
    notes = second["manifest"]["notes"]
    assert len(notes) == 1 and notes[0].startswith("WARNING: component main:app_b of backup"
                                                   f" {first['id']} is gone")
    assert "event=component.new job=multi" in kb.logs() and "component=main:app_c" in kb.logs()
    assert "event=component.gone job=multi" in kb.logs()
    assert f"\n  {notes[0]}\n" in ok(ctl(kb, "show", second["id"]), kb)

    # Each database component is verified on its own (restored into scratch, rows compared).
    ok(ctl(kb, "verify", second["id"], "--level", "restore-test", "--wait"), kb)
    verification = kb.ctl_json("show", second["id"])["verification"]
    assert (verification["level"], verification["ok"]) == ("restore-test", True), verification

    # One database of the backup, into another name.
    ok(ctl(kb, "restore", second["id"], "--component", "main:app_c", "--to-database",
           "app_c_copy", "--yes"), kb)
    assert table_counts(cluster, "app_c_copy") == {"public.t": 5}

    # Over the live database of that name (not the DSN's): the rows come back.
    cluster.query("app_a", "DELETE FROM t WHERE id > 3")
    out = ok(ctl(kb, "restore", second["id"], "--component", "main:app_a", "--yes"), kb)
    assert "REPLACE" in out or "app_a" in out, out
    assert table_counts(cluster, "app_a") == {"public.t": 10}
    assert table_counts(cluster, "postgres") == {}

    # Everything onto a new server: roles first, each database to its own name.
    kb.write_job("multi", job(cluster, extra=f'restore_dsn = "{fresh.dsn()}"'))
    ok(ctl(kb, "reload"), kb)
    plan = ok(ctl(kb, "restore", second["id"], "--all-databases", "--dry-run"), kb)
    assert "app_a" in plan and "app_c" in plan
    ok(ctl(kb, "restore", second["id"], "--all-databases", "--yes"), kb)
    assert table_counts(fresh, "app_a") == {"public.t": 10}
    assert table_counts(fresh, "app_c") == {"public.t": 5}
    assert fresh.databases("app_b") == [] and fresh.databases("scratch") == []
    owner = fresh.query("app_a", "SELECT tableowner FROM pg_tables WHERE tablename = 't'")
    assert owner == [("app_owner",)]


def test_a_database_that_cannot_be_dumped_leaves_a_partial_backup(kb: KbEnv,
                                                                  cluster: PgServer) -> None:
    cluster.query("postgres", "CREATE ROLE kbt_reader LOGIN IN ROLE pg_read_all_data")
    fill(cluster, "locked_db", 4)
    cluster.query("postgres", "REVOKE CONNECT ON DATABASE locked_db FROM PUBLIC")
    try:
        kb.write_job("limited", job(cluster, user="kbt_reader", exclude='["scratch_*"]'))
        kb.start()
        result = ctl(kb, "run", "limited", "--wait")
        assert result.returncode != 0
        assert "main:locked_db not backed up" in result.stderr, result.stderr
        backup = kb.ctl_items("backups", "limited")[0]
        assert backup["status"] == "partial"
        shown = kb.ctl_json("show", backup["id"])
        missing = shown["manifest"]["missing_components"]
        assert [m["name"] for m in missing] == ["main:locked_db"]
        assert "permission denied for database" in missing[0]["reason"]
        held = components(shown)
        assert "main:locked_db" not in held
        assert held["main:app_a"]["database"]["row_counts"] == {"public.t": 10}
        assert "\n  MISSING main:locked_db: database main:locked_db: cannot connect:" in ok(
            ctl(kb, "show", backup["id"]), kb)
        files = [p.name for p in kb.backup_dir(shown).iterdir()]
        assert not any("locked_db" in f for f in files), files
        check = ctl(kb, "check", "limited")
        assert check.returncode == 1 and "main:locked_db not backed up" in check.stdout, \
            check.stdout
        probe = ctl(kb, "sources", "check", "limited")
        assert probe.returncode == 1
        assert "limited/main (postgres): FAILED: role kbt_reader lacks CONNECT on database" \
               " locked_db\n" == probe.stdout, probe.stdout
    finally:
        cluster.drop_database("locked_db")
        cluster.query("postgres", "DROP ROLE kbt_reader")


def test_sources_check(kb: KbEnv, cluster: PgServer, tmp_path: Path) -> None:
    cluster.query("postgres", "CREATE ROLE kbt_nopriv LOGIN")
    try:
        kb.write_job("good", job(cluster) + f"""
[[files]]
name = "docs"
path = "{tmp_path}"
""")
        kb.write_job("nopriv", job(cluster, user="kbt_nopriv"))
        kb.write_job("nohost", job(PgServer("127.0.0.1", 1, "postgres")))
        kb.write_job("nodump", job(cluster, extra='pg_dump = "/nonexistent/pg_dump"'))
        (tmp_path / "right").write_text("right\n")
        (tmp_path / "wrong").write_text("wrong\n")
        for name in ("right", "wrong"):
            kb.write_job(f"pw{name}", job(cluster, user="kbt_pw",
                                          extra=f'password_file = "{tmp_path / name}"'))
        kb.write_job("single", f"""
schedules = [ {{ cron = "0 2 * * *" }} ]
targets = ["local"]
[[postgres]]
name = "one"
dsn = "{cluster.dsn('app_a')}"
""")
        kb.start()
        good = ctl(kb, "sources", "check", "good")
        assert good.returncode == 0, good.stdout + good.stderr
        lines = good.stdout.splitlines()
        assert lines[0].startswith("good/main (postgres): OK (PostgreSQL 15"), lines
        assert "app_a" in lines[0] and "app_b" in lines[0] and "scratch_x" not in lines[0]
        assert lines[1] == f"good/docs (files): OK (path {tmp_path})"
        found = kb.ctl_json("sources", "check", "good")[0]
        assert [d["name"] for d in found["databases"]] == ["app_a", "app_b", "postgres"]
        assert all(d["size_bytes"] > 0 for d in found["databases"])
        single = kb.ctl_json("sources", "check", "single")[0]
        assert single["ok"] and [d["name"] for d in single["databases"]] == ["app_a"]

        every = ctl(kb, "sources", "check")
        assert every.returncode == 1
        out = every.stdout
        assert "nopriv/main (postgres): FAILED: role kbt_nopriv lacks pg_read_all_data" \
               " (cannot read table public.t in database app_a)" in out, out
        assert "nohost/main (postgres): FAILED: database main: cannot connect:" in out, out
        assert "good/main (postgres): OK" in out
        assert "pwright/main (postgres): OK" in out
        assert "nodump/main (postgres): FAILED: database main: /nonexistent/pg_dump not found" \
               in out, out
        assert "pwwrong/main (postgres): FAILED: database main: cannot connect: connection" \
               " failed: " in out and 'password authentication failed for user "kbt_pw"' in out
        kb.write_job("good", job(cluster) + """
[[files]]
name = "docs"
path = "/nonexistent/kbt"
""")
        ok(ctl(kb, "reload"), kb)
        gone = ctl(kb, "sources", "check", "good")
        assert gone.returncode == 1
        assert "good/docs (files): FAILED: files docs: /nonexistent/kbt does not exist" \
               in gone.stdout
        unknown = ctl(kb, "sources", "check", "nosuchjob")
        assert unknown.returncode != 0 and "no job named 'nosuchjob'" in unknown.stderr
    finally:
        cluster.query("postgres", "DROP ROLE kbt_nopriv")


def test_component_names_cannot_collide(kb: KbEnv, cluster: PgServer) -> None:
    """Two entries listing the same database give two components; the one way to clash is
    two entries with the same name, which the config refuses."""
    text = job(cluster) + f"""
[[postgres]]
name = "other"
dsn = "host={cluster.host} port={cluster.port} user=postgres dbname=postgres"
databases = ["app_a"]
globals = false
"""
    kb.write_job("two", text)
    kb.start()
    backup = kb.run_backup("two")
    held = components(backup)
    assert held["main:app_a"]["database"]["row_counts"] == held["other:app_a"]["database"][
        "row_counts"] == {"public.t": 10}
    assert held["main:app_a"]["file"] != held["other:app_a"]["file"]
