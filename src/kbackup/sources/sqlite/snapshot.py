"""The online copy of a live SQLite database and what a copy holds.

The copy is SQLite's backup API in one step: it reads every page inside one read transaction,
so it is one committed state even while the app writes (in WAL mode the app's writes go on
meanwhile; in rollback-journal mode they wait for the copy, up to their busy timeout). The
live file is opened read-only: kbackup never writes to the app's database.
All functions here block: callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from kbackup.sources.sqlite.meta import SqliteMeta

HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")


class NotADatabase(Exception):
    """The file is missing, unreadable or not SQLite; the message is the one line users see
    (without the source's name, which the caller adds)."""


def check_file(path: Path) -> None:
    """Raise NotADatabase unless `path` is a readable file starting with SQLite's header."""
    if not path.exists():
        raise NotADatabase(f"{path} does not exist")
    if not path.is_file():
        raise NotADatabase(f"{path} is not a regular file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(HEADER))
    except OSError as exc:
        raise NotADatabase(f"{path} is not readable by uid {os.geteuid()}:"
                           f" {exc.strerror}") from None
    if head != HEADER:
        raise NotADatabase(f"{path} is not a SQLite database"
                           f" ({'empty file' if not head else 'no SQLite header'})")


def quote_name(name: str) -> str:
    """An SQL identifier for SQLite (table names come from sqlite_master, never from users)."""
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def connect(path: Path, readonly: bool = True) -> Iterator[sqlite3.Connection]:
    uri = f"file:{quote(str(path))}" + ("?mode=ro" if readonly else "")
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def online_copy(live: Path, copy: Path) -> None:
    """A consistent copy of `live` (WAL content included) into the file `copy`."""
    with connect(live) as source, connect(copy, readonly=False) as dest:
        source.backup(dest)  # pages=-1: every page in one read transaction


def tables(conn: sqlite3.Connection) -> list[str]:
    """The user tables (not sqlite_* and not virtual tables, whose module may be missing;
    their shadow tables hold the rows and are counted)."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE"
                        " 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL%'"
                        " ORDER BY name").fetchall()
    return [r[0] for r in rows]


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {quote_name(t)}").fetchone()[0]
            for t in tables(conn)}


def integrity(conn: sqlite3.Connection) -> str:
    """PRAGMA integrity_check's verdict: "ok", or its first message."""
    rows = [line for r in conn.execute("PRAGMA integrity_check").fetchall()
            for line in str(r[0]).splitlines()]  # one row may hold several lines
    if rows == ["ok"]:
        return "ok"
    problems = [r for r in rows if not r.startswith("*** in database")]  # headings
    return (problems or rows or ["no answer"])[0]


def inspect(copy: Path, live: Path | None = None) -> SqliteMeta:
    """What the manifest records about a copy (ours: opened read-write, so that a WAL-mode
    copy can have its -shm; nobody else writes to it)."""
    with connect(copy, readonly=False) as conn:
        return SqliteMeta(
            path=str(live) if live else None,
            sqlite_version=sqlite3.sqlite_version,
            page_size=conn.execute("PRAGMA page_size").fetchone()[0],
            page_count=conn.execute("PRAGMA page_count").fetchone()[0],
            journal_mode=conn.execute("PRAGMA journal_mode").fetchone()[0],
            row_counts=row_counts(conn),
            integrity_check=integrity(conn),
        )


def run_checks(path: Path, checks: Sequence[str]) -> str | None:
    """The job's sql_checks on a restored copy: the first failing one as a message, else None.
    A check fails by returning rows (or by not running)."""
    with connect(path, readonly=False) as conn:
        for index, check in enumerate(checks):
            try:
                row = conn.execute(check).fetchone()  # the admin's SQL, run as written
            except sqlite3.Error as exc:
                return f"sql_checks[{index}] failed to run: {exc}"
            if row is not None:
                return f"sql_checks[{index}] returned rows (first: {tuple(row)!r}): {check}"
    return None


def remove_with_side_files(path: Path) -> None:
    """A temp copy and whatever SQLite left beside it (-wal, -shm, -journal)."""
    for name in ("", *SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{name}")
