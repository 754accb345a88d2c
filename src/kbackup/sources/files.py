"""A directory tree (an app's uploaded PDFs), as a POSIX tar stream.

Python's tarfile runs in a worker thread and hashes every file as it reads it, so the manifest's
file index (path, size, sha256) costs no second pass over the tree. Entry names are relative
to the configured path, so `tar -x` by hand recreates the tree under the current directory.
An unreadable file fails the run: a backup that silently misses files is worse than none.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import os
import queue
import stat
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from kbackup.config import FilesSource as FilesConfig
from kbackup.sources.base import Source, SourceError, SourceStream

_DONE = object()


class _Cancelled(Exception):
    pass


class _HashingReader:
    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


class _QueueWriter:
    """File-like sink for tarfile that hands 1 MiB chunks to the event loop side."""

    def __init__(self, out: queue.Queue[object], stop: threading.Event):
        self.out = out
        self.stop = stop
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.put(bytes(self.buffer))
            self.buffer.clear()

    def put(self, item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Cancelled()
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


def iter_tree(root: Path, exclude: list[str], one_file_system: bool) -> Iterator[Path]:
    """Every entry below root in a stable order, excluded names and paths left out."""
    root_dev = root.stat().st_dev

    def excluded(rel: str, name: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in exclude)

    def walk(directory: Path) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise SourceError(f"cannot read directory {directory}: {exc.strerror}") from None
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if excluded(rel, entry.name):
                continue
            yield path
            if entry.is_dir(follow_symlinks=False):
                if one_file_system and entry.stat(follow_symlinks=False).st_dev != root_dev:
                    continue
                yield from walk(path)

    yield from walk(root)


class FilesStream(SourceStream):
    def __init__(self, source: FileTree):
        self.source = source
        self.queue: queue.Queue[object] = queue.Queue(maxsize=4)
        self.stop = threading.Event()
        self.entries: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._produce, name=f"tar-{source.name}", daemon=True)
        self.thread.start()

    def _add(self, tar: tarfile.TarFile, path: Path, rel: str) -> None:
        info = tar.gettarinfo(str(path), arcname=rel)
        entry: dict[str, Any] = {
            "path": rel,
            "mode": stat.S_IMODE(info.mode),
            "mtime": int(info.mtime),
        }
        if info.isfile():
            with open(path, "rb") as handle:
                reader = _HashingReader(handle)
                tar.addfile(info, reader)  # type: ignore[arg-type]
            entry.update(type="file", size=info.size, sha256=reader.digest.hexdigest())
        elif info.isdir():
            tar.addfile(info)
            entry["type"] = "dir"
        elif info.issym():
            tar.addfile(info)
            entry.update(type="symlink", target=info.linkname)
        else:
            return  # sockets, fifos and devices are not backed up
        self.entries.append(entry)

    def _produce(self) -> None:
        writer = _QueueWriter(self.queue, self.stop)
        root = self.source.config.path
        try:
            with tarfile.open(
                fileobj=writer,
                mode="w|",
                format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                bufsize=1 << 20,
            ) as tar:
                for path in iter_tree(
                    root, self.source.config.exclude, self.source.config.one_file_system
                ):
                    if self.stop.is_set():
                        raise _Cancelled()
                    rel = path.relative_to(root).as_posix()
                    try:
                        self._add(tar, path, rel)
                    except FileNotFoundError:
                        continue  # removed while we walked: not an error
                    except PermissionError as exc:
                        raise SourceError(
                            f"files {self.source.name}: cannot read {path}: {exc.strerror}"
                        ) from None
            writer.flush()
        except _Cancelled:
            return
        except SourceError as exc:
            prefix = f"files {self.source.name}: "  # iter_tree's errors do not name the source
            self.error = exc if str(exc).startswith(prefix) else SourceError(prefix + str(exc))
        except OSError as exc:
            self.error = SourceError(f"files {self.source.name}: {exc}")
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop side
            self.error = exc
        with contextlib.suppress(_Cancelled):
            writer.put(_DONE)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await asyncio.to_thread(self._get)
            if item is _DONE:
                return
            assert isinstance(item, bytes)
            yield item

    def _get(self) -> object:
        while True:
            try:
                return self.queue.get(timeout=0.2)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    return _DONE

    async def finish(self) -> dict[str, Any]:
        await asyncio.to_thread(self.thread.join)
        if self.error is not None:
            if isinstance(self.error, SourceError):
                raise self.error
            raise SourceError(f"files {self.source.name}: {self.error}")
        files = [e for e in self.entries if e["type"] == "file"]
        return {
            "path": str(self.source.config.path),
            "file_count": len(files),
            "total_bytes": sum(e["size"] for e in files),
            "entries": len(self.entries),
        }

    def index(self) -> bytes:
        return json.dumps({"entries": self.entries}, separators=(",", ":")).encode()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


class FileTree(Source):
    kind = "files"
    extension = ".tar"

    def __init__(self, config: FilesConfig):
        super().__init__(config.name)
        self.config = config

    def _check_root(self) -> None:
        root = self.config.path
        if not root.exists():
            raise SourceError(f"files {self.name}: {root} does not exist")
        if not root.is_dir():
            raise SourceError(f"files {self.name}: {root} is not a directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise SourceError(f"files {self.name}: {root} is not readable by this user")

    async def estimate_size(self) -> int | None:
        def total() -> int:
            size = 0
            for path in iter_tree(
                self.config.path, self.config.exclude, self.config.one_file_system
            ):
                with contextlib.suppress(OSError):
                    st = path.lstat()
                    if stat.S_ISREG(st.st_mode):
                        size += st.st_size
            return size

        try:
            self._check_root()
            return await asyncio.to_thread(total)
        except SourceError:
            return None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SourceStream]:
        self._check_root()
        stream = FilesStream(self)
        try:
            yield stream
        finally:
            await asyncio.to_thread(stream.close)
