"""The right client tools, through a real kbackupd (issue 16): a backup of a PostgreSQL 17
server with this machine's tools (15) fails before dumping with one line saying what to
install, and the job's health says so; so does a pg_bin_dir without tools. The manifest
records the pg_dump that made the dump; a restore or a restore-test of an archive made by a
newer pg_dump than any pg_restore here is refused before anything is touched. With 17's own
tools (run in the container, named by pg_bin_dir) the backup, restore-test and restore of the
PostgreSQL 17 server work."""

from __future__ import annotations

import glob
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from pg17 import Pg17, client_bin_dir, pg17
from test_daemon_lifecycle import assert_run_fails

from conftest import SHOP_COUNTS, SHOP_SCHEMA, KbEnv, PgServer, table_counts

__all__ = ["pg17"]  # the fixture, for pytest

HOST_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))[-1]


def host_version(name: str) -> str:
    out = subprocess.run([f"{HOST_BIN}/{name}", "--version"], capture_output=True, text=True,
                         check=True).stdout
    found = re.search(r"\(PostgreSQL\) (\S+)", out)
    assert found, out
    return found.group(1)


def wait_health(kb: KbEnv, job: str, status: str) -> dict[str, Any]:
    """The job's health once it is `status` (evaluated every minute and after each run)."""
    deadline = time.monotonic() + 30
    while True:
        entry = next(j for j in kb.ctl_json("status")["jobs"] if j["job"] == job)
        if entry["health"]["status"] == status or time.monotonic() > deadline:
            assert entry["health"]["status"] == status, entry
            return entry  # type: ignore[no-any-return]
        time.sleep(0.2)


def test_host_tools_against_postgresql_17_fail_before_dumping(kb: KbEnv, pg17: Pg17) -> None:
    pg17_shop(pg17, "shop")
    with pg17.connect() as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
    kb.write_job("shop", f'targets = ["local"]\n[[postgres]]\nname = "shop"\n'
                         f'dsn = "{pg17.dsn("shop")}"\n')
    kb.start()
    reason = (f"database shop: server is PostgreSQL {version} but the newest pg_dump here is"
              f" {host_version('pg_dump')} ({HOST_BIN}); install postgresql-client-17 or set"
              " pg_bin_dir")
    assert_run_fails(kb, reason)  # one line, nothing stored, status and show agree
    assert [b["status"] for b in kb.ctl_json("backups")["items"]] == ["failed"]
    assert "server version mismatch" not in kb.logs()  # pg_dump never ran
    entry = wait_health(kb, "shop", "critical")
    assert "no complete backup" in json.dumps(entry["health"])
    check = kb.ctl("check", "shop")
    assert check.returncode == 2 and check.stdout.startswith("KBACKUP CRITICAL - shop"), check
    probe = kb.ctl("sources", "check", "shop")  # the probe says it before any run
    assert probe.returncode == 1 and f"FAILED: {reason}" in probe.stdout, probe


def pg17_shop(pg17: Pg17, name: str) -> None:
    with pg17.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    with pg17.connect(name) as conn:
        conn.execute(SHOP_SCHEMA)


def pg17_counts(pg17: Pg17, name: str) -> dict[str, int]:
    server = PgServer(pg17.host, pg17.port, pg17.user)
    return table_counts(server, name)


def test_postgresql_17_with_its_own_tools_backs_up_and_restores(kb: KbEnv, pg17: Pg17,
                                                                 tmp_path: Path) -> None:
    pg17_shop(pg17, "shop17")
    bin17 = client_bin_dir(tmp_path / "bin17")
    kb.write_job("shop", f'targets = ["local"]\n[[postgres]]\nname = "shop"\n'
                         f'dsn = "{pg17.dsn("shop17")}"\npg_bin_dir = "{bin17}"\n')
    kb.start()
    backup = kb.run_backup()
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    database = next(c for c in manifest["components"] if c["kind"] == "postgres")["database"]
    assert database["server_version_num"] // 10000 == 17
    assert database["pg_dump_version"].startswith("17."), database
    assert database["row_counts"] == SHOP_COUNTS
    result = kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}{kb.logs()[-3000:]}"
    result = kb.ctl("restore", backup["id"], "--to-database", "shop17_copy", "--yes",
                    timeout=300)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}{kb.logs()[-3000:]}"
    assert pg17_counts(pg17, "shop17_copy") == SHOP_COUNTS


def test_pg_bin_dir_without_tools_fails_the_run(kb: KbEnv, pg: PgServer, shop_db: str,
                                                tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    path = kb.shop_job(pg, shop_db, None)
    path.write_text(path.read_text() + f'pg_bin_dir = "{empty}"\n')
    kb.start()
    assert_run_fails(kb, f"database shop: pg_bin_dir {empty} has no usable pg_dump (not found"
                         " or not executable)")


def test_the_manifest_records_the_pg_dump_that_made_the_dump(kb: KbEnv, pg: PgServer,
                                                             shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    backup = kb.run_backup()
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    database = next(c for c in manifest["components"] if c["kind"] == "postgres")["database"]
    assert database["pg_dump_version"] == host_version("pg_dump")
    assert database["row_counts"] == SHOP_COUNTS


def test_an_archive_of_a_newer_pg_dump_is_refused_before_anything_is_touched(
        kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    backup = kb.run_backup()
    # As a future pg_dump would have written it: only the manifest says so (format.md: a
    # field of the database metadata; the manifest has no checksum of its own).
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    next(c for c in manifest["components"] if c["kind"] == "postgres")[
        "database"]["pg_dump_version"] = "99.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0
    with pg.connect(shop_db) as conn:
        conn.execute("DELETE FROM \"Line Items\" WHERE invoice_id < 100")
    live = table_counts(pg, shop_db)
    reason = (f"database shop: the backup was made by pg_dump 99.0 but the newest pg_restore"
              f" here is {host_version('pg_restore')} ({HOST_BIN}); install"
              " postgresql-client-99 or set pg_bin_dir")
    new_db = f"{shop_db}_new"

    for args in (["latest", "--job", "shop"], [backup["id"], "--to-database", new_db]):
        result = kb.ctl("restore", *args, "--yes")
        assert result.returncode != 0, result
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result
        assert "Traceback" not in result.stderr
    assert table_counts(pg, shop_db) == live
    assert pg.databases(new_db) == []
    assert [b["id"] for b in kb.ctl_json("backups")["items"]] == [backup["id"]]  # no safety

    result = kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait")
    assert result.returncode == 1, result
    assert f"could not verify: {reason}" in result.stderr, result.stderr
    assert pg.databases("kbackup_verify_") == []
    assert kb.ctl_json("show", backup["id"])["status"] == "complete"  # not the backup's fault
