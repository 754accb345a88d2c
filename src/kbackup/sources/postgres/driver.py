"""The PostgreSQL driver: every verb of `[[postgres]]`, for its two components, the database
dump ("postgres", one per database of an entry with `databases`) and the roles and
tablespaces beside it ("globals")."""

from __future__ import annotations

from typing import Any

from kbackup.config import JobConfig
from kbackup.fields import SourceConfig
from kbackup.repository import Component
from kbackup.sources.base import Planned, ReadBack, RestoreContext, RestoreOptions, Source, Step
from kbackup.sources.postgres import check, discover, plan, restore
from kbackup.sources.postgres.config import PostgresSource, source_of
from kbackup.sources.postgres.dump import PostgresDatabase, PostgresGlobals
from kbackup.sources.tools import counted_summary

GLOBALS = "globals"


class PostgresDriver:
    table = "postgres"
    component_kinds = ("postgres", GLOBALS)

    def sources(self, config: SourceConfig) -> list[Source]:
        assert isinstance(config, PostgresSource)
        found: list[Source] = [PostgresDatabase(config)]
        if config.globals:
            found.append(PostgresGlobals(config))
        return found

    async def expand(self, config: SourceConfig) -> list[Source]:
        """With `databases`: each database the server has now (discover.py), then globals."""
        assert isinstance(config, PostgresSource)
        if not config.multi:
            return self.sources(config)
        found: list[Source] = [PostgresDatabase(config, name)
                               for name in await discover.discover(config)]
        if config.globals:
            found.append(PostgresGlobals(config))
        return found

    async def check(self, config: SourceConfig) -> dict[str, Any]:
        assert isinstance(config, PostgresSource)
        return await discover.check(config)

    def summary(self, component: dict[str, Any]) -> dict[str, Any]:
        return counted_summary(component)

    def size_label(self, component_kind: str) -> str | None:
        return None if component_kind == GLOBALS else "database"

    async def structure(self, back: ReadBack, component: Component) -> None:
        if component.kind == GLOBALS:  # an SQL script: decoding it whole is the check
            await back.open(component, component).drain()
            return
        back.progress.phase = f"structure database {component.name}"
        await check.structure(back, component)

    async def restore_test(self, back: ReadBack, component: Component) -> None:
        if component.kind == GLOBALS:  # not applied to a scratch cluster: decoded only
            await back.open(component, component).drain()
            return
        back.progress.phase = f"restore-test database {component.name}"
        await check.restore_test(back, component)

    def selected(self, component: Component, request: RestoreOptions) -> bool:
        """The databases; their globals only with --with-globals or --all-databases (or
        asked by name)."""
        if request.component:
            globals_name = f"{source_of(request.component)}.globals"
            return component.name == request.component or (
                request.with_globals and component.name == globals_name)
        return component.kind != GLOBALS or request.with_globals or request.all_databases

    def restore_rank(self, component: Component) -> int:
        return 0 if component.kind == GLOBALS else 1  # roles before the objects they own

    async def plan(self, job: JobConfig, component: Component,
                   request: RestoreOptions) -> Planned:
        if component.kind == GLOBALS:
            return plan.plan_globals(component)
        return await plan.plan_database(job, component, request)

    async def restore(self, ctx: RestoreContext, step: Step, component: Component) -> None:
        if component.kind == GLOBALS:
            await restore.restore_globals(ctx, component)
        else:
            await restore.restore_database(ctx, step, component)


DRIVER = PostgresDriver()
