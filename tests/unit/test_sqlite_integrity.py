"""PRAGMA integrity_check's verdict is one line a user can read, whatever shape SQLite gives it
(one row per problem, or one row holding a heading and every problem on its own line)."""

import sqlite3
from pathlib import Path

from kbackup.sources.sqlite.snapshot import integrity


def corrupted(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, payload BLOB)")
    conn.executemany("INSERT INTO items VALUES (?, zeroblob(100))", [(i,) for i in range(2000)])
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2 + 8: 4096 * 2 + 400] = b"\xff" * 392  # a b-tree page's cells
    path.write_bytes(bytes(data))


def test_a_healthy_database_says_ok(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "ok.db")
    conn.execute("CREATE TABLE t (x)")
    assert integrity(conn) == "ok"


def test_a_damaged_page_gives_its_first_problem_on_one_line(tmp_path: Path) -> None:
    corrupted(tmp_path / "bad.db")
    conn = sqlite3.connect(tmp_path / "bad.db")
    verdict = integrity(conn)
    assert verdict.startswith("On tree page "), verdict
    assert "\n" not in verdict and "***" not in verdict
