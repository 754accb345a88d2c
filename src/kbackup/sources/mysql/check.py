"""Verifying a MariaDB/MySQL component: the whole dump decoded and its shape and row counts
checked against the manifest (structure), or loaded into a scratch database on the source's
server, or the entry's `restore_test` server when set, whose row counts must equal the
manifest's (restore-test; always dropped)."""

from __future__ import annotations

import asyncio
import contextlib

from kbackup.repository import Component
from kbackup.sources.base import CannotCheck, CheckFailed, ReadBack
from kbackup.sources.mysql.client import Login, MysqlError
from kbackup.sources.mysql.config import configured
from kbackup.sources.mysql.counter import DumpShapeError, RowCounter
from kbackup.sources.mysql.load import compare, create, load


async def structure(back: ReadBack, component: Component) -> None:
    counter = RowCounter()
    stream = back.open(component, component)
    try:
        async for chunk in stream.chunks():
            back.advance(len(chunk))
            counter.feed(chunk)
        counter.check_complete()
    except DumpShapeError as exc:
        raise CheckFailed(f"mysql {component.name}: {exc}") from None
    problem = compare(component, counter.counts)
    if problem:
        raise CheckFailed(f"mysql {component.name}: {problem}")
    back.details[f"rows_{component.name}"] = sum(counter.counts.values())


def verify_login(back: ReadBack, component: Component) -> Login:
    source = configured(back.job, component.name)
    if source is None:
        raise CheckFailed(f"mysql {component.name}: no longer configured in job"
                          f" {back.manifest.job}: cannot restore-test it")
    return Login.for_restore_test(source)


async def restore_test(back: ReadBack, component: Component) -> None:
    login = verify_login(back, component)
    scratch = f"kbackup_verify_{back.manifest.id[-6:]}"
    back.details.setdefault("scratch_databases", []).append(scratch)
    try:
        try:
            await login.drop_database(scratch)  # left over by a crashed verification
            await create(login, scratch, component)
        except MysqlError as exc:  # the server's problem, not the backup's
            raise CannotCheck(f"{exc} (creating scratch database {scratch})") from None
        try:
            await load(back, component, login, scratch)
            restored = await login.counts(scratch)
        except MysqlError as exc:
            raise CheckFailed(str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(login.drop_database(scratch))
    problem = compare(component, restored)
    if problem:
        raise CheckFailed(f"mysql {component.name}: {problem}")
    back.details[f"rows_{component.name}"] = sum(restored.values())
