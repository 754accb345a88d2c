"""What the manifest records about a MariaDB/MySQL component (`database` of a component of
kind "mysql"). The JSON field names are the on-disk format: every field may be missing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from kbackup.repository import Component


class MysqlMeta(BaseModel):
    """The database, the server and tool, and the rows of every base table as counted in the
    dump stream itself (counter.py): "table" -> rows."""

    model_config = ConfigDict(extra="allow")

    database: str | None = None
    server_version: str | None = None
    dump_tool: str | None = None  # path of the tool that wrote it
    dump_tool_version: str | None = None  # its --version line
    database_size: int | None = None  # data + index bytes, information_schema's estimate
    character_set: str | None = None  # the database's defaults, for a restore into a new one
    collation: str | None = None
    row_counts: dict[str, int] | None = None
    row_counts_from: str | None = None  # "dump stream"
    format: str | None = None

    @classmethod
    def of(cls, component: Component) -> MysqlMeta:
        return cls.model_validate(component.database or {})
