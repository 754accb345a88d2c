"""What the manifest records about a file tree component, and its file index. The JSON field
names are the on-disk format: old manifests must load."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from kbackup.repository import Component

# One index entry: path, type (file, dir, symlink), mode, mtime; size and sha256 for files,
# target for symlinks; `redacted: true` on a file stored as its redacted template (size and
# sha256 are then the template's). Plain dicts: an index holds every file of the tree.
Entry = dict[str, Any]
REDACTED_NOTE = "template with values redacted (KEY=***)"
_ONLY_WHEN_SET = ("single_file", "redact", "redacted_files")


class FilesMeta(BaseModel):
    """`files` of a files component: the tree's root and what the archive holds."""

    model_config = ConfigDict(extra="allow")

    path: str | None = None
    file_count: int | None = None
    total_bytes: int | None = None
    entries: int | None = None
    # Written only when set, so a plain directory's metadata is as it always was.
    single_file: bool | None = None  # path is one file, the archive's only member
    redact: str | None = None  # "env": files matching redact_glob stored as KEY=*** templates
    redacted_files: int | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in _ONLY_WHEN_SET:
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @classmethod
    def of(cls, component: Component) -> FilesMeta:
        return cls.model_validate(component.files or {})

    @property
    def is_template(self) -> bool:
        """Some files were stored redacted: restoring gives a template, not the secrets."""
        return self.redact is not None and bool(self.redacted_files)


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
    view = {"file_count": files.get("file_count"), "total_bytes": files.get("total_bytes")}
    if files.get("redact"):
        view["redact"] = files["redact"]
    return {"files": view}
