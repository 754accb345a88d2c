"""`[[postgres]]` in a job file (loaded by the config package: pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from kbackup.fields import SourceConfig, check_dsn


class PostgresSource(SourceConfig):
    kind: ClassVar[str] = "postgres"
    dsn: str
    password_file: Path | None = None
    # Restores (and scratch databases) may need more rights than backups: a separate login.
    restore_dsn: str | None = None
    restore_password_file: Path | None = None
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    # Roles and tablespaces the dump's owners and grants need, as their own component.
    globals: bool = True
    include_role_passwords: bool = False
    pg_dumpall: str = "pg_dumpall"
    row_counts: Literal["exact", "none"] = "exact"
    exclude_table_data: list[str] = Field(default_factory=list)
    # pg_restore -j for whole-database restores and restore-tests; None: the cores (<= 16).
    restore_jobs: int | None = Field(default=None, ge=1, le=64)

    @field_validator("dsn", "restore_dsn")
    @classmethod
    def _no_inline_secret(cls, value: str | None) -> str | None:
        return check_dsn(value)

    def secret_files(self) -> list[tuple[str, Path | None]]:
        return [(f"postgres.{self.name}.{field}", getattr(self, field))
                for field in ("password_file", "restore_password_file")]


CONFIG = PostgresSource


def configured(job: object | None, name: str) -> PostgresSource | None:
    """The job's [[postgres]] entry of that name (a backup's component may outlive it)."""
    source = getattr(job, "source", lambda _: None)(name) if job is not None else None
    return source if isinstance(source, PostgresSource) else None
