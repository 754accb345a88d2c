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


class LockMissing(StorageError):
    """A target configured with object_lock whose bucket has no Object Lock: the daemon does
    not start (or reload) with it, and `storage check` fails (one line)."""


class BackupLocked(StorageError):
    """A deletion refused before anything was touched: an object is still under Object Lock."""


@dataclass(frozen=True)
class ObjectLock:
    """The Object Lock retention of one stored object version."""

    mode: str  # "governance" or "compliance"
    retain_until: datetime


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
    # Backends with Object Lock (S3 with object_lock) set these; the others never lock.
    lock_mode: str | None = None
    lock_seconds: float = 0.0
    # An append-only target (config `no_delete`): kbackupd never deletes there (prune,
    # delete, leftover cleanup); open_storage sets it.
    append_only: bool = False

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    async def open_writer(self, key: str, retain_until: datetime | None = None
                          ) -> ObjectWriter:
        """A writer for key; retain_until (only on a target with lock_mode) locks the object
        until then."""

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

    def retain_until(self, started: datetime) -> datetime | None:
        """Until when the objects of a backup started at `started` are locked here (whole
        seconds, rounded up, as stored in the manifest); None on a target without a lock."""
        if self.lock_mode is None:
            return None
        until = started + timedelta(seconds=self.lock_seconds)
        return until.replace(microsecond=0) + timedelta(seconds=1 if until.microsecond else 0)

    async def check_lock(self) -> None:
        """Raise LockMissing when lock_mode is set but the bucket cannot lock objects."""
        return None

    async def object_lock(self, key: str) -> ObjectLock | None:
        """The lock of the object's current version; None when it has none (or the backend
        cannot lock)."""
        return None

    async def locked_until(self, prefix: str) -> datetime | None:
        """The latest retain-until of any object version under prefix (hidden ones too);
        None when none is locked. Asked before a deletion, which must not start when an
        object cannot be removed."""
        return None

    async def remove_hidden(self, prefix: str) -> None:
        """Remove what list() does not show under prefix (S3 object versions and delete
        markers on a lock target), after the visible objects were deleted."""
        return None

    def refuse_lock(self, retain_until: datetime | None) -> None:
        if retain_until is not None:
            raise StorageError(f"storage {self.name}: object lock needs an S3 target with"
                               " object_lock")

    async def put_bytes(self, key: str, data: bytes,
                        retain_until: datetime | None = None) -> None:
        writer = await self.open_writer(key, retain_until)
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
