"""`[[mysql]]` in a job file (loaded by the config package: pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from kbackup.fields import SourceConfig, Strict, check_database_list, check_shell_patterns

# Never backed up by "*": the server's own catalogs, not an application's data.
SYSTEM_DATABASES = ("information_schema", "performance_schema", "mysql", "sys")
SEPARATOR = ":"  # component `<entry>:<database>`, as for postgres (never in an entry's name)


class MysqlServer(Strict):
    """Where and as whom to log in: a server (host and port, or socket), a user and the file
    of its password. The source's own server, and the one of its restore-tests."""

    host: str | None = None
    port: int = Field(default=3306, ge=1, le=65535)
    socket: Path | None = None
    user: str
    password_file: Path | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not value or len(value) > 128 or "\0" in value or "\n" in value:
            raise ValueError(f"expected a user name (1 to 128 characters), got {value!r}")
        return value

    @field_validator("socket", "password_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"expected an absolute path, got {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _where(self) -> Self:
        if (self.host is None) == (self.socket is None):
            raise ValueError("set exactly one of host (with port) or socket")
        if self.host is not None and (not self.host.strip() or any(
                c in self.host for c in " \n\0/")):
            raise ValueError(f"host: expected a host name or address, got {self.host!r}")
        return self

    def where(self) -> str:
        """The server, as messages name it (never the password)."""
        return f"{self.host}:{self.port}" if self.host is not None else str(self.socket)


class MysqlSource(SourceConfig, MysqlServer):
    kind: ClassVar[str] = "mysql"
    # Every database the server has now ("*", minus the system ones) or a list of names.
    databases: Literal["*"] | list[str]
    exclude: list[str] = Field(default_factory=list)  # shell patterns (fnmatch) of names
    # The client tools; empty: mariadb-dump then mysqldump (mariadb then mysql) from PATH.
    dump_tool: str = ""
    client_tool: str = ""
    # The server of restore-tests' scratch databases; None: the source's own server.
    restore_test: MysqlServer | None = None

    @field_validator("databases", mode="before")
    @classmethod
    def _databases(cls, value: Any) -> Any:
        return check_database_list(
            value, lambda name: (bool(name) and len(name) <= 64 and "\0" not in name
                                 and "/" not in name and name == name.rstrip()),
            "1 to 64 characters, no / and no trailing space")

    @field_validator("exclude", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        return check_shell_patterns(value)

    def verify_server(self) -> MysqlServer:
        """Where restore-tests create their scratch database."""
        return self.restore_test or self

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        found.update(server=self.where(), user=self.user, databases=self.databases,
                     exclude=self.exclude)
        if self.restore_test is not None:
            found.update(restore_test_server=self.restore_test.where())
        return found

    def secret_files(self) -> list[tuple[str, Path | None]]:
        found = [(f"mysql.{self.name}.password_file", self.password_file)]
        if self.restore_test is not None:
            found.append((f"mysql.{self.name}.restore_test.password_file",
                          self.restore_test.password_file))
        return found


CONFIG = MysqlSource


def source_of(component: str) -> str:
    """The [[mysql]] entry of a component name (`main:shop` -> `main`)."""
    return component.split(SEPARATOR, 1)[0]


def database_of(component: str) -> str:
    return component.split(SEPARATOR, 1)[1] if SEPARATOR in component else component


def configured(job: object | None, name: str) -> MysqlSource | None:
    """The job's [[mysql]] entry of that component (a backup's component may outlive it)."""
    source = getattr(job, "source", lambda _: None)(source_of(name)) if job is not None else None
    return source if isinstance(source, MysqlSource) else None
