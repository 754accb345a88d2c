"""What the manifest records about a PostgreSQL component. The JSON field names are the
on-disk format: old manifests must load, so every field may be missing (None)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from kbackup.repository import Component


class DatabaseMeta(BaseModel):
    """`database` of a postgres component: the server, the size and, in the dump's snapshot,
    the rows of every table ("schema.table" -> rows; None when row_counts = "none")."""

    model_config = ConfigDict(extra="allow")

    database: str | None = None
    server_version: str | None = None
    server_version_num: int | None = None
    database_size: int | None = None
    row_counts: dict[str, int] | None = None
    # pg_table_size of each table at the dump ("schema.table" -> bytes): how the data is
    # shared out, for the restore's choice of loading; None in manifests before it.
    table_sizes: dict[str, int] | None = None
    format: str | None = None
    # The pg_dump that wrote the archive ("15.19"): a restore needs a pg_restore as new.
    pg_dump_version: str | None = None

    @classmethod
    def of(cls, component: Component) -> DatabaseMeta:
        return cls.model_validate(component.database or {})


class GlobalsMeta(BaseModel):
    """What pg_dumpall --globals-only produced (not kept in the manifest)."""

    format: str
    role_passwords: bool
