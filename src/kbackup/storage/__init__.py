"""Storage backends: the same verbs (write a stream, read, list, stat, delete) everywhere."""

from __future__ import annotations

from kbackup.config import StorageConfig
from kbackup.storage.base import ObjectInfo, ObjectWriter, Storage, StorageError
from kbackup.storage.local import LocalStorage

__all__ = ["ObjectInfo", "ObjectWriter", "Storage", "StorageError", "open_storage"]


def open_storage(name: str, config: StorageConfig) -> Storage:
    """Build a backend; network ones read their secret files here (so again on reload)."""
    storage = _open(name, config)
    storage.append_only = config.no_delete
    return storage


def _open(name: str, config: StorageConfig) -> Storage:
    if config.type == "local":
        return LocalStorage(name, config.path)
    # Imported on demand: aiobotocore is heavy and most commands never touch S3.
    if config.type == "s3":
        from kbackup.storage.s3 import S3Storage

        return S3Storage(name, config)
    if config.type == "webdav":
        from kbackup.storage.webdav import WebDAVStorage

        return WebDAVStorage(name, config)
    raise StorageError(f"storage {name}: unsupported type {config.type!r}")
