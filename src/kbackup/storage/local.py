"""A directory on a local (or mounted) filesystem.

Commit is write-to-temp, fsync, rename, fsync the directory: after a crash an object is
either whole under its name or absent. Every OSError is raised as a StorageError naming the
target, the verb and the key (as the remote backends do with HTTP errors), so callers catch
StorageError alone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from kbackup.storage.base import PARTIAL_SUFFIX, ObjectInfo, ObjectWriter, Storage, StorageError


def failed(storage: str, verb: str, key: str, exc: OSError) -> StorageError:
    """An OSError as a StorageError: `storage NAME: cannot VERB KEY: reason`."""
    return StorageError(f"storage {storage}: cannot {verb} {key}: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter(ObjectWriter):
    def __init__(self, storage: LocalStorage, key: str, final: Path):
        self.storage = storage
        self.key = key
        self.final = final
        self.temp = final.with_name(final.name + PARTIAL_SUFFIX)
        self.file = open(self.temp, "wb")  # noqa: SIM115 - closed in commit/abort
        self.done = False

    async def write(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self.file.write, data)
        except OSError as exc:
            raise failed(self.storage.name, "write", self.key, exc) from exc

    def _commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.final)
        _fsync_dir(self.final.parent)

    async def commit(self) -> None:
        try:
            await asyncio.to_thread(self._commit)
        except OSError as exc:
            raise StorageError(
                f"storage {self.storage.name}: cannot commit {self.key}: {exc}"
            ) from exc
        self.done = True

    async def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
            self.temp.unlink(missing_ok=True)
        except OSError as exc:
            raise failed(self.storage.name, "abort", self.key, exc) from exc


class LocalStorage(Storage):
    def __init__(self, name: str, root: Path):
        super().__init__(name)
        self.root = root

    def describe(self) -> str:
        return f"{self.name} (local {self.root})"

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StorageError(f"storage {self.name}: invalid object key {key!r}")
        return self.root.joinpath(*parts)

    async def open_writer(self, key: str, retain_until: datetime | None = None
                          ) -> ObjectWriter:
        self.refuse_lock(retain_until)
        path = self._path(key)

        def _open() -> LocalWriter:
            path.parent.mkdir(parents=True, exist_ok=True)
            return LocalWriter(self, key, path)

        try:
            return await asyncio.to_thread(_open)
        except OSError as exc:
            raise failed(self.name, "write", key, exc) from exc

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except OSError as exc:
            raise failed(self.name, "read", key, exc) from exc
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, chunk_size)
                except OSError as exc:
                    raise failed(self.name, "read", key, exc) from exc
                if not chunk:
                    break
                yield chunk
        finally:
            handle.close()

    def _list(self, prefix: str) -> list[ObjectInfo]:
        items: list[ObjectInfo] = []
        if not self.root.is_dir():
            return items
        # Walk only the directory part of the prefix, then filter by the full prefix.
        base = self.root.joinpath(*[p for p in prefix.split("/")[:-1] if p])
        if not base.is_dir():
            return items
        for dirpath, _dirs, files in os.walk(base):
            for filename in files:
                full = Path(dirpath, filename)
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                items.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        items.sort(key=lambda i: i.key)
        return items

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        try:
            return await asyncio.to_thread(self._list, prefix)
        except OSError as exc:
            raise failed(self.name, "list", prefix or "/", exc) from exc

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise failed(self.name, "stat", key, exc) from exc
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Remove directories left empty, up to the root.
        parent = path.parent
        while parent != self.root and parent.is_dir():
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._delete, key)
        except OSError as exc:
            raise failed(self.name, "delete", key, exc) from exc
