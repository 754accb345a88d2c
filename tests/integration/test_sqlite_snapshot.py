"""The SQLite copy and its inspection on real files, no daemon: odd table names, rollback
journal databases, integrity verdicts, and the /proc scan for processes holding a file."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from kbackup.sources.sqlite.holders import holders
from kbackup.sources.sqlite.snapshot import (
    NotADatabase,
    check_file,
    inspect,
    online_copy,
    run_checks,
)


def test_a_rollback_journal_database_with_odd_table_names(tmp_path: Path) -> None:
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute('CREATE TABLE "we""ird name" (x)')
    conn.execute("CREATE TABLE plain (x)")
    conn.executemany('INSERT INTO "we""ird name" VALUES (?)', [(i,) for i in range(5)])
    conn.execute("INSERT INTO plain VALUES (1)")
    conn.close()
    copy.touch()
    online_copy(live, copy)
    meta = inspect(copy, live)
    assert meta.row_counts == {'we"ird name': 5, "plain": 1}
    assert meta.journal_mode == "delete" and meta.integrity_check == "ok"
    assert meta.page_size * (meta.page_count or 0) == copy.stat().st_size
    assert run_checks(copy, ["SELECT x FROM plain WHERE x > 5"]) is None
    assert run_checks(copy, ["SELECT x FROM plain WHERE x = 1"]) == \
        "sql_checks[0] returned rows (first: (1,)): SELECT x FROM plain WHERE x = 1"
    problem = run_checks(copy, ["SELECT nope FROM plain"])
    assert problem == "sql_checks[0] failed to run: no such column: nope"


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "is not a SQLite database (empty file)"),
    (b"PK\x03\x04 a zip file", "is not a SQLite database (no SQLite header)"),
])
def test_files_that_are_not_databases(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(NotADatabase, match=r"x\.db " + expected.replace("(", r"\(")
                       .replace(")", r"\)")):
        check_file(path)
    with pytest.raises(NotADatabase, match="does not exist"):
        check_file(tmp_path / "missing.db")
    with pytest.raises(NotADatabase, match="is not a regular file"):
        check_file(tmp_path)


def test_holders_names_the_process_holding_the_file_or_its_wal(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    db.write_bytes(b"x")
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"y")
    assert holders(db) == []
    proc = subprocess.Popen(["tail", "-f", str(wal)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not holders(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holders(db) == [f"tail (pid {proc.pid})"]
    finally:
        proc.kill()
        proc.wait()
    assert holders(db) == []
