"""Verifying a SQLite component: the stored object decoded into a private temp file (checked
against its SHA-256 as it is read) and PRAGMA integrity_check run on it (structure), then every
table's row count compared with the manifest's and the job's sql_checks run (restore-test).
The temp file is always removed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from kbackup.repository import Component
from kbackup.sources.base import CheckFailed, DriverError, ReadBack
from kbackup.sources.sqlite.meta import SqliteMeta
from kbackup.sources.sqlite.snapshot import (
    NotADatabase,
    check_file,
    connect,
    integrity,
    row_counts,
    run_checks,
)
from kbackup.sources.tools import count_mismatch


async def write_stream(chunks: AsyncIterator[bytes], path: Path,
                       on_chunk: Callable[[int], None]) -> None:
    """The decoded object into `path` (created 0600, must not exist), fsynced."""
    fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        async for chunk in chunks:
            on_chunk(len(chunk))
            await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(out.flush)
        await asyncio.to_thread(os.fsync, out.fileno())


def decoded_check(path: Path, name: str) -> None:
    """The restored file is a SQLite database whose integrity_check says ok."""
    try:
        check_file(path)
        with connect(path, readonly=False) as conn:
            verdict = integrity(conn)
    except NotADatabase:
        raise CheckFailed(f"sqlite {name}: the stored object is not a SQLite database"
                          " file") from None
    except sqlite3.Error as exc:
        raise CheckFailed(f"sqlite {name}: the restored database cannot be read: {exc}") from None
    if verdict != "ok":
        raise CheckFailed(f"sqlite {name}: PRAGMA integrity_check of the restored database"
                          f" failed: {verdict}")


@contextlib.asynccontextmanager
async def restored(back: ReadBack, component: Component) -> AsyncIterator[Path]:
    """The component decoded into a temp file, integrity-checked; removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix=f"verify-{back.manifest.id[-6:]}-",
                                    dir=back.scratch_base()))
    path = scratch / f"{component.name}.db"
    try:
        stream = back.open(component, component)
        await write_stream(stream.chunks(), path, back.advance)
        await asyncio.to_thread(decoded_check, path, component.name)
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def structure(back: ReadBack, component: Component) -> None:
    async with restored(back, component):
        pass


def _compare(path: Path, component: Component, checks: list[str]) -> int:
    """Row counts against the manifest's, then the sql_checks; the rows restored."""
    expected = SqliteMeta.of(component).row_counts
    try:
        with connect(path, readonly=False) as conn:
            got = row_counts(conn)
    except sqlite3.Error as exc:
        raise DriverError(f"sqlite {component.name}: counting rows failed: {exc}") from None
    mismatch = count_mismatch(expected or {}, got)
    if mismatch:
        raise CheckFailed(f"sqlite {component.name}: {mismatch}")
    if checks:
        problem = run_checks(path, checks)
        if problem:
            raise CheckFailed(f"sqlite {component.name}: {problem}")
    return sum(got.values())


async def restore_test(back: ReadBack, component: Component) -> None:
    checks = list(back.job.verify.sql_checks) if back.job is not None else []
    async with restored(back, component) as path:
        rows = await asyncio.to_thread(_compare, path, component, checks)
        back.details[f"rows_{component.name}"] = rows
