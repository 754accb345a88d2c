"""Planning the restore of a MariaDB/MySQL component: which database would be created or
replaced, checked against the live server; touches nothing."""

from __future__ import annotations

from kbackup.config import JobConfig
from kbackup.repository import Component
from kbackup.sources.base import Planned, PlanRefused, RestoreOptions, Step
from kbackup.sources.mysql.client import Login, MysqlError
from kbackup.sources.mysql.config import configured, database_of, source_of
from kbackup.sources.mysql.load import exists, is_empty
from kbackup.sources.mysql.meta import MysqlMeta


def login_for(job: JobConfig | None, component: Component) -> Login:
    source = configured(job, component.name)
    if source is None:
        raise PlanRefused(f"mysql {component.name}: its [[mysql]] entry is no longer in the"
                          " job: add it back to restore it")
    return Login(source)


def _refuse_options(request: RestoreOptions) -> None:
    unsupported = [flag for flag, on in (("--table", request.tables),
                                         ("--schema-only", request.schema_only),
                                         ("--data-only", request.data_only))
                   if on]
    if unsupported:
        raise PlanRefused(f"{unsupported[0]} is not supported for mysql components: restore"
                          " the whole database with --to-database, then copy what you need")


async def plan_database(job: JobConfig, component: Component,
                        request: RestoreOptions) -> Planned:
    _refuse_options(request)
    login = login_for(job, component)
    original = MysqlMeta.of(component).database or database_of(component.name)
    try:
        login.client()
        if request.to_database or request.all_databases:
            name = request.to_database or original
            if not name or len(name) > 64 or "/" in name or name != name.rstrip():
                raise PlanRefused(f"--to-database {name!r}: expected a MariaDB database name"
                                  " (1 to 64 characters, no / and no trailing space)")
            if not await exists(login, name):
                return Planned(Step(component.name, "database-new", name,
                                    f"create database {name!r} and load the dump into it;"
                                    f" {original!r} is not touched",
                                    size_bytes=component.raw_bytes))
            if not request.clean and not await is_empty(login, name):
                raise PlanRefused(f"database {name!r} exists and is not empty: choose another"
                                  " name, or add --clean to replace its contents")
            return Planned(Step(component.name, "database-new", name,
                                f"{'REPLACE' if request.clean else 'load into empty'} database"
                                f" {name!r}; {original!r} is not touched",
                                destructive=request.clean, size_bytes=component.raw_bytes))
        if not await exists(login, original):
            return Planned(Step(component.name, "database-new", original,
                                f"database {original!r} does not exist: create it and load"
                                " the dump", size_bytes=component.raw_bytes))
    except MysqlError as exc:
        raise PlanRefused(str(exc)) from None
    detail = (f"REPLACE live database {original!r}: the dump is loaded beside it first (a"
              " failure there leaves it untouched), then it is dropped, created again and"
              " loaded")
    detail += ("; NO safety backup (--no-safety-backup)" if request.no_safety_backup
               else "; safety backup of it first")
    step = Step(component.name, "database-replace", original, detail, destructive=True,
                size_bytes=component.raw_bytes)
    return Planned(step, [] if request.no_safety_backup else [source_of(component.name)])
