"""The SQLite driver: every verb of `[[sqlite]]`, one component per entry (the database)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

from kbackup.config import JobConfig
from kbackup.errors import check_result
from kbackup.fields import SourceConfig
from kbackup.repository import Component
from kbackup.sources.base import Planned, RestoreContext, RestoreOptions, Source, Step
from kbackup.sources.filelike import FileLikeDriver
from kbackup.sources.sqlite import check, meta, restore
from kbackup.sources.sqlite.config import SqliteSource
from kbackup.sources.sqlite.snapshot import NotADatabase, check_file, connect
from kbackup.sources.sqlite.stream import SqliteDatabase


def probe(config: SqliteSource) -> dict[str, Any]:
    """The file is a SQLite database this daemon can open; its size and SQLite's version."""
    where = f"sqlite {config.name}"
    try:
        check_file(config.path)
        with connect(config.path) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except NotADatabase as exc:
        return check_result(False, f"{where}: {exc}", path=str(config.path))
    except sqlite3.Error as exc:
        return check_result(False, f"{where}: {config.path} cannot be opened: {exc}",
                            path=str(config.path))
    return check_result(True, path=str(config.path), size_bytes=os.path.getsize(config.path),
                        sqlite_version=sqlite3.sqlite_version)


class SqliteDriver(FileLikeDriver):
    table = "sqlite"
    component_kinds = ("sqlite",)
    size_kind = "database"
    checks = check
    errors = (sqlite3.Error, OSError)

    def sources(self, config: SourceConfig) -> list[Source]:
        assert isinstance(config, SqliteSource)
        return [SqliteDatabase(config)]

    async def check(self, config: SourceConfig) -> dict[str, Any]:
        assert isinstance(config, SqliteSource)
        return await asyncio.to_thread(probe, config)

    def summary(self, component: dict[str, Any]) -> dict[str, Any]:
        return meta.summary(component)

    def verify_context(self, component: Component) -> str | None:
        return f"sqlite {component.name}"

    async def plan(self, job: JobConfig, component: Component,
                   request: RestoreOptions) -> Planned:
        return restore.plan_sqlite(job, component, request)

    async def restore(self, ctx: RestoreContext, step: Step, component: Component) -> None:
        with self.driver_errors(f"restoring sqlite {component.name} to {step.target}"):
            await restore.restore_sqlite(ctx, step, component)


DRIVER = SqliteDriver()
