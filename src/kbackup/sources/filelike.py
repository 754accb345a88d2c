"""What the drivers of a file-like kind share ([[files]], [[sqlite]]): one component per
entry, verified by its package's `check` module, restored by name (never by
--all-databases), the kind's own exceptions (tarfile's, sqlite3's, the OS's) turned into the
one-line DriverError the jobs handle."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol

from kbackup.fields import SourceConfig
from kbackup.repository import Component
from kbackup.sources.base import DriverError, ReadBack, RestoreOptions, Source


class Checks(Protocol):
    """A kind's check module: its structure and restore-test verbs."""

    async def structure(self, back: ReadBack, component: Component) -> None: ...

    async def restore_test(self, back: ReadBack, component: Component) -> None: ...


class FileLikeDriver:
    """The verbs that are the same for every file-like kind; a subclass sets the class
    attributes and writes sources, check, summary, plan and restore."""

    table: ClassVar[str]
    component_kinds: ClassVar[tuple[str, ...]]
    size_kind: ClassVar[str]  # what the listing's size counts: "files", "database"
    checks: Checks  # the kind's check module
    errors: ClassVar[tuple[type[Exception], ...]]  # the kind's own: a DriverError each

    def sources(self, config: SourceConfig) -> list[Source]:
        raise NotImplementedError

    async def expand(self, config: SourceConfig) -> list[Source]:
        return self.sources(config)  # one component, whatever it holds

    def size_label(self, component_kind: str) -> str | None:
        return self.size_kind

    def verify_context(self, component: Component) -> str | None:
        """What a failed check's line starts with (None: the exception's text alone)."""
        return None

    @contextmanager
    def driver_errors(self, context: str | None) -> Iterator[None]:
        """The kind's exceptions as DriverError, `context: ` before their text."""
        try:
            yield
        except self.errors as exc:
            raise DriverError(str(exc) if context is None else f"{context}: {exc}") from exc

    async def structure(self, back: ReadBack, component: Component) -> None:
        back.progress.phase = f"structure {self.table} {component.name}"
        with self.driver_errors(self.verify_context(component)):
            await self.checks.structure(back, component)

    async def restore_test(self, back: ReadBack, component: Component) -> None:
        back.progress.phase = f"restore-test {self.table} {component.name}"
        with self.driver_errors(self.verify_context(component)):
            await self.checks.restore_test(back, component)

    def selected(self, component: Component, request: RestoreOptions) -> bool:
        if request.all_databases:  # PostgreSQL's databases, each to its own name
            return False
        return not request.component or component.name == request.component

    def restore_rank(self, component: Component) -> int:
        return 1
