"""What the manifest records about a file tree component, and its file index. The JSON field
names are the on-disk format: old manifests must load."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from kbackup.repository import Component

# One index entry: path, type (file, dir, symlink), mode, mtime; size and sha256 for files,
# target for symlinks. Plain dicts: an index holds every file of the tree.
Entry = dict[str, Any]


class FilesMeta(BaseModel):
    """`files` of a files component: the tree's root and what the archive holds."""

    model_config = ConfigDict(extra="allow")

    path: str | None = None
    file_count: int | None = None
    total_bytes: int | None = None
    entries: int | None = None

    @classmethod
    def of(cls, component: Component) -> FilesMeta:
        return cls.model_validate(component.files or {})


def encode_index(entries: list[Entry]) -> bytes:
    return json.dumps({"entries": entries}, separators=(",", ":")).encode()


def decode_index(data: bytes) -> dict[str, Entry]:
    """path -> entry."""
    return {e["path"]: e for e in json.loads(data)["entries"]}


def summary(component: dict[str, Any]) -> dict[str, Any]:
    """The listing's `files` view of a component (manifest JSON, as the catalog has it)."""
    files = component.get("files")
    if not files:
        return {}
    return {"files": {"file_count": files.get("file_count"),
                      "total_bytes": files.get("total_bytes")}}
