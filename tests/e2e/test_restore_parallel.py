"""Restores with pg_restore -j (restore_jobs): the decoded dump staged to a spool file while the
schema and data stream in, indexes and foreign keys built in parallel from it; streamed when
there is no room. And the restore-test's duration, the measured time to recover (RTO).

Every test asserts on the restored database itself (rows, indexes, constraints) and on the
spool directory (empty after success and after failure).
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from test_failing_jobs import wait_for
from test_restore import ctl, ok, scratch_dbs  # noqa: F401 - fixture
from test_restore import state as contents

from conftest import KbEnv, PgServer, made_database, table_counts
from kbackup.ctl.client import http_request

LINKED_SCHEMA = """
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE books (id int PRIMARY KEY, author_id int NOT NULL REFERENCES authors,
                    title text NOT NULL, year int NOT NULL);
CREATE INDEX books_year ON books (year);
CREATE INDEX books_title_lower ON books (lower(title));
CREATE TABLE loans (book_id int NOT NULL REFERENCES books ON DELETE CASCADE, n int NOT NULL,
                    at date NOT NULL, PRIMARY KEY (book_id, n));
CREATE INDEX loans_at ON loans (at);
CREATE TABLE "Odd Name" (id int PRIMARY KEY, book_id int REFERENCES books, note text);
INSERT INTO authors SELECT i, 'author ' || i FROM generate_series(1, 300) i;
INSERT INTO books SELECT i, 1 + i % 300, 'Title ' || i, 1900 + i % 120
    FROM generate_series(1, 6000) i;
INSERT INTO loans SELECT 1 + i % 6000, i, date '2024-01-01' + i % 700
    FROM generate_series(1, 20000) i;
INSERT INTO "Odd Name" SELECT i, i, repeat('x', i % 50) FROM generate_series(1, 500) i;
"""
COUNTS = {"public.authors": 300, "public.books": 6000, "public.loans": 20000,
          "public.Odd Name": 500}


# ---------------------------------------------------------------------- helpers


def structure(pg: PgServer, db: str) -> tuple[set[str], set[tuple[str, str, bool]]]:
    """Index definitions and constraints (definition, validated) of the public schema."""
    indexes = {row[0] for row in pg.query(
        db, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")}
    constraints = {(r[0], r[1], r[2]) for r in pg.query(
        db, "SELECT conrelid::regclass::text, pg_get_constraintdef(oid), convalidated"
            " FROM pg_constraint WHERE connamespace = 'public'::regnamespace")}
    return indexes, constraints


def load_lines(kb: KbEnv) -> list[str]:
    return [line for line in kb.logs().splitlines() if "event=restore.load " in line]


def spool_files(kb: KbEnv, base: Path | None = None) -> list[Path]:
    spool = (base or kb.state) / "spool"
    return sorted(spool.iterdir()) if spool.is_dir() else []


@pytest.fixture
def linked_db(pg: PgServer) -> Iterator[str]:
    with made_database(pg, "kbt_linked", LINKED_SCHEMA) as name:
        yield name


def linked_job(kb: KbEnv, pg: PgServer, db: str, extra: str = "",
               source_extra: str = "restore_jobs = 2") -> None:
    kb.write_job("shop", f"""
targets = ["local"]
timeout = "10m"
{extra}

