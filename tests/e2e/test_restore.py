"""kbackupctl restore, end to end: the real daemon, the real CLI, real PostgreSQL, real files.

Every test asserts on what came back (row counts and per-table checksums, file bytes), and on
what must NOT have changed when a restore is refused, dry-run or fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from psycopg import sql

from conftest import KBACKUPCTL, SHOP_COUNTS, KbEnv, PgServer, request, table_counts

# ---------------------------------------------------------------------- helpers


def ctl(kb: KbEnv, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """kbackupctl with no terminal on stdin (so a destructive restore cannot be confirmed)."""
    return subprocess.run([KBACKUPCTL, "--socket", str(kb.socket), *args], env=kb.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def restore(kb: KbEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return ctl(kb, "restore", *args)


def ok(result: subprocess.CompletedProcess[str], kb: KbEnv) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}" \
        f"\n--- daemon log ---\n{kb.logs()[-4000:]}"
    return result.stdout


def state(pg: PgServer, db: str) -> dict[str, tuple[int, str]]:
    """Every user table -> (rows, md5 of all its rows in a stable order)."""
    out = {}
    tables = pg.query(db, "SELECT schemaname, tablename FROM pg_tables WHERE schemaname"
                          " NOT IN ('pg_catalog', 'information_schema')")
    for schema, table in tables:
        ident = sql.Identifier(schema, table)
        rows, digest = pg.query(db, sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
            " FROM {} t").format(ident))[0]
        out[f"{schema}.{table}"] = (rows, digest)
    return out


def invoices_md5(pg: PgServer, db: str) -> str:
    return pg.query(db, "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM invoices t")[0][0]


def mutate(pg: PgServer, db: str) -> None:
    """Delete rows, update amounts, drop a table (one that references invoices)."""
    pg.query(db, 'DROP TABLE "Line Items"')
    pg.query(db, "DELETE FROM invoices WHERE id > 1500")
    pg.query(db, "UPDATE invoices SET amount = amount * 3 WHERE id <= 100")
    pg.query(db, "INSERT INTO customers (name) VALUES ('added after the backup')")


def printed_safety_id(stdout: str) -> str:
    found = re.search(r"safety backup of the previous state: (\S+)", stdout)
    assert found, stdout
    return found.group(1)


def restores(kb: KbEnv) -> list[dict[str, Any]]:
    return kb.ctl_json("restores")["items"]


def backup_ids(kb: KbEnv) -> set[str]:
    """The complete backups (a failed run is listed too, but is no backup)."""
    return {b["id"] for b in kb.ctl_json("backups")["items"] if b["status"] == "complete"}


def next_second() -> None:
    """Backup ids and started_at have one-second resolution: start the next one later."""
    now = time.time()
    time.sleep(math.ceil(now) - now + 0.05)


def check_audit(kb: KbEnv) -> list[dict[str, Any]]:
    """Every restore in `restores --json` has a JSON record in the storage with the same facts."""
    records = restores(kb)
    files = {p.stem: p for p in (kb.store / "_audit" / "restores").glob("*/*/*.json")}
    for record in records:
        assert record["user"] == "root"
        assert record["status"] in ("complete", "failed")
        path = files.get(record["id"])
        assert path is not None, f"no audit file for restore {record['id']}: {sorted(files)}"
        assert re.fullmatch(r"\d{4}/\d{2}", f"{path.parent.parent.name}/{path.parent.name}")
        stored = json.loads(path.read_text())
        for key, field in (("restore_id", "id"), ("job", "job"), ("backup_id", "backup_id"),
                           ("user", "user"), ("status", "status"),
                           ("safety_backup_id", "safety_backup_id"), ("error", "error")):
            assert stored[key] == record[field], (key, stored, record)
    return records


def tree(root: Path, skip_tmp: bool = True) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not (skip_tmp and p.name.endswith(".tmp"))}


def change_rows(pg: PgServer, db: str) -> None:
    """Data-only damage: rows deleted, amounts changed, a row added."""
    pg.query(db, 'DELETE FROM "Line Items" WHERE invoice_id > 1000')
    pg.query(db, "UPDATE invoices SET amount = amount + 0.01 WHERE id % 7 = 0")
    pg.query(db, "INSERT INTO customers (name) VALUES ('added after the backup')")


def rewrite_manifest(kb: KbEnv, backup: dict[str, Any], name: str, data: bytes) -> None:
    """Replace a stored object and reseal the manifest (size, sha256), then rescan."""
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    component = next(c for c in manifest["components"] if c["name"] == name)
    (folder / component["file"]).write_bytes(data)
    component["size_bytes"] = len(data)
    component["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0


@pytest.fixture
def scratch_dbs(pg: PgServer) -> Iterator[Callable[[str], str]]:
    """Names for databases a test creates through restores; all dropped afterwards."""
    names: list[str] = []

    def make(label: str) -> str:
        names.append(f"kbt_{label}_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for name in names:
        pg.drop_database(name)


# ---------------------------------------------------------------------- the live database


def test_restore_latest_brings_back_exactly_the_backup(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, scratch_dbs: Callable[[str], str]
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    at_backup = state(pg, shop_db)
    backup_invoices = invoices_md5(pg, shop_db)
    assert table_counts(pg, shop_db) == SHOP_COUNTS

    mutate(pg, shop_db)
    before_restore = state(pg, shop_db)
    assert "public.Line Items" not in before_restore

    # No terminal and no --yes: refused with exit 2, nothing changed, nothing recorded.
    refused = restore(kb, "latest", "--job", "shop")
    assert refused.returncode == 2, refused
    assert "no terminal to confirm on" in refused.stderr and "add --yes" in refused.stderr
    assert shop_db in refused.stderr
    assert state(pg, shop_db) == before_restore
    assert restores(kb) == []
    assert backup_ids(kb) == {backup["id"]}

    out = ok(restore(kb, "latest", "--job", "shop", "--yes"), kb)
    assert f"restore plan for backup {backup['id']}" in out
    assert re.search(r"restore \S+ complete", out)
    safety_id = printed_safety_id(out)

    # Exactly the backup's rows, also in the table dropped after the backup.
    assert table_counts(pg, shop_db) == SHOP_COUNTS
    assert invoices_md5(pg, shop_db) == backup_invoices
    assert state(pg, shop_db) == at_backup

    [record] = restores(kb)
    assert record["backup_id"] == backup["id"] and record["status"] == "complete"
    assert record["safety_backup_id"] == safety_id and record["user"] == "root"
    listing = {b["id"]: b for b in kb.ctl_json("backups")["items"]}
    assert set(listing) == {backup["id"], safety_id}
    assert listing[safety_id]["trigger"] == "pre-restore"
    assert listing[safety_id]["status"] == "complete"
    kinds = {c["kind"]: c["name"] for c in listing[safety_id]["components"]}
    assert kinds["postgres"] == "shop" and "files" not in kinds  # only what gets replaced

    # "latest" never means a safety backup.
    assert kb.ctl_json("restore", "latest", "--job", "shop", "--dry-run")["backup_id"] == \
        backup["id"]

    # The safety backup holds the state just before the restore (checked in a new database).
    copy = scratch_dbs("safety")
    ok(restore(kb, safety_id, "--to-database", copy), kb)
    assert state(pg, copy) == before_restore
    assert state(pg, shop_db) == at_backup

    records = check_audit(kb)
    assert [r["backup_id"] for r in records] == [safety_id, backup["id"]]
    assert [r["safety_backup_id"] for r in records] == [None, safety_id]


def test_safety_backup_restores_the_pre_restore_state_over_the_live_database(
    kb: KbEnv, pg: PgServer, shop_db: str
) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    kb.run_backup()
    at_backup = state(pg, shop_db)
    mutate(pg, shop_db)  # drops "Line Items": the safety backup has no such table
    before_restore = state(pg, shop_db)
    safety_id = printed_safety_id(ok(restore(kb, "latest", "--job", "shop", "--yes"), kb))
    assert state(pg, shop_db) == at_backup
    result = restore(kb, safety_id, "--yes")
    assert state(pg, shop_db) == before_restore, result.stderr
    ok(result, kb)


def test_replace_is_exact_and_keeps_database_settings_and_grants(
    kb: KbEnv, pg: PgServer, shop_db: str
) -> None:
    """A migration after the backup added a table referencing a restored one: the restore still
    works, the new table is gone, and the database's own settings and grants survive."""
    role = f"kbt_app_{uuid.uuid4().hex[:6]}"
    pg.query("postgres", sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        db = sql.Identifier(shop_db)
        pg.query("postgres", sql.SQL("ALTER DATABASE {} SET work_mem = '7MB'").format(db))
        pg.query("postgres", sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        pg.query("postgres", sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            db, sql.Identifier(role)))
        kb.shop_job(pg, shop_db, None)
        kb.start()
        kb.run_backup()
        at_backup = state(pg, shop_db)
        pg.query(shop_db, "CREATE TABLE payments (invoice_id int REFERENCES invoices(id));"
                          " INSERT INTO payments VALUES (1); DELETE FROM \"Line Items\";")
        ok(restore(kb, "latest", "--job", "shop", "--yes"), kb)
        assert state(pg, shop_db) == at_backup
        assert pg.query(shop_db, "SELECT to_regclass('public.payments')")[0][0] is None
        assert pg.query(shop_db, "SELECT current_setting('work_mem')")[0][0] == "7MB"
        acl = pg.query("postgres", "SELECT datacl::text FROM pg_database WHERE datname = %s",
                       (shop_db,))[0][0]
        assert f"{role}=c/" in acl and not acl.startswith("{=")  # PUBLIC has no CONNECT
        assert pg.databases(f"{shop_db[:40]}_kb") == []  # no side or old database left
    finally:
        pg.query("postgres", sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(shop_db), sql.Identifier(role)))
        pg.query("postgres", sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_safety_backup_undoes_a_restore_and_no_safety_backup_takes_none(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    at_backup = state(pg, shop_db)

    change_rows(pg, shop_db)
    before_restore = state(pg, shop_db)
    safety_id = printed_safety_id(ok(restore(kb, "latest", "--job", "shop", "--yes"), kb))
    assert state(pg, shop_db) == at_backup
    out = ok(restore(kb, safety_id, "--yes"), kb)
    assert state(pg, shop_db) == before_restore
    second_safety = printed_safety_id(out)  # the backup's state again
    ok(restore(kb, second_safety, "--yes"), kb)
    assert state(pg, shop_db) == at_backup

    # --no-safety-backup: the plan says so, the restore works, no backup appears.
    change_rows(pg, shop_db)
    known = backup_ids(kb)
    plan = ok(restore(kb, "latest", "--job", "shop", "--no-safety-backup", "--dry-run"), kb)
    assert "NO safety backup" in plan and "0. safety backup" not in plan
    out = ok(restore(kb, "latest", "--job", "shop", "--no-safety-backup", "--yes"), kb)
    assert "safety backup of the previous state" not in out
    assert state(pg, shop_db) == at_backup
    assert backup_ids(kb) == known
    latest = restores(kb)[0]
    assert latest["backup_id"] == backup["id"] and latest["status"] == "complete"
    assert latest["safety_backup_id"] is None
    assert len(check_audit(kb)) == 4


def test_dry_run_changes_nothing(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, scratch_dbs: Callable[[str], str],
    tmp_path: Path
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    change_rows(pg, shop_db)
    (pdf_tree / "2026" / "03" / "inv-0.pdf").write_bytes(b"changed")
    live_before = state(pg, shop_db)
    files_before = tree(pdf_tree, skip_tmp=False)
    new_db = scratch_dbs("dry")
    files_to = tmp_path / "dry-files"

    for args in (["latest", "--job", "shop"],
                 [backup["id"], "--no-safety-backup"],
                 [backup["id"], "--to-database", new_db, "--tables", "invoices"],
                 ["latest", "--job", "shop", "--component", "pdfs", "--in-place"],
                 ["latest", "--job", "shop", "--component", "pdfs", "--files-to",
                  str(files_to)]):
        out = ok(restore(kb, *args, "--dry-run"), kb)
        assert f"restore plan for backup {backup['id']}" in out
        assert "dry run: nothing was changed" in out
    plan = kb.ctl_json("restore", "latest", "--job", "shop", "--dry-run")
    assert plan["destructive"] is True and plan["confirm_word"] == shop_db
    assert plan["safety_backup"] == ["shop"]
    assert [s["kind"] for s in plan["steps"]] == ["database-replace", "skip"]

    assert state(pg, shop_db) == live_before
    assert tree(pdf_tree, skip_tmp=False) == files_before
    assert pg.databases(new_db) == []
    assert not files_to.exists()
    assert backup_ids(kb) == {backup["id"]}
    assert restores(kb) == []
    assert not (kb.store / "_audit").exists()
    assert [r["kind"] for r in kb.ctl_json("runs")["items"]] == ["backup"]


# ---------------------------------------------------------------------- other databases


def test_restore_into_another_database(
    kb: KbEnv, pg: PgServer, shop_db: str, scratch_dbs: Callable[[str], str]
) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    backup = kb.run_backup()
    at_backup = state(pg, shop_db)
    change_rows(pg, shop_db)
    live = state(pg, shop_db)

    # Into a new database: the backup's data there, the original untouched, no safety backup.
    new_db = scratch_dbs("new")
    out = ok(restore(kb, "latest", "--job", "shop", "--to-database", new_db), kb)
    assert "safety backup of the previous state" not in out
    assert state(pg, new_db) == at_backup
    assert state(pg, shop_db) == live
    assert backup_ids(kb) == {backup["id"]}

    # An existing, non-empty database is refused...
    pg.query(new_db, "DELETE FROM invoices WHERE id > 1990 AND id NOT IN"
                     ' (SELECT invoice_id FROM "Line Items")')
    damaged = state(pg, new_db)
    refused = restore(kb, "latest", "--job", "shop", "--to-database", new_db, "--yes")
    assert refused.returncode != 0
    assert f"database {new_db!r} exists and is not empty" in refused.stderr
    assert "--clean" in refused.stderr
    assert state(pg, new_db) == damaged
    # ...unless --clean (destructive: needs confirmation).
    unconfirmed = restore(kb, "latest", "--job", "shop", "--to-database", new_db, "--clean")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert state(pg, new_db) == damaged
    ok(restore(kb, "latest", "--job", "shop", "--to-database", new_db, "--clean", "--yes"), kb)
    assert state(pg, new_db) == at_backup
    assert state(pg, shop_db) == live

    # Selected tables only.
    only = scratch_dbs("tables")
    ok(restore(kb, backup["id"], "--to-database", only, "--tables", "invoices"), kb)
    assert state(pg, only) == {"public.invoices": at_backup["public.invoices"]}

    # An unknown table names the ones there are; nothing is created.
    missing = scratch_dbs("missing")
    refused = restore(kb, backup["id"], "--to-database", missing, "--tables", "invoices,nope")
    assert refused.returncode != 0
    assert "table 'nope' is not in database shop" in refused.stderr
    assert "public.Line Items, public.customers, public.invoices" in refused.stderr
    assert pg.databases(missing) == []

    # Schema only: every table, no rows; then data only into those empty tables.
    schema = scratch_dbs("schema")
    ok(restore(kb, backup["id"], "--to-database", schema, "--schema-only"), kb)
    assert table_counts(pg, schema) == dict.fromkeys(SHOP_COUNTS, 0)
    ok(restore(kb, backup["id"], "--to-database", schema, "--data-only", "--clean", "--yes"), kb)
    assert state(pg, schema) == at_backup

    records = check_audit(kb)
    assert len(records) == 5 and all(r["status"] == "complete" for r in records)
    assert all(r["safety_backup_id"] is None for r in records)
    assert state(pg, shop_db) == live


def test_a_new_database_is_read_once_and_a_corrupt_backup_leaves_nothing(
    kb: KbEnv, pg: PgServer, shop_db: str, scratch_dbs: Callable[[str], str]
) -> None:
    """Into a database that does not exist yet, the restore reads the backup once (checked
    while the data loads beside its name), not a second time first; a bad byte still leaves
    no database behind, neither the new name nor the side database."""
    kb.shop_job(pg, shop_db, None)
    kb.start()
    backup = kb.run_backup()
    at_backup = state(pg, shop_db)
    new_db = scratch_dbs("once")
    ok(restore(kb, backup["id"], "--to-database", new_db), kb)
    assert state(pg, new_db) == at_backup
    assert "method=while_restoring" in kb.logs()

    stored = kb.backup_dir(backup) / "db-shop.dump.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    bad = scratch_dbs("corrupt")
    result = restore(kb, backup["id"], "--to-database", bad)
    assert result.returncode != 0, result
    assert "db-shop.dump.zst" in result.stderr and "nothing was changed" in result.stderr
    assert pg.databases(bad) == []  # its side database, {bad}_kbrestore_..., is gone too
    assert backup_ids(kb) == {backup["id"]}  # nothing to keep safe: no safety backup


# ---------------------------------------------------------------------- refusals and failures


def test_refusals_name_the_reason_and_change_nothing(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.shop_job(pg, shop_db, None, name="other")
    kb.write_job("broken", f"""
targets = ["local"]
[[postgres]]
name = "gone"
dsn = "{pg.dsn(f"kbt_missing_{uuid.uuid4().hex[:8]}")}"
""")
    kb.start()
    backup = kb.run_backup()
    change_rows(pg, shop_db)
    live = state(pg, shop_db)

    failed_run = ctl(kb, "run", "broken", "--wait")
    assert failed_run.returncode == 1, failed_run
    [failed] = [r for r in kb.ctl_json("runs")["items"] if r["job"] == "broken"]
    assert failed["status"] == "failed"

    def refused(*args: str, message: str) -> str:
        result = restore(kb, *args, "--yes")
        assert result.returncode != 0, result
        assert message in result.stderr, result.stderr
        return result.stderr

    refused("20200101T000000Z-abcdef", message="no backup with id '20200101T000000Z-abcdef'")
    refused(backup["id"], "--job", "other",
            message=f"backup {backup['id']} belongs to job 'shop', not 'other'")
    refused("latest", "--job", "other", message="job other has no complete backup")
    refused("latest", message="'latest' needs --job JOB")
    refused(failed["id"], message=f"backup {failed['id']} is failed: it cannot be restored")
    refused(backup["id"], "--component", "nope", message="has no component 'nope'")
    refused(backup["id"], "--component", "config", message="has no component 'config'")
    refused(backup["id"], "--component", "pdfs", message="give --files-to DIR (or --in-place)")
    # Options of one kind that exclude each other: refused by that kind's driver (the CLI
    # already refuses them; the API hands them over).
    for options, message in (({"schema_only": True, "data_only": True},
                              "--schema-only and --data-only exclude each other"),
                             ({"in_place": True, "files_to": str(kb.base / "x")},
                              "--in-place and --files-to exclude each other")):
        body = json.dumps({"backup": backup["id"], "dry_run": True, **options}).encode()
        status, _, answer = request(kb, "POST", "/v1/restores", body)
        assert (status, json.loads(answer)["error"]) == (409, message)
    assert state(pg, shop_db) == live
    assert restores(kb) == []
    listed = kb.ctl_json("backups")["items"]

    # A corrupt backup: refused; with --force the checksum pre-check still stops it.
    stored = kb.backup_dir(backup) / "db-shop.dump.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    verified = ctl(kb, "verify", backup["id"], "--wait")
    assert verified.returncode == 1, verified
    assert kb.ctl_json("show", backup["id"])["status"] == "corrupt"
    refused(backup["id"], message=f"backup {backup['id']} is corrupt")
    stderr = refused(backup["id"], "--force", message="db-shop.dump.zst")
    assert "sha256" in stderr and "nothing was changed" in stderr
    assert state(pg, shop_db) == live
    assert len(kb.ctl_json("backups")["items"]) == len(listed)  # stopped before the safety backup

    [record] = check_audit(kb)
    assert record["status"] == "failed" and record["backup_id"] == backup["id"]
    assert "db-shop.dump.zst" in record["error"] and record["safety_backup_id"] is None


def test_a_failing_restore_leaves_the_old_data(
    kb: KbEnv, pg: PgServer, shop_db: str, tmp_path: Path
) -> None:
    """The dump's bytes match the manifest, but it is cut short: pg_restore fails half-way,
    after it dropped and re-created tables; the one transaction puts everything back."""
    job_file = kb.shop_job(pg, shop_db, None)
    kb.start()
    backup = kb.run_backup()
    stored = kb.backup_dir(backup) / "db-shop.dump.zst"
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(stored.read_bytes())
    rewrite_manifest(kb, backup, "shop",
                     zstandard.ZstdCompressor().compress(raw[: len(raw) * 2 // 3]))
    change_rows(pg, shop_db)
    live = state(pg, shop_db)
    known = backup_ids(kb)

    # The safety backup fails (pg_dump broken): the restore stops before any change.
    broken = tmp_path / "pg_dump_broken"
    broken.write_text('#!/bin/sh\n[ "$1" = --version ] && exec pg_dump --version\n'
                      "echo 'pg_dump: error: disk on fire' >&2\nexit 1\n")
    broken.chmod(0o755)
    good_config = job_file.read_text()
    job_file.write_text(good_config + f'pg_dump = "{broken}"\n')
    ok(ctl(kb, "reload"), kb)
    result = restore(kb, "latest", "--job", "shop", "--yes")
    assert result.returncode == 1, result
    assert "safety backup" in result.stderr and "failed" in result.stderr
    assert "nothing was changed" in result.stderr
    assert state(pg, shop_db) == live
    assert backup_ids(kb) == known
    [record] = check_audit(kb)
    assert record["status"] == "failed" and record["safety_backup_id"] is None
    job_file.write_text(good_config)
    ok(ctl(kb, "reload"), kb)

    # pg_restore fails half-way (after the safety backup): the old data stays.
    result = restore(kb, "latest", "--job", "shop", "--yes")
    assert result.returncode == 1, result
    assert "FAILED" in result.stderr and "pg_restore" in result.stderr
    assert f"database {shop_db} is unchanged" in result.stderr
    assert state(pg, shop_db) == live

    record = check_audit(kb)[0]
    assert record["status"] == "failed" and record["backup_id"] == backup["id"]
    assert record["safety_backup_id"] and record["safety_backup_id"] in record["error"]
    assert kb.ctl_json("show", record["safety_backup_id"])["trigger"] == "pre-restore"

    # A restore login that may not replace the tables: the server's reason is reported (not
    # pg_restore's trailing "Command was: ..."), and the data stays.
    next_second()
    fresh = kb.run_backup()
    weak = f"kbt_weak_{uuid.uuid4().hex[:8]}"
    pg.query("postgres", sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(weak)))
    try:
        restore_dsn = pg.dsn(shop_db).replace(f"user={pg.user}", f"user={weak}")
        job_file.write_text(good_config + f'restore_dsn = "{restore_dsn}"\n')
        ok(ctl(kb, "reload"), kb)
        result = restore(kb, "latest", "--job", "shop", "--yes")
        assert result.returncode == 1, result
        assert f"restore plan for backup {fresh['id']}" in result.stdout
        assert "must be owner of table" in result.stderr, result.stderr
        assert state(pg, shop_db) == live
    finally:
        job_file.write_text(good_config)
        ok(ctl(kb, "reload"), kb)
        pg.query(shop_db, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(weak)))
        pg.query("postgres", sql.SQL("DROP ROLE {}").format(sql.Identifier(weak)))

    # The truncated dump also fails a restore-test verification, in a scratch database that
    # is dropped again (checked at the end of the module).
    verified = ctl(kb, "verify", backup["id"], "--level", "restore-test", "--wait")
    assert verified.returncode == 1 and "pg_restore" in verified.stderr, verified


# ---------------------------------------------------------------------- files


def test_files_into_a_new_directory_and_in_place(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, tmp_path: Path
) -> None:
    special = pdf_tree / "2025" / "12" / "inv-1.pdf"
    special.chmod(0o640)
    os.utime(special, (1_000_000_000, 1_000_000_000))
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    originals = tree(pdf_tree)
    assert len(originals) == 8

    # Into a new directory: identical bytes, modes and mtimes; the excluded *.tmp is not there.
    out_dir = tmp_path / "restored"
    out = ok(restore(kb, "latest", "--job", "shop", "--component", "pdfs", "--files-to",
                     str(out_dir)), kb)
    assert "safety backup of the previous state" not in out
    assert tree(out_dir, skip_tmp=False) == originals
    for name in originals:
        got, want = (out_dir / name).stat(), (pdf_tree / name).stat()
        assert (oct(got.st_mode), int(got.st_mtime)) == (oct(want.st_mode), int(want.st_mtime))
    assert int((out_dir / "2025" / "12" / "inv-1.pdf").stat().st_mtime) == 1_000_000_000
    folders = [p.relative_to(pdf_tree) for p in pdf_tree.rglob("*") if p.is_dir()]
    assert len(folders) == 4
    for name in folders:
        got, want = (out_dir / name).stat(), (pdf_tree / name).stat()
        assert (oct(got.st_mode), int(got.st_mtime)) == (oct(want.st_mode), int(want.st_mtime))
    assert backup_ids(kb) == {backup["id"]}

    # A non-empty directory is refused and left alone.
    refused = restore(kb, backup["id"], "--component", "pdfs", "--files-to", str(out_dir))
    assert refused.returncode != 0
    assert f"--files-to {out_dir} exists and is not an empty directory" in refused.stderr
    assert tree(out_dir, skip_tmp=False) == originals

    # In place: the live tree is replaced after a safety backup of it.
    (pdf_tree / "2026" / "03" / "inv-0.pdf").write_bytes(b"overwritten by mistake")
    (pdf_tree / "2026" / "03" / "inv-1.pdf").unlink()
    shutil.rmtree(pdf_tree / "2025")
    (pdf_tree / "new.pdf").write_bytes(b"added after the backup")
    damaged = tree(pdf_tree)
    unconfirmed = restore(kb, "latest", "--job", "shop", "--component", "pdfs", "--in-place")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert tree(pdf_tree) == damaged

    out = ok(restore(kb, "latest", "--job", "shop", "--component", "pdfs", "--in-place",
                     "--yes"), kb)
    assert tree(pdf_tree) == originals
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".pdfs")) == []
    safety_id = printed_safety_id(out)
    safety = kb.ctl_json("show", safety_id)
    assert safety["trigger"] == "pre-restore"
    assert [c["name"] for c in safety["components"] if c["kind"] in ("files", "postgres")] \
        == ["pdfs"]
    undo_dir = tmp_path / "undo"
    ok(restore(kb, safety_id, "--component", "pdfs", "--files-to", str(undo_dir)), kb)
    assert tree(undo_dir) == damaged

    records = check_audit(kb)
    assert [(r["backup_id"], r["status"]) for r in records] == [
        (safety_id, "complete"), (backup["id"], "complete"), (backup["id"], "complete")]
    assert records[1]["safety_backup_id"] == safety_id


# ---------------------------------------------------------------------- disaster recovery


def test_disaster_recovery_from_storage_alone(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    first = kb.run_backup()
    pg.query(shop_db, "INSERT INTO invoices (customer_id, amount)"
                      " SELECT 1, 9.99 FROM generate_series(1, 25)")
    next_second()  # else "latest" of two backups in the same second is ambiguous (see report)
    second = kb.run_backup()
    at_second = state(pg, shop_db)
    assert at_second["public.invoices"][0] == 2025
    change_rows(pg, shop_db)
    safety_id = printed_safety_id(ok(restore(kb, "latest", "--job", "shop", "--yes"), kb))
    assert state(pg, shop_db) == at_second
    [earlier] = restores(kb)

    originals = tree(pdf_tree)

    # The server is lost: catalog, database and files gone; the storage survives, and so
    # does the copy of the signing key's public half kept off the server (README).
    signing_key = kb.base / "kbackup-signing.pem"
    signing_key.write_text(ok(ctl(kb, "keys", "export-signing"), kb))
    kb.stop()
    shutil.rmtree(kb.state)
    pg.drop_database(shop_db)
    assert pg.databases(shop_db) == []
    shutil.rmtree(pdf_tree)
    kb.start()
    assert kb.ctl_json("backups")["items"] == []
    ok(ctl(kb, "keys", "import-signing", str(signing_key)), kb)
    rescan = ctl(kb, "catalog", "rescan")
    assert rescan.returncode == 0, rescan.stderr
    assert "found 3" in rescan.stdout
    assert backup_ids(kb) == {first["id"], second["id"], safety_id}

    plan = kb.ctl_json("restore", "latest", "--job", "shop", "--in-place", "--dry-run")
    assert plan["backup_id"] == second["id"]  # not the newer pre-restore safety backup
    assert plan["destructive"] is False and plan["safety_backup"] == []
    out = ok(restore(kb, "latest", "--job", "shop", "--in-place"), kb)  # nothing to confirm
    assert "does not exist: create it" in out
    assert state(pg, shop_db) == at_second
    assert tree(pdf_tree) == originals

    [record] = check_audit(kb)
    assert record["backup_id"] == second["id"] and record["safety_backup_id"] is None
    # The earlier restore's trail survived the catalog in the storage.
    trail = list((kb.store / "_audit" / "restores").glob(f"*/*/{earlier['id']}.json"))
    assert len(trail) == 1
    assert json.loads(trail[0].read_text())["safety_backup_id"] == safety_id


def test_no_scratch_database_is_left_behind(pg: PgServer) -> None:
    """Runs last in this module: restores and verifications never leak scratch databases."""
    deadline = time.monotonic() + 60  # another test session may be verifying right now
    while pg.databases("kbackup_verify_"):
        assert time.monotonic() < deadline, pg.databases("kbackup_verify_")
        time.sleep(0.5)


def test_unwritable_restore_target_is_refused_before_the_safety_backup(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    """A read-only place (here a read-only bind mount) fails at planning, not half-way."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    readonly = kb.base / "readonly"
    readonly.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(readonly), str(readonly)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {mounted.stderr.strip()}")
    try:
        kb.shop_job(pg, shop_db, pdf_tree)
        kb.start()
        backup = kb.run_backup()
        result = restore(kb, backup["id"], "--component", "pdfs", "--files-to",
                         str(readonly / "pdfs"))
        assert result.returncode != 0
        assert f"--files-to {readonly / 'pdfs'}: {readonly} is not writable" in result.stderr
        assert [b["trigger"] for b in kb.ctl_json("backups")["items"]] == ["manual"]
    finally:
        subprocess.run(["umount", str(readonly)], capture_output=True)
