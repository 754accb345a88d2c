"""The file tree driver: every verb of `[[files]]`."""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kbackup.config import JobConfig
from kbackup.errors import check_result
from kbackup.fields import SourceConfig
from kbackup.repository import Component
from kbackup.sources.base import (
    DriverError,
    Planned,
    ReadBack,
    RestoreContext,
    RestoreOptions,
    Source,
    Step,
)
from kbackup.sources.files import check, meta, restore
from kbackup.sources.files.config import FilesSource
from kbackup.sources.files.tree import FileTree, path_problem


@contextmanager
def _archive_errors() -> Iterator[None]:
    """A damaged archive or a failed file operation as the DriverError the jobs handle (the
    same one line): tarfile's and the OS's exceptions stay inside this driver."""
    try:
        yield
    except (tarfile.TarError, OSError) as exc:
        raise DriverError(str(exc)) from exc


def probe_tree(config: FilesSource) -> dict[str, Any]:
    """The tree's root (or the single file) exists and this daemon may read it."""
    problem = path_problem(config.path)
    if problem:
        return check_result(False, f"files {config.name}: {config.path} {problem}",
                            path=str(config.path))
    return check_result(True, path=str(config.path))


class FilesDriver:
    table = "files"
    component_kinds = ("files",)

    def sources(self, config: SourceConfig) -> list[Source]:
        assert isinstance(config, FilesSource)
        return [FileTree(config)]

    async def expand(self, config: SourceConfig) -> list[Source]:
        return self.sources(config)  # a tree is one component, whatever it holds

    async def check(self, config: SourceConfig) -> dict[str, Any]:
        assert isinstance(config, FilesSource)
        return await asyncio.to_thread(probe_tree, config)

    def summary(self, component: dict[str, Any]) -> dict[str, Any]:
        return meta.summary(component)

    def size_label(self, component_kind: str) -> str | None:
        return "files"

    async def structure(self, back: ReadBack, component: Component) -> None:
        back.progress.phase = f"structure files {component.name}"
        with _archive_errors():
            await check.structure(back, component)

    async def restore_test(self, back: ReadBack, component: Component) -> None:
        back.progress.phase = f"restore-test files {component.name}"
        with _archive_errors():
            await check.restore_test(back, component)

    def selected(self, component: Component, request: RestoreOptions) -> bool:
        if request.all_databases:  # databases only
            return False
        return not request.component or component.name == request.component

    def restore_rank(self, component: Component) -> int:
        return 1

    async def plan(self, job: JobConfig, component: Component,
                   request: RestoreOptions) -> Planned:
        return restore.plan_files(job, component, request)

    async def restore(self, ctx: RestoreContext, step: Step, component: Component) -> None:
        with _archive_errors():
            await restore.restore_files(ctx, step, component)


DRIVER = FilesDriver()