[[postgres]]
name = "shop"
dsn = "{pg.dsn(db)}"
{source_extra}
""")


# ---------------------------------------------------------------------- staged, parallel


SPREAD = ("DELETE FROM loans WHERE n > 5000;"  # rows and sizes spread: loaded side by side
          " INSERT INTO authors SELECT i, 'author ' || i FROM generate_series(301, 5000) i")
BIG = ("INSERT INTO loans SELECT 1 + i % 6000, i, date '2024-01-01' + i % 700"
       " FROM generate_series(20001, 150000) i")
SHAPES = [  # loans hold over 90% of the data on disk: it streams while the dump is spooled
    ("one big table", BIG, COUNTS | {"public.loans": 150000}, "parallel=post-data"),
    ("rows spread", SPREAD, COUNTS | {"public.authors": 5000, "public.loans": 5000},
     "parallel=data+post-data"),
]


@pytest.mark.parametrize(("label", "change", "counts", "parallel"), SHAPES,
                         ids=[shape[0] for shape in SHAPES])
def test_parallel_restore_brings_back_every_row_index_and_foreign_key(
    kb: KbEnv, pg: PgServer, linked_db: str, label: str, change: str, counts: dict[str, int],
    parallel: str, scratch_dbs: Callable[[str], str],  # noqa: F811 - the fixture
) -> None:
    if change:
        pg.query(linked_db, change)
    linked_job(kb, pg, linked_db)
    kb.start()
    kb.run_backup()
    at_backup, shape = contents(pg, linked_db), structure(pg, linked_db)
    assert table_counts(pg, linked_db) == counts
    assert (len(shape[0]), len(shape[1])) == (8, 8)  # 5 PK/unique + 3 indexes; 3 FKs

    # A killed daemon's spool file (nobody holds its lock) goes; one in use stays.
    spool = kb.state / "spool"
    spool.mkdir(exist_ok=True)
    orphan, held = spool / "kbackup-restore-dead.dump", spool / "kbackup-restore-busy.dump"
    orphan.write_bytes(b"x" * 4096)
    held.write_bytes(b"y")
    with open(held, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        copy = scratch_dbs("copy")
        ok(ctl(kb, "restore", "latest", "--job", "shop", "--to-database", copy, "--yes"), kb)
        assert spool_files(kb) == [held]
    held.unlink()
    assert f"event=restore.spool_leftover path={orphan} removed" in kb.logs()
    assert contents(pg, copy) == at_backup
    assert structure(pg, copy) == shape
    with pytest.raises(Exception, match="foreign key"):  # the FK is there and enforced
        pg.query(copy, "INSERT INTO books VALUES (999999, 424242, 'orphan', 2000)")
    [line] = load_lines(kb)
    assert "method=staged" in line and "jobs=2" in line and f"database={copy}_kbrestore" in line
    assert parallel in line
    need = int(re.search(r"need_bytes=(\d+)", line).group(1))  # type: ignore[union-attr]
    # Streamed data: the spool holds only the head of the stream; else the whole dump.
    assert (need == 64 << 20) == (parallel == "parallel=post-data")
    assert "event=restore.loaded component=shop" in kb.logs()  # pg_restore -j2 ran from the file
    # Data loaded from the spool: its four tables' data offsets were written in first.
    filled = "event=restore.offsets component=shop filled=4" in kb.logs()
    assert filled == (parallel == "parallel=data+post-data")
    assert spool_files(kb) == []
    assert pg.databases(f"{copy[:40]}_kb") == []

    # Over the live database: swapped in, the same rows and structure, nothing left over.
    pg.query(linked_db, "DELETE FROM loans WHERE n > 100; DROP INDEX books_year;"
                        " CREATE TABLE added_later (x int)")
    ok(ctl(kb, "restore", "latest", "--job", "shop", "--yes"), kb)
    assert contents(pg, linked_db) == at_backup
    assert structure(pg, linked_db) == shape
    assert "method=staged" in load_lines(kb)[-1]
    assert spool_files(kb) == []
    assert pg.databases(f"{linked_db[:40]}_kb") == []


def test_a_failing_parallel_restore_removes_its_spool_file(
    kb: KbEnv, pg: PgServer, linked_db: str,
    scratch_dbs: Callable[[str], str],  # noqa: F811 - the fixture
) -> None:
    """A grant to a role dropped since the backup fails in post-data (pg_restore -j, from the
    spool file): the restore fails naming the role, the target is not created, the spool file
    is gone."""
    role = f"kbt_reader_{uuid.uuid4().hex[:6]}"
    pg.query("postgres", sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        pg.query(linked_db, sql.SQL("GRANT SELECT ON books TO {}").format(sql.Identifier(role)))
        linked_job(kb, pg, linked_db)
        kb.start()
        kb.run_backup()
    finally:
        pg.query(linked_db, sql.SQL("REVOKE ALL ON books FROM {}").format(sql.Identifier(role)))
        pg.query("postgres", sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    copy = scratch_dbs("copy")
    failed = ctl(kb, "restore", "latest", "--job", "shop", "--to-database", copy, "--yes")
    assert failed.returncode != 0
    assert f'role "{role}" does not exist' in failed.stderr, failed.stderr
    assert "method=staged" in load_lines(kb)[-1]
    assert spool_files(kb) == []
    assert pg.databases(copy) == []  # neither the target nor its side database


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem: no room for any dump."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_without_room_the_dump_is_streamed(
    kb: KbEnv, pg: PgServer, linked_db: str, tiny_tmpfs: Path,
    scratch_dbs: Callable[[str], str],  # noqa: F811 - the fixture
) -> None:
    kb.write_daemon(daemon_extra=f'staging_dir = "{tiny_tmpfs}"')
    linked_job(kb, pg, linked_db)
    kb.start()
    kb.run_backup()
    at_backup, shape = contents(pg, linked_db), structure(pg, linked_db)
    copy = scratch_dbs("copy")
    ok(ctl(kb, "restore", "latest", "--job", "shop", "--to-database", copy, "--yes"), kb)
    assert contents(pg, copy) == at_backup and structure(pg, copy) == shape
    [line] = load_lines(kb)
    assert "method=streamed" in line and "spool=- need_bytes=" in line
    free = int(re.search(r"free_bytes=(\d+)", line).group(1))  # type: ignore[union-attr]
    assert free <= 1 << 20
    assert spool_files(kb, tiny_tmpfs) == []


def test_into_an_existing_empty_database_it_streams_in_one_transaction(
    kb: KbEnv, pg: PgServer, linked_db: str,
    scratch_dbs: Callable[[str], str],  # noqa: F811 - the fixture
) -> None:
    """Not the restore's own database: never swapped or dropped, all or nothing as before."""
    linked_job(kb, pg, linked_db)
    kb.start()
    kb.run_backup()
    copy = scratch_dbs("empty")
    pg.create_database(copy)
    oid = pg.query("postgres", "SELECT oid FROM pg_database WHERE datname = %s", (copy,))
    ok(ctl(kb, "restore", "latest", "--job", "shop", "--to-database", copy, "--yes"), kb)
    assert contents(pg, copy) == contents(pg, linked_db)
    assert pg.query("postgres", "SELECT oid FROM pg_database WHERE datname = %s", (copy,)) == oid
    assert load_lines(kb) == []


