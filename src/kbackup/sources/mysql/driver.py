"""The MariaDB/MySQL driver: every verb of `[[mysql]]`, whose one component kind "mysql" is
one database's SQL dump (`<entry>:<database>`, one per database of the entry)."""

from __future__ import annotations

from typing import Any

from kbackup.config import JobConfig
from kbackup.fields import SourceConfig
from kbackup.repository import Component
from kbackup.sources.base import Planned, ReadBack, RestoreContext, RestoreOptions, Source, Step
from kbackup.sources.mysql import check, discover, plan, restore
from kbackup.sources.mysql.config import MysqlSource
from kbackup.sources.mysql.dump import MysqlDatabase
from kbackup.sources.tools import counted_summary


class MysqlDriver:
    table = "mysql"
    component_kinds = ("mysql",)

    def sources(self, config: SourceConfig) -> list[Source]:
        """The listed databases (a "*" entry's are only known at run time: expand)."""
        assert isinstance(config, MysqlSource)
        if config.databases == "*":
            return []
        return [MysqlDatabase(config, name) for name in discover.chosen(config, [])]

    async def expand(self, config: SourceConfig) -> list[Source]:
        assert isinstance(config, MysqlSource)
        return [MysqlDatabase(config, name) for name in await discover.discover(config)]

    async def check(self, config: SourceConfig) -> dict[str, Any]:
        assert isinstance(config, MysqlSource)
        return await discover.check(config)

    def summary(self, component: dict[str, Any]) -> dict[str, Any]:
        return counted_summary(component)

    def size_label(self, component_kind: str) -> str | None:
        return "database"

    async def structure(self, back: ReadBack, component: Component) -> None:
        back.progress.phase = f"structure database {component.name}"
        await check.structure(back, component)

    async def restore_test(self, back: ReadBack, component: Component) -> None:
        back.progress.phase = f"restore-test database {component.name}"
        await check.restore_test(back, component)

    def selected(self, component: Component, request: RestoreOptions) -> bool:
        return not request.component or component.name == request.component

    def restore_rank(self, component: Component) -> int:
        return 1

    async def plan(self, job: JobConfig, component: Component,
                   request: RestoreOptions) -> Planned:
        return await plan.plan_database(job, component, request)

    async def restore(self, ctx: RestoreContext, step: Step, component: Component) -> None:
        await restore.restore_database(ctx, step, component)


DRIVER = MysqlDriver()
