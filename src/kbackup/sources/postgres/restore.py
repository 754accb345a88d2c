"""Restoring a PostgreSQL component: a whole database beside the live one then swapped in,
or selected tables / schema / data with pg_restore in one transaction; the globals component
as a psql script. A failure leaves the live database as it was."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from kbackup.repository import Component
from kbackup.sources.base import RestoreContext, Step
from kbackup.sources.postgres.config import configured
from kbackup.sources.postgres.pgtools import (
    CannotCreateDatabase,
    Login,
    PgError,
    create_database,
    create_database_like,
    database_exists,
    drop_database,
    failure,
    rename_database,
    swap_database,
    with_pg_restore,
)
from kbackup.sources.postgres.plan import table_args, whole
from kbackup.sources.postgres.staged import Load, load_dump, restore_jobs
from kbackup.sources.tools import feed_process

log = logging.getLogger("kbackup.restore")


def _argv(login: Login, ctx: RestoreContext, step: Step, component: Component) -> list[str]:
    """pg_restore's arguments for a restore into (or over) step.target, in one transaction."""
    request = ctx.request
    argv = [login.pg_restore, "--exit-on-error", "--single-transaction",
            f"--dbname={login.dsn_for(step.target)}"]
    if (step.kind == "database-replace" or request.clean) and not request.data_only:
        argv += ["--clean", "--if-exists"]  # pg_restore refuses --clean with --data-only
    if request.schema_only:
        argv.append("--schema-only")
    if request.data_only:  # the dump's data is in name order, not foreign-key order
        argv += ["--data-only", "--disable-triggers"]
    if request.no_owner:
        argv += ["--no-owner", "--no-acl"]
    return argv + table_args(component, request.tables)


async def restore_database(ctx: RestoreContext, step: Step, component: Component) -> None:
    source = configured(ctx.job, component.name)
    login = await with_pg_restore(Login.for_restore(source), source, component)
    # --to-database a new name: restored beside and renamed in too; an existing (empty) one
    # is the user's (or the maintenance database): streamed into, in one transaction
    if whole(ctx.request) and (step.kind == "database-replace"
                               or not await database_exists(login, step.target)):
        try:
            await _replace_whole_database(ctx, login, component, step.target)
            return
        except CannotCreateDatabase as exc:
            log.warning("event=restore.fallback restore=%s reason=%r method=%s",
                        ctx.restore_id, str(exc), "pg_restore --clean in place")
    if step.checked_before_change:  # the plan counted on the side database: check first
        ctx.progress.phase = f"checking {component.file}"
        await ctx.open(component, component).drain()
    argv = _argv(login, ctx, step, component)
    if step.kind == "database-new" and not await database_exists(login, step.target):
        await create_database(login, step.target)
    ctx.progress.phase = f"restoring database {step.target}"
    stream = ctx.open(component, component)
    code, stderr = await feed_process(argv, login.child_env(), stream.chunks(),
                                      on_chunk=ctx.advance)
    if code != 0:
        raise PgError(failure(f"pg_restore into {step.target}", code, stderr).args[0]
                      + f"; database {step.target} is unchanged (the transaction was rolled"
                      " back)", stderr)


async def _replace_whole_database(ctx: RestoreContext, login: Login, component: Component,
                                  target: str) -> None:
    """Restore into a side database (pg_restore -j when the dump can be staged), then swap
    it in, or give it the target's name when there is none yet (--to-database NEW): the result
    is exactly the backup (tables created since are gone too), and a failure leaves the live
    database as it was. pg_restore --clean alone cannot do that: it drops only the dump's
    own objects."""
    side = f"{target[:40]}_kbrestore_{ctx.restore_id[-6:]}"
    exists = await database_exists(login, target)
    await drop_database(login, side)
    if exists:
        await create_database_like(login, side, target)
    else:
        await create_database(login, side)
    args = ["--exit-on-error"]
    if ctx.request.no_owner:
        args += ["--no-owner", "--no-acl"]
    load = Load(login, side, args, restore_jobs(configured(ctx.job, component.name)),
                streamed_args=["--single-transaction"])
    ctx.progress.phase = f"restoring database {target} (beside it, as {side})"
    try:
        code, stderr = await load_dump(ctx, component, load)
        if code != 0:
            raise PgError(failure(f"pg_restore of {target}", code, stderr).args[0]
                          + f"; database {target} is unchanged", stderr)
        ctx.progress.phase = f"swapping the restored database in as {target}"
        if exists:
            await swap_database(login, target, side, ctx.restore_id[-6:])
        else:
            await rename_database(login, side, target)
    except BaseException:
        await asyncio.shield(drop_database(login, side))
        raise


async def restore_globals(ctx: RestoreContext, component: Component) -> None:
    """Apply the roles script; roles that already exist are errors psql reports and skips."""
    database = component.name.removesuffix(".globals")
    source = configured(ctx.job, database)
    login = await with_pg_restore(Login.for_restore(source), source, component)
    psql = str(Path(login.pg_restore).with_name("psql")) if "/" in login.pg_restore else "psql"
    ctx.progress.phase = "creating roles"
    stream = ctx.open(component, component)
    argv = [psql, "-X", "-q", f"--dbname={login.dsn_for('postgres')}", "-f", "-"]
    code, stderr = await feed_process(argv, login.child_env(), stream.chunks(),
                                      on_chunk=ctx.advance)
    errors = [line for line in stderr if "ERROR" in line and "already exists" not in line]
    if code != 0 or errors:
        raise PgError(f"applying roles failed: {errors[0] if errors else f'exit {code}'}",
                      stderr)
