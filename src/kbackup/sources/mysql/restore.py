"""Restoring a MariaDB/MySQL component. MariaDB has no RENAME DATABASE, and RENAME TABLE
cannot move a table with triggers to another database, so a database cannot be swapped in
as PostgreSQL's is. In place (after the safety backup): the dump is first loaded into a side
database (a dump this server cannot load fails there, the live database untouched), then the
live database is dropped, created again with the backed-up character set, and loaded. Into a
new name: created and loaded; dropped again if the load fails."""

from __future__ import annotations

import asyncio
import contextlib

from kbackup.repository import Component
from kbackup.sources.base import DriverError, RestoreContext, Step
from kbackup.sources.mysql.client import Login, MysqlError
from kbackup.sources.mysql.load import compare, create, exists, load
from kbackup.sources.mysql.plan import login_for


class MysqlRestoreError(DriverError):
    """A MariaDB/MySQL restore step failed; one line."""


async def _fresh(ctx: RestoreContext, component: Component, login: Login, name: str) -> None:
    """Create `name` and load the dump; a failed load drops what it created."""
    await create(login, name, component)
    try:
        await load(ctx, component, login, name)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(login.drop_database(name))
        raise


async def restore_database(ctx: RestoreContext, step: Step, component: Component) -> None:
    login = login_for(ctx.job, component)
    target = step.target
    try:
        if step.kind == "database-replace":
            await _load_beside(ctx, component, login, target)
            ctx.progress.phase = f"replacing database {target}"
            await login.drop_database(target)
            try:
                await _fresh(ctx, component, login, target)
            except MysqlError as exc:
                raise MysqlRestoreError(f"{exc}; database {target} is now missing: restore"
                                        " the safety backup taken before", exc.stderr) from None
            return
        ctx.progress.phase = f"restoring database {target}"
        if await exists(login, target):  # planned: empty, or --clean
            await login.drop_database(target)
        await _fresh(ctx, component, login, target)
    except MysqlError as exc:
        raise MysqlRestoreError(f"{exc}; database {target} is unchanged"
                                if step.kind == "database-replace" else str(exc),
                                exc.stderr) from None


async def _load_beside(ctx: RestoreContext, component: Component, login: Login,
                       target: str) -> None:
    """Load into a side database and compare its rows: proves the dump loads here before
    the live database is touched. Always dropped."""
    side = f"{target[:40]}_kbrestore_{ctx.restore_id[-6:]}"
    ctx.progress.phase = f"restoring database {target} (beside it first, as {side})"
    try:
        await login.drop_database(side)
        await _fresh(ctx, component, login, side)
        problem = compare(component, await login.counts(side))
        if problem:
            raise MysqlError(f"mysql {component.name}: {problem}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(login.drop_database(side))
