"""What the manifest records about a SQLite component (`sqlite` of the component). The JSON
field names are the on-disk format: old manifests must load, so every field may be missing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from kbackup.repository import Component
from kbackup.sources.tools import counted_summary

FIELD = "sqlite"  # the manifest component's field holding SqliteMeta


class SqliteMeta(BaseModel):
    """The copied snapshot: the library that made it, its page layout, the rows of every
    table ("table" -> rows) and PRAGMA integrity_check's answer ("ok" or its first line)."""

    model_config = ConfigDict(extra="allow")

    path: str | None = None
    sqlite_version: str | None = None
    page_size: int | None = None
    page_count: int | None = None
    journal_mode: str | None = None
    row_counts: dict[str, int] | None = None
    integrity_check: str | None = None

    @classmethod
    def of(cls, component: Component) -> SqliteMeta:
        return cls.model_validate((component.model_extra or {}).get(FIELD) or {})


def summary(component: dict[str, Any]) -> dict[str, Any]:
    """The listing's `sqlite` view of a component (manifest JSON, as the catalog has it)."""
    return counted_summary(component, FIELD, ("sqlite_version", "page_size"),
                           {"integrity": "integrity_check"})
