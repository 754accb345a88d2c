"""[[sqlite]] end to end: the real daemon and CLI, real SQLite files written by real processes.

The writer is a separate process inserting rows with increasing ids in transactions of BATCH
rows (WAL mode) while the backup runs: a consistent copy holds a multiple of BATCH rows whose
largest id is their count. Every test asserts on rows that came back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import KBACKUPCTL, KbEnv, stop_gpg_agent, wait_for

BATCH = 7
WRITER = """
import os, sqlite3, sys
db, stop, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = sqlite3.connect(db, isolation_level=None, timeout=30)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, batch INTEGER,"
             " payload BLOB)")
n = conn.execute("SELECT coalesce(max(id), 0) FROM items").fetchone()[0]
while not os.path.exists(stop):
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(batch):
        n += 1
        conn.execute("INSERT INTO items VALUES (?, ?, randomblob(300))", (n, n // batch))
    conn.execute("COMMIT")
conn.close()
"""


def ctl(kb: KbEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KBACKUPCTL, "--socket", str(kb.socket), *args], env=kb.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)


def ok(result: subprocess.CompletedProcess[str], kb: KbEnv) -> str:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{kb.logs()[-3000:]}"
    return result.stdout


def rows(path: Path, upto: int | None = None) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where = "" if upto is None else f" WHERE id <= {int(upto)}"
        return conn.execute(f"SELECT id, batch, payload FROM items{where} ORDER BY id").fetchall()
    finally:
        conn.close()


def count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        conn.close()


def sqlite_job(kb: KbEnv, db: Path, extra: str = "") -> None:
    kb.write_job("stock", f'targets = ["local"]\n{extra}\n[[sqlite]]\nname = "stock"\n'
                          f'path = "{db}"\n')


def leftovers(kb: KbEnv) -> list[str]:
    """Temp copies a run or verification left in the daemon's state dir."""
    return sorted(str(p) for p in kb.state.rglob("*")
                  if p.name.startswith(("sqlite-", "verify-")))


def component(kb: KbEnv, backup: dict[str, Any]) -> dict[str, Any]:
    """The sqlite component as the stored manifest records it."""
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    return next(c for c in manifest["components"] if c["kind"] == "sqlite")


def started(db: Path, rows: int) -> bool:
    """The writer has committed at least `rows` rows (its table may not exist yet)."""
    try:
        return db.exists() and count(db) >= rows
    except sqlite3.OperationalError:
        return False


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A live WAL database and the running writer process; yields (db, stop file)."""
    db, stop = tmp_path / "app" / "dev.db", tmp_path / "stop-writer"
    db.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop), str(BATCH)])
    try:
        wait_for(lambda: started(db, 20_000), 60, "the writer's first rows")
        yield db, stop
    finally:
        stop.touch()
        proc.wait(30)
        assert proc.returncode == 0


def test_backup_while_a_process_writes_is_consistent_and_restores(
    kb: KbEnv, writer: tuple[Path, Path], tmp_path: Path
) -> None:
    db, stop = writer
    sqlite_job(kb, db, '[verify]\nsql_checks = ["SELECT id FROM items WHERE payload IS NULL"]')
    kb.start()
    before = count(db)
    backup = kb.run_backup("stock")
    after = count(db)
    stop.touch()
    meta = component(kb, backup)["sqlite"]
    listed = next(c for c in backup["components"] if c["kind"] == "sqlite")["sqlite"]
    assert listed["rows"] == meta["row_counts"]["items"] and listed["integrity"] == "ok"
    copied = meta["row_counts"]["items"]
    assert before <= copied <= after and before < after  # written meanwhile, one state taken
    assert copied % BATCH == 0
    assert meta["integrity_check"] == "ok"
    assert meta["page_size"] == 4096 and meta["journal_mode"] == "wal"
    assert meta["sqlite_version"] == sqlite3.sqlite_version and meta["path"] == str(db)
    assert leftovers(kb) == []

    for level in ("structure", "restore-test"):
        result = kb.ctl("verify", backup["id"], "--level", level, "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
    assert leftovers(kb) == []

    # Restored to a new path: exactly the committed rows the copy saw.
    target = tmp_path / "restored" / "stock.db"
    ok(ctl(kb, "restore", backup["id"], "--component", "stock", "--to-path", str(target)), kb)
    assert sorted(p.name for p in target.parent.iterdir()) == ["stock.db"]
    restored = rows(target)
    assert len(restored) == copied and restored[-1][0] == copied
    assert restored == rows(db, upto=copied)

    # An existing file is refused and left alone.
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    refused = ctl(kb, "restore", backup["id"], "--component", "stock", "--to-path", str(target))
    assert refused.returncode != 0
    assert f"--to-path {target} exists: choose another path, or add --clean" in refused.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest

    # By hand (docs/format.md): zstd -d of the stored object is the database.
    stored = kb.backup_dir(backup) / component(kb, backup)["file"]
    by_hand = tmp_path / "by-hand.db"
    subprocess.run(["zstd", "-d", "-q", "-o", str(by_hand), str(stored)], check=True)
    check = subprocess.run(["sqlite3", str(by_hand), "PRAGMA integrity_check;"
                            " SELECT count(*) FROM items;"], capture_output=True, text=True,
                           check=True)
    assert check.stdout.split() == ["ok", str(copied)]


def make_db(path: Path, n: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, batch INTEGER, payload BLOB)")
    conn.executemany("INSERT INTO items VALUES (?, ?, randomblob(100))",
                     [(i, i // BATCH) for i in range(1, n + 1)])
    conn.close()


def backed_up(kb: KbEnv, db: Path, n: int) -> dict[str, Any]:
    """A database of n rows, a daemon with a job for it, and a backup of it."""
    make_db(db, n)
    sqlite_job(kb, db)
    kb.start()
    return kb.run_backup("stock")


@contextlib.contextmanager
def holding(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process (tail) with `path` open, until the block ends."""
    holder = subprocess.Popen(["tail", "-f", str(path)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(os.path.exists(f"/proc/{holder.pid}/fd/{fd}")
                             and os.readlink(f"/proc/{holder.pid}/fd/{fd}") == str(path)
                             for fd in os.listdir(f"/proc/{holder.pid}/fd")), 10,
                 "tail to open the file")
        yield holder
    finally:
        holder.kill()
        holder.wait()


STALE_WAL = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("INSERT INTO items VALUES (100000, -1, x'00')")
os._exit(0)  # killed: its committed row stays in the -wal, not yet in the database file
"""


def test_in_place_restore_after_a_safety_backup_refused_while_open(
    kb: KbEnv, tmp_path: Path
) -> None:
    db = tmp_path / "app" / "dev.db"
    db.parent.mkdir()
    backup = backed_up(kb, db, 700)
    original = rows(db)

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM items WHERE id > 350")
    conn.close()
    subprocess.run([sys.executable, "-c", STALE_WAL, str(db)], check=True)
    assert Path(f"{db}-wal").stat().st_size > 0
    damaged = rows(db)
    assert len(damaged) == 351 and damaged[-1][0] == 100000

    with holding(db) as holder:
        refused = ctl(kb, "restore", backup["id"], "--component", "stock", "--in-place",
                      "--yes")
        assert refused.returncode != 0
        assert f"{db} is open by tail (pid {holder.pid}): stop it first, or add --force-open" \
            in refused.stderr
        assert rows(db) == damaged

    out = ok(ctl(kb, "restore", backup["id"], "--component", "stock", "--in-place", "--yes"),
             kb)
    # The old -wal/-shm are gone (checkpointed first), and nothing is left beside the file.
    assert sorted(p.name for p in db.parent.iterdir()) == ["dev.db"]
    assert rows(db) == original  # the old -wal was not replayed into the restored file
    safety_id = next(w for w in out.split() if w.startswith(backup["id"][:4])
                     and w != backup["id"])
    safety = kb.ctl_json("show", safety_id)
    assert safety["trigger"] == "pre-restore"
    undo = tmp_path / "undo.db"
    ok(ctl(kb, "restore", safety_id, "--component", "stock", "--to-path", str(undo)), kb)
    assert rows(undo) == damaged

    # --force-open replaces the file even though a process holds it (no safety backup asked).
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM items")
    conn.close()
    with holding(db):
        ok(ctl(kb, "restore", backup["id"], "--component", "stock", "--in-place", "--yes",
               "--force-open", "--no-safety-backup"), kb)
    assert rows(db) == original


def test_restore_requests_that_cannot_work_are_refused(kb: KbEnv, tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    backup = backed_up(kb, db, 70)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args, expected in (
        ((), "nothing to restore: sqlite stock skipped: give --to-path PATH (or --in-place)"),
        (("--to-path", str(tmp_path / "x.db")),
         "--to-path restores one SQLite database: give --component NAME too"),
        (("--component", "stock", "--to-path", str(tmp_path)),
         f"--to-path {tmp_path} is a directory; give the database file's path"),
    ):
        result = ctl(kb, "restore", backup["id"], *args)
        assert result.returncode != 0
        assert expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "x.db").exists()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_killed_daemons_copy_is_removed_by_the_next_run(kb: KbEnv, tmp_path: Path) -> None:
    """A temp copy nobody holds (its daemon was killed mid-run) is removed, with its -wal,
    at the next run; one another run holds (an flock) is left alone."""
    kb.state.mkdir(parents=True, exist_ok=True)
    orphan = kb.state / "sqlite-stock-killed.db"
    orphan.write_bytes(b"SQLite format 3\0 secret rows of yesterday")
    (kb.state / "sqlite-stock-killed.db-wal").write_bytes(b"wal")
    held = kb.state / "sqlite-other-running.db"
    held.write_bytes(b"in use")
    with open(held, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        backed_up(kb, tmp_path / "dev.db", 10)
        assert leftovers(kb) == [str(held)]
    assert "event=sqlite.copy_leftover" in kb.logs() and str(orphan) in kb.logs()


def test_a_corrupted_stored_object_fails_verification(kb: KbEnv, tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    backup = backed_up(kb, db, 2000)
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(c for c in manifest["components"] if c["kind"] == "sqlite")
    stored = folder / entry["file"]
    data = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(
        stored.read_bytes()))
    data[4096 * 2 + 8: 4096 * 2 + 400] = b"\xff" * 392  # a b-tree page's cells
    stored.write_bytes(zstandard.ZstdCompressor(level=3).compress(bytes(data)))
    entry["size_bytes"] = stored.stat().st_size  # resealed: only the content is wrong
    entry["sha256"] = hashlib.sha256(stored.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0
    for level in ("structure", "restore-test"):
        result = kb.ctl("verify", backup["id"], "--level", level, "--wait")
        assert result.returncode != 0
        said = result.stdout + result.stderr
        assert ("sqlite stock: PRAGMA integrity_check of the restored database failed: " in said
                or "sqlite stock: the restored database cannot be read: database disk image is"
                   " malformed" in said), said
        assert "*** in database" not in said
    assert leftovers(kb) == []


def test_a_row_count_the_restored_copy_lacks_fails_restore_test(
        kb: KbEnv, tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    backup = backed_up(kb, db, 500)
    ok(kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait"), kb)
    assert kb.ctl_json("show", backup["id"])["verifications"][0]["details"][
        "rows_stock"] == 500
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(c for c in manifest["components"] if c["kind"] == "sqlite")
    entry["sqlite"]["row_counts"]["items"] = 501  # the manifest says one row more
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0
    result = kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait")
    assert result.returncode != 0
    assert "sqlite stock: table items: 501 rows in manifest, 500 restored" in result.stdout \
        + result.stderr, result.stdout + result.stderr
    assert kb.ctl_json("show", backup["id"])["status"] == "corrupt"
    assert leftovers(kb) == []


def test_bad_database_files_fail_the_run_with_one_line(kb: KbEnv, tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    sqlite_job(kb, db)
    kb.start()
    for content, expected in ((None, f"sqlite stock: {db} does not exist"),
                              (b"not a database at all", f"{db} is not a SQLite database"),
                              (b"", f"{db} is not a SQLite database (empty file)")):
        if content is not None:
            db.write_bytes(content)
        result = kb.ctl("run", "stock", "--wait")
        assert result.returncode != 0
        assert expected in result.stdout + result.stderr
        check = kb.ctl("sources", "check", "stock")
        assert expected in check.stdout + check.stderr
    assert leftovers(kb) == []


@pytest.mark.parametrize(("path", "expected"), [
    (None, "stock.toml: sqlite.0.path: required field is missing"),
    ('"app/dev.db"', "stock.toml: sqlite.0.path: expected an absolute path to a SQLite"
                     " database file, got 'app/dev.db'"),
    ('"/tmp"', "stock.toml: sqlite.0.path: /tmp is a directory; expected a SQLite database"),
], ids=["missing", "relative", "directory"])
def test_bad_sqlite_config_is_one_line(tmp_path: Path, path: str | None,
                                       expected: str) -> None:
    conf = tmp_path / "conf"
    (conf / "jobs.d").mkdir(parents=True)
    (conf / "kbackupd.toml").write_text(f'[daemon]\nstate_dir = "{tmp_path}/state"\n'
                                        f'[storage.local]\ntype = "local"\n'
                                        f'path = "{tmp_path}/store"\n')
    line = "" if path is None else f"path = {path}\n"
    (conf / "jobs.d" / "stock.toml").write_text(
        f'targets = ["local"]\n[[sqlite]]\nname = "stock"\n{line}')
    result = subprocess.run([KBACKUPCTL, "--config-dir", str(conf), "config", "check"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_encrypted_sqlite_backup_round_trips(kb: KbEnv, tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    make_db(db, 140)
    marker = "stocktake-secret-4f1c9e"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES (?)", (marker,))
    conn.close()
    secret = tmp_path / "backup-pass"
    secret.write_text("correct horse battery staple\n")
    sqlite_job(kb, db, f'[encryption]\nmode = "gpg-symmetric"\npassphrase_file = "{secret}"\n')
    kb.start()
    backup = kb.run_backup("stock")
    entry = component(kb, backup)
    assert entry["file"] == "sqlite-stock.db.zst.gpg"
    assert entry["sqlite"]["row_counts"] == {"items": 140, "notes": 1}
    stored = kb.backup_dir(backup) / entry["file"]
    assert marker.encode() not in stored.read_bytes()
    result = kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr

    target = tmp_path / "restored.db"
    ok(ctl(kb, "restore", backup["id"], "--component", "stock", "--to-path", str(target)), kb)
    assert rows(target) == rows(db)

    by_hand = tmp_path / "by-hand.db"  # docs/format.md: gpg -d, then zstd -d
    try:
        subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"gpg --batch --pinentry-mode loopback --passphrase-file {secret} -d"
                        f" {stored} | zstd -d -q -o {by_hand}"], check=True,
                       capture_output=True, env={**os.environ, "GNUPGHOME": str(tmp_path)})
    finally:
        stop_gpg_agent(tmp_path)
    assert rows(by_hand) == rows(db)
    assert leftovers(kb) == []
