"""`[[postgres]]` in a job file (loaded by the config package: pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from kbackup.fields import (
    AbsoluteDir,
    SourceConfig,
    check_database_list,
    check_dsn,
    check_shell_patterns,
)


class PostgresSource(SourceConfig):
    kind: ClassVar[str] = "postgres"
    dsn: str
    password_file: Path | None = None
    # Restores (and scratch databases) may need more rights than backups: a separate login.
    restore_dsn: str | None = None
    restore_password_file: Path | None = None
    # The client tools are chosen per server (sources/postgres/toolchain.py): the same major
    # from /usr/lib/postgresql/*/bin, or the newest; pg_bin_dir names the one directory to
    # use instead; a pg_dump/pg_restore/pg_dumpall other than the bare name is used as given.
    pg_bin_dir: AbsoluteDir | None = None
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
    # Several databases of the server, found at each run (discover.py): "*" (every
    # connectable, non-template one) or a list of names; None: the DSN's database alone.
    databases: Literal["*"] | list[str] | None = None
    exclude: list[str] = Field(default_factory=list)  # shell patterns (fnmatch) of names

    @field_validator("databases", mode="before")
    @classmethod
    def _databases(cls, value: Any) -> Any:
        return check_database_list(
            value, lambda name: bool(name) and len(name.encode()) <= 63 and "\0" not in name,
            "1 to 63 bytes")

    @field_validator("exclude", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        return check_shell_patterns(value)

    @model_validator(mode="after")
    def _exclude_needs_databases(self) -> PostgresSource:
        if self.exclude and self.databases is None:
            raise ValueError('exclude needs databases ("*" or a list): without it the job'
                             " backs up the DSN's database only")
        return self

    @property
    def multi(self) -> bool:
        """Several databases, each its own component `<name>:<database>`."""
        return self.databases is not None

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        if self.databases is not None:
            found.update(databases=self.databases, exclude=self.exclude)
        return found

    @field_validator("dsn", "restore_dsn")
    @classmethod
    def _no_inline_secret(cls, value: str | None) -> str | None:
        return check_dsn(value)

    def secret_files(self) -> list[tuple[str, Path | None]]:
        return [(f"postgres.{self.name}.{field}", getattr(self, field))
                for field in ("password_file", "restore_password_file")]


CONFIG = PostgresSource


def source_of(component: str) -> str:
    """The [[postgres]] entry a component name belongs to: `main:crm` (one of several
    databases) -> `main`; a single database's component is named like its entry."""
    return component.split(SEPARATOR, 1)[0]


SEPARATOR = ":"  # never in an entry's name (fields.NAME_PATTERN): names cannot collide


def configured(job: object | None, name: str) -> PostgresSource | None:
    """The job's [[postgres]] entry of that component (a backup's component may outlive it)."""
    name = source_of(name)
    source = getattr(job, "source", lambda _: None)(name) if job is not None else None
    return source if isinstance(source, PostgresSource) else None