def test_restore_jobs_1_streams(
    kb: KbEnv, pg: PgServer, linked_db: str,
    scratch_dbs: Callable[[str], str],  # noqa: F811 - the fixture
) -> None:
    linked_job(kb, pg, linked_db, source_extra="restore_jobs = 1")
    kb.start()
    kb.run_backup()
    copy = scratch_dbs("copy")
    ok(ctl(kb, "restore", "latest", "--job", "shop", "--to-database", copy, "--yes"), kb)
    assert contents(pg, copy) == contents(pg, linked_db)
    assert "method=streamed" in load_lines(kb)[-1]


# ---------------------------------------------------------------------- time to recover


def test_restore_test_records_the_time_to_recover(kb: KbEnv, pg: PgServer,
                                                  linked_db: str) -> None:
    linked_job(kb, pg, linked_db, extra='[thresholds]\nmax_restore_time = "0.001"')
    kb.start()
    backup = kb.run_backup()
    checked = ctl(kb, "check", "shop")
    assert "restore-test" not in checked.stdout  # nothing measured yet: no warning

    began = time.monotonic()
    ok(ctl(kb, "verify", backup["id"], "--level", "restore-test", "--wait"), kb)
    took = time.monotonic() - began
    shown = kb.ctl_json("show", backup["id"])
    seconds = shown["verification"]["restore_seconds"]
    assert 0 < seconds <= took
    assert shown["verifications"][0]["details"]["load_shop"] == "staged, pg_restore -j2"
    assert re.search(r"recovered in \d+\.\d s", ok(ctl(kb, "show", backup["id"]), kb))
    listed = kb.ctl_json("backups")["items"][0]["verification"]
    assert listed["restore_seconds"] == seconds  # the listing SQL says the same

    [job] = kb.ctl_json("status")["jobs"]
    assert job["restore_test"]["restore_seconds"] == seconds
    assert job["restore_test"]["backup_id"] == backup["id"]
    assert f"shop: time to recover {seconds:.1f} s (last passed restore-test, backup" \
        f" {backup['id']}" in ok(ctl(kb, "status"), kb)

    code, body = http_request(str(kb.socket), "GET", "/metrics")
    assert code == 200
    families = {f.name: f.samples for f in text_string_to_metric_families(body.decode())}
    [sample] = families["kbackup_restore_test_seconds"]
    assert sample.labels == {"job": "shop"} and sample.value == pytest.approx(seconds)

    line = wait_for(lambda: (r := ctl(kb, "check", "shop")).returncode == 1 and r.stdout,
                    what="the restore_time WARNING")
    assert "WARNING" in line and f"last restore-test (backup {backup['id']}) took" in line
    assert "(limit 0s)" in line

    # A checksum verification afterwards is no restore-test: the measured time stays.
    ok(ctl(kb, "verify", backup["id"], "--level", "checksum", "--wait"), kb)
    assert kb.ctl_json("status")["jobs"][0]["restore_test"]["restore_seconds"] == seconds
    assert kb.ctl_json("show", backup["id"])["verification"]["restore_seconds"] is None
