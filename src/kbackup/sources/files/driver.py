"""The file tree driver: every verb of `[[files]]`."""

from __future__ import annotations

import asyncio
import tarfile
from typing import Any

from kbackup.config import JobConfig
from kbackup.errors import check_result
from kbackup.fields import SourceConfig
from kbackup.repository import Component
from kbackup.sources.base import Planned, RestoreContext, RestoreOptions, Source, Step
from kbackup.sources.filelike import FileLikeDriver
from kbackup.sources.files import check, meta, restore
from kbackup.sources.files.config import FilesSource
from kbackup.sources.files.tree import FileTree, path_problem


def probe_tree(config: FilesSource) -> dict[str, Any]:
    """The tree's root (or the single file) exists and this daemon may read it."""
    problem = path_problem(config.path)
    if problem:
        return check_result(False, f"files {config.name}: {config.path} {problem}",
                            path=str(config.path))
    return check_result(True, path=str(config.path))


class FilesDriver(FileLikeDriver):
    """Tarfile's and the OS's exceptions stay inside this driver: a damaged archive or a
    failed file operation is the DriverError the jobs handle (the same one line)."""

    table = "files"
    component_kinds = ("files",)
    size_kind = "files"
    checks = check
    errors = (tarfile.TarError, OSError)

    def sources(self, config: SourceConfig) -> list[Source]:
        assert isinstance(config, FilesSource)
        return [FileTree(config)]

    async def check(self, config: SourceConfig) -> dict[str, Any]:
        assert isinstance(config, FilesSource)
        return await asyncio.to_thread(probe_tree, config)

    def summary(self, component: dict[str, Any]) -> dict[str, Any]:
        return meta.summary(component)

    async def plan(self, job: JobConfig, component: Component,
                   request: RestoreOptions) -> Planned:
        return restore.plan_files(job, component, request)

    async def restore(self, ctx: RestoreContext, step: Step, component: Component) -> None:
        with self.driver_errors(None):
            await restore.restore_files(ctx, step, component)


DRIVER = FilesDriver()
