"""The one interface every storage backend implements.

Backends know nothing about backups: they store named objects. Each object is written under
a temporary name and only appears under its real name after `commit()`, so a reader never
sees half an object. The repository module builds the backup layout on top of these verbs.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from kbackup.errors import StorageError as StorageError

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class ObjectWriter(ABC):
    """A stream being written; invisible under its key until commit()."""

    key: str

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def commit(self) -> None:
        """Make the object durable and visible under its key."""

    @abstractmethod
    async def abort(self) -> None:
        """Remove whatever was written; safe to call more than once and after commit()."""


class Storage(ABC):
    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    async def open_writer(self, key: str) -> ObjectWriter: ...

    @abstractmethod
    def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object (committed or partial) whose key starts with prefix."""

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object; missing objects are not an error."""

    async def abort_stale_uploads(self, older_than: timedelta) -> builtins.list[str]:
        """Drop invisible upload leftovers (S3 multipart uploads); the keys they were for.

        Most backends keep leftovers as visible partial objects, which list() shows and
        repository.clean_incomplete removes, so they have nothing to do here.
        """
        return []

    async def put_bytes(self, key: str, data: bytes) -> None:
        writer = await self.open_writer(key)
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    def describe(self) -> str:
        return self.name
