"""Verifying a PostgreSQL component: the whole archive parsed by pg_restore (structure), or
restored into a scratch database whose row counts must equal the manifest's and where the
job's sql_checks must return no rows (restore-test). The scratch database is always dropped."""

from __future__ import annotations

import asyncio
import contextlib

from kbackup.repository import Component
from kbackup.sources.base import CannotCheck, CheckFailed, ReadBack
from kbackup.sources.postgres.config import configured
from kbackup.sources.postgres.meta import DatabaseMeta
from kbackup.sources.postgres.pgtools import (
    Login,
    create_database,
    drop_database,
    failure,
    run_sql_checks,
    table_counts,
    with_pg_restore,
)
from kbackup.sources.postgres.staged import Load, load_dump, restore_jobs
from kbackup.sources.postgres.toolchain import ToolchainError
from kbackup.sources.tools import count_mismatch, feed_process


async def verify_login(back: ReadBack, component: Component) -> Login:
    """[verify] restore_dsn when set (it may differ from the backup's server), else the
    database's own restore login; with a pg_restore that can read the archive (CannotCheck
    before anything is created otherwise)."""
    source = configured(back.job, component.name)
    verify = back.job.verify if back.job else None
    pg_restore = source.pg_restore if source else "pg_restore"
    if verify is not None and verify.restore_dsn:
        login = Login(verify.restore_dsn, verify.restore_password_file, pg_restore)
    elif source is None:
        raise CheckFailed(f"database {component.name}: no longer configured in job"
                          f" {back.manifest.job}: set [verify] restore_dsn")
    else:
        login = Login.for_restore(source)
    try:
        return await with_pg_restore(login, source, component)
    except ToolchainError as exc:
        raise CannotCheck(str(exc)) from None


async def structure(back: ReadBack, component: Component) -> None:
    login = await verify_login(back, component)
    stream = back.open(component, component)
    code, stderr = await feed_process([login.pg_restore, "--file=/dev/null"], {},
                                      stream.chunks(), on_chunk=back.advance)
    if code != 0:
        raise CheckFailed(f"database {component.name}: "
                          f"{failure('pg_restore (parse whole archive)', code, stderr)}")


async def restore_test(back: ReadBack, component: Component) -> None:
    login = await verify_login(back, component)
    scratch = f"kbackup_verify_{back.manifest.id[-6:]}"
    back.details.setdefault("scratch_databases", []).append(scratch)
    await drop_database(login, scratch)  # left over by a crashed verification
    try:
        await create_database(login, scratch)
        jobs = restore_jobs(configured(back.job, component.name))
        load = Load(login, scratch, ["--no-owner", "--no-acl", "--exit-on-error"], jobs)
        code, stderr = await load_dump(back, component, load)
        if code != 0:
            raise CheckFailed(f"database {component.name}: "
                              f"{failure('pg_restore into scratch', code, stderr)}")
        await _compare(back, component, login, scratch)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(drop_database(login, scratch))


async def _compare(back: ReadBack, component: Component, login: Login, scratch: str) -> None:
    """Row counts against the manifest's, then the job's sql_checks."""
    expected = DatabaseMeta.of(component).row_counts
    if expected is not None:
        restored = await table_counts(login, scratch)
        problem = count_mismatch(expected, restored)
        if problem:
            raise CheckFailed(problem)
        back.details[f"rows_{component.name}"] = sum(restored.values())
    if back.job is not None and back.job.verify.sql_checks:
        problem = await run_sql_checks(login, scratch, back.job.verify.sql_checks)
        if problem:
            raise CheckFailed(f"database {component.name}: {problem}")
