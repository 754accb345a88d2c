"""Planning the restore of a PostgreSQL component: which database would be replaced or
created, checked against the live server (exists? empty?) and the backup's table list."""

from __future__ import annotations

from kbackup.config import JobConfig
from kbackup.repository import Component
from kbackup.sources.base import Planned, PlanRefused, RestoreOptions, Step
from kbackup.sources.postgres.config import SEPARATOR, configured, source_of
from kbackup.sources.postgres.meta import DatabaseMeta
from kbackup.sources.postgres.pgtools import (
    Login,
    PgError,
    database_exists,
    database_is_empty,
    with_pg_restore,
)
from kbackup.sources.postgres.toolchain import ToolchainError


def table_args(component: Component, tables: list[str]) -> list[str]:
    """pg_restore -t arguments, every name checked against the backup's table list."""
    known = sorted(DatabaseMeta.of(component).row_counts or {})
    args = []
    for name in tables:
        if "." in name:
            matches = [t for t in known if t == name]
        else:
            matches = [t for t in known if t.split(".", 1)[1] == name]
        if not matches:
            raise PlanRefused(f"table {name!r} is not in database {component.name} of this"
                              f" backup; it has: {', '.join(known) or 'no tables'}")
        if len(matches) > 1:
            raise PlanRefused(f"table {name!r} is ambiguous: {', '.join(matches)}")
        args.append(f"--table={matches[0].split('.', 1)[1]}")
    return args


def plan_globals(component: Component) -> Planned:
    return Planned(Step(component.name, "globals", "cluster roles",
                        "create the roles and tablespaces the dump needs (existing ones"
                        " are kept)", size_bytes=component.raw_bytes))


def _what(request: RestoreOptions) -> str:
    what = ("schema only" if request.schema_only else "data only" if request.data_only
            else "schema and data")
    if request.tables:
        what += " of tables " + ", ".join(request.tables)
    return what


def _original(login: Login, component: Component) -> str:
    name = DatabaseMeta.of(component).database or login.database()
    return repr(name) if name else "the original"


async def _into_other(login: Login, component: Component, request: RestoreOptions,
                      name: str) -> Planned:
    """--to-database NAME: the original is not touched."""
    exists = await database_exists(login, name)
    if exists and not request.clean and not await database_is_empty(login, name):
        raise PlanRefused(f"database {name!r} exists and is not empty: choose another"
                          " name, or add --clean to replace its contents")
    detail = (f"restore {_what(request)} into {'existing' if exists else 'new'} database"
              f" {name!r}; {_original(login, component)} is not touched")
    return Planned(Step(component.name, "database-new", name, detail,
                        destructive=exists and request.clean, size_bytes=component.raw_bytes,
                        checked_before_change=whole(request) and not exists))


def whole(request: RestoreOptions) -> bool:
    """The whole database, restored beside its target then swapped or renamed in."""
    return not (request.tables or request.schema_only or request.data_only)


def _all_databases(component: Component, request: RestoreOptions) -> str:
    """--all-databases: each database to its own name (onto a new server: restore_dsn)."""
    if request.to_database or request.tables or request.component:
        raise PlanRefused("--all-databases restores every database to its own name: it"
                          " excludes --to-database, --table and --component")
    name = DatabaseMeta.of(component).database
    if not name:
        raise PlanRefused(f"database {component.name}: the backup does not record its name")
    return name


async def plan_database(job: JobConfig, component: Component,
                        request: RestoreOptions) -> Planned:
    if request.schema_only and request.data_only:
        raise PlanRefused("--schema-only and --data-only exclude each other")
    source = configured(job, component.name)
    login = Login.for_restore(source)
    try:  # refused here, before anything is touched, when no pg_restore can read the dump
        await with_pg_restore(login, source, component)
    except ToolchainError as exc:
        raise PlanRefused(str(exc)) from None
    if request.tables:
        table_args(component, request.tables)
    several = SEPARATOR in component.name  # one of an entry's databases: not the DSN's
    try:
        if request.all_databases:
            name = _all_databases(component, request)
            return await _into_other(login, component, request, name)
        if request.to_database:
            return await _into_other(login, component, request, request.to_database)
        name = ((None if several else login.database()) or DatabaseMeta.of(component).database
                or "")
        if not name:
            raise PlanRefused(f"database {component.name}: the DSN names no dbname")
        if not await database_exists(login, name):
            return Planned(Step(component.name, "database-new", name,
                                f"database {name!r} does not exist: create it and restore"
                                f" {_what(request)}", size_bytes=component.raw_bytes,
                                checked_before_change=whole(request)))
    except PgError as exc:
        raise PlanRefused(f"database {component.name}: {exc}") from None
    detail = (f"REPLACE {_what(request)} in live database {name!r} (pg_restore --clean, one"
              " transaction)")
    if request.no_safety_backup:
        detail += "; NO safety backup (--no-safety-backup)"
    else:
        detail += "; safety backup of it first"
    step = Step(component.name, "database-replace", name, detail, destructive=True,
                size_bytes=component.raw_bytes)  # re-read first: found before the safety backup
    # The safety backup is of the whole entry (each of its databases, if several).
    return Planned(step, [] if request.no_safety_backup else [source_of(component.name)])
