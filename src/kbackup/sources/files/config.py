"""`[[files]]` in a job file (loaded by the config package: pydantic only)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from kbackup.fields import AbsoluteDir, SourceConfig


class FilesSource(SourceConfig):
    kind: ClassVar[str] = "files"
    path: AbsoluteDir
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path)}


CONFIG = FilesSource
