"""`[[files]]` in a job file (loaded by the config package: pydantic only)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from kbackup.fields import SourceConfig

# In a directory, `redact` applies to the files whose name matches one of these.
DEFAULT_REDACT_GLOB = [".env", "*.env", ".env.*"]


def _absolute_path(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"expected an absolute path to a directory or a file, got"
                         f" {str(value)!r}")
    return value


class FilesSource(SourceConfig):
    kind: ClassVar[str] = "files"
    path: Annotated[Path, AfterValidator(_absolute_path)]  # a directory or a single file
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = False
    redact: Literal["env"] | None = None
    redact_glob: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT_GLOB))

    @model_validator(mode="after")
    def _glob_needs_redact(self) -> FilesSource:
        if "redact_glob" in self.model_fields_set and self.redact is None:
            raise ValueError('redact_glob is set but redact is not; add redact = "env"')
        return self

    def redacts(self, name: str, single_file: bool) -> bool:
        """Whether the file called `name` is stored redacted: a single file always when redact
        is set, a file of a directory when its name matches redact_glob."""
        if self.redact is None:
            return False
        return single_file or any(fnmatch.fnmatch(name, p) for p in self.redact_glob)

    def describe(self) -> dict[str, Any]:
        extra = {"redact": self.redact} if self.redact else {}
        return {**super().describe(), "path": str(self.path), **extra}


CONFIG = FilesSource
