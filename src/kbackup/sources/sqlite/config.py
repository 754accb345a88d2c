"""`[[sqlite]]` in a job file (loaded by the config package: pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator

from kbackup.fields import SourceConfig


def _database_path(value: Path) -> Path:
    """Absolute, and not a directory: a missing file is the run's error (the app may not have
    created it yet when the config is written), a directory never becomes a database."""
    if not value.is_absolute():
        raise ValueError(f"expected an absolute path to a SQLite database file, got"
                         f" {str(value)!r}")
    if value.is_dir():
        raise ValueError(f"{value} is a directory; expected a SQLite database file")
    return value


DatabasePath = Annotated[Path, AfterValidator(_database_path)]


class SqliteSource(SourceConfig):
    kind: ClassVar[str] = "sqlite"
    path: DatabasePath

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path)}


CONFIG = SqliteSource
