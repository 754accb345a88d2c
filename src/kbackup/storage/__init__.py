"""Storage backends: the same verbs (write a stream, read, list, stat, delete) everywhere."""

from __future__ import annotations

from kbackup.config import StorageConfig
from kbackup.storage.base import ObjectInfo, ObjectWriter, Storage, StorageError
from kbackup.storage.local import LocalStorage

__all__ = ["ObjectInfo", "ObjectWriter", "Storage", "StorageError", "open_storage"]


def open_storage(name: str, config: StorageConfig) -> Storage:
    if config.type == "local":
        return LocalStorage(name, config.path)
    raise StorageError(f"storage {name}: unsupported type {config.type!r}")
