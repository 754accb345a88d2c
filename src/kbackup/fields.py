"""The building blocks every part of the configuration uses: the error type, strict models,
and the field types that check names, durations, sizes, paths, URLs, cron and DSNs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from kbackup.errors import ConfigError as ConfigError
from kbackup.units import parse_duration, parse_size

DEFAULT_CONFIG_DIR = Path("/etc/kbackup")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_SECRET_IN_DSN = re.compile(r"(^|\s)password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)
MiB = 1024 * 1024
Seconds = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Bytes = Annotated[int, BeforeValidator(parse_size)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def config_dir_from_env(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("KBACKUP_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r}; expected an IANA name like 'Europe/London'"
        ) from None
    return value


Timezone = Annotated[str, BeforeValidator(_check_timezone)]


def check_cron(value: str) -> str:
    if not croniter.is_valid(value) or len(value.split()) != 5:
        raise ValueError(f"{value!r} is not a cron expression; expected 5 fields like '0 2 * * *'")
    return value


def check_dsn(value: str | None) -> str | None:
    if value is not None and _SECRET_IN_DSN.search(value):
        raise ValueError("the DSN contains a password; put it in a file and set password_file")
    return value


def _absolute_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_absolute():
        raise ValueError(f"expected an absolute file path, got {str(value)!r}")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if parts.password is not None:
        raise ValueError("the URL contains a password; put secrets in files (*_file fields)")
    return value


def _absolute_dir(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"expected an absolute directory path, got {str(value)!r}")
    return value


AbsoluteFile = Annotated[Path, AfterValidator(_absolute_file)]
AbsoluteDir = Annotated[Path, AfterValidator(_absolute_dir)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def read_secret_file(path: Path) -> str:
    """The first line of a secret file, without its newline. Never logged."""
    try:
        return path.read_text().splitlines()[0] if path.stat().st_size else ""
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None


class SourceConfig(Strict):
    """One `[[table]]` entry of a job: what a source kind needs to back up and restore.

    Each kind's model lives in its own package (kbackup.sources.<kind>.config) and is listed
    in kbackup.sources.registry; JobConfig gets one list field per registered table."""

    kind: ClassVar[str]  # the [[table]] name, and the Component.kind of its main component
    name: Name

    def secret_files(self) -> list[tuple[str, Path | None]]:
        """(field, path) of the secret files it names, checked to exist at load time."""
        return []

    def describe(self) -> dict[str, Any]:
        """What GET /v1/jobs shows of it."""
        return {"name": self.name, "kind": self.kind}


def check_database_list(value: Any, name_ok: Callable[[str], bool], expected: str) -> Any:
    """`databases = "*"` or a non-empty list of distinct names `name_ok` accepts (each server
    has its own rule, described by `expected`): the one check of every database source."""
    if value is None or value == "*":
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(f'expected "*" or a non-empty list of database names, got {value!r}')
    for name in value:
        if not isinstance(name, str) or not name_ok(name):
            raise ValueError(f"expected database names ({expected}), got {name!r}")
    if len(set(value)) != len(value):
        raise ValueError("a database is listed twice")
    return value


def check_shell_patterns(value: Any) -> Any:
    """`exclude = [...]`: non-empty fnmatch patterns, brackets closed."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of shell patterns like \"test_*\", got {value!r}")
    for pattern in value:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"expected non-empty shell patterns, got {pattern!r}")
        if pattern.count("[") != pattern.count("]"):
            raise ValueError(f"pattern {pattern!r} has an unclosed [ ]")
    return value
