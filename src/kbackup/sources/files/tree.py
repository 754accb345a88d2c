"""A directory tree (an app's uploaded PDFs) or a single file (an app's .env), as a POSIX tar
stream. A single file is the archive's only member, named by its base name.

Python's tarfile runs in a worker thread and hashes every file as it reads it, so the manifest's
file index (path, size, sha256) costs no second pass over the tree. Entry names are relative
to the configured path, so `tar -x` by hand recreates the tree under the current directory.
An unreadable file fails the run: a backup that silently misses files is worse than none.
With `redact = "env"`, the files it applies to are read whole and replaced by their template
(redact.py) here, in the reading thread: their values never enter the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from kbackup.handoff import CHUNK, ChunkQueue, Stopped, Transform
from kbackup.sources.base import Source, SourceError, SourceStream
from kbackup.sources.files.config import FilesSource as FilesConfig
from kbackup.sources.files.meta import Entry, FilesMeta, encode_index
from kbackup.sources.files.redact import redact_env

REDACT_MAX = 16 * 1024 * 1024  # env files are read whole to be redacted


class _HashingReader:
    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


class _QueueWriter:
    """File-like sink for tarfile that hands 1 MiB chunks on (to be transformed and queued)."""

    def __init__(self, out: ChunkQueue):
        self.out = out
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        if not self.buffer and len(data) >= CHUNK:
            self.out.put(data)  # a whole chunk already: hand it over, no copy
            return len(data)
        self.buffer += data
        if len(self.buffer) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.out.put(bytes(self.buffer))
            self.buffer.clear()


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


def path_problem(path: Path) -> str | None:
    """Why `path` cannot be backed up ("does not exist", ...), or None: it is a readable
    directory or regular file (symlinks followed)."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return None if os.access(path, os.R_OK | os.X_OK) else (
            f"is not readable by uid {os.geteuid()}")
    if not path.is_file():
        return "is neither a directory nor a regular file"
    return None if os.access(path, os.R_OK) else f"is not readable by uid {os.geteuid()}"


class FilesStream(SourceStream):
    def __init__(self, source: FileTree):
        self.source = source
        self.entries: list[Entry] = []
        self.out = ChunkQueue(self._produce, name=f"tar-{source.name}")

    def _add(self, tar: tarfile.TarFile, path: Path, rel: str) -> None:
        info = tar.gettarinfo(str(path), arcname=rel)
        entry: Entry = {
            "path": rel,
            "mode": stat.S_IMODE(info.mode),
            "mtime": int(info.mtime),
        }
        if info.isfile() and self.source.config.redacts(path.name, self.source.single_file):
            self._add_redacted(tar, info, path, entry)
        elif info.isfile():
            with open(path, "rb") as handle:
                reader = _HashingReader(handle)
                tar.addfile(info, reader)
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

    def _add_redacted(self, tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path,
                      entry: Entry) -> None:
        """The file's template in place of the file: its size and hash are the template's."""
        if info.size > REDACT_MAX:
            raise SourceError(f"files {self.source.name}: {path} is {info.size} bytes; redact ="
                              f' "env" reads env files whole, up to {REDACT_MAX} bytes')
        with open(path, "rb") as handle:
            template = redact_env(handle.read(REDACT_MAX + 1))
        info.size = len(template)
        tar.addfile(info, io.BytesIO(template))
        entry.update(type="file", size=len(template),
                     sha256=hashlib.sha256(template).hexdigest(), redacted=True)

    def _members(self) -> Iterator[tuple[Path, str]]:
        """(path, name in the archive) of everything to archive, in a stable order."""
        config = self.source.config
        if self.source.single_file:
            yield config.path.resolve(), config.path.name  # a link: the file it names
            return
        for path in iter_tree(config.path, config.exclude, config.one_file_system):
            yield path, path.relative_to(config.path).as_posix()

    def _produce(self, out: ChunkQueue) -> None:
        writer = _QueueWriter(out)
        try:
            # tarfile's stream buffer is bytes, grown with += and cut with slices: fed its
            # default 16 KiB reads, a 1 MiB buffer copied each byte many times over. Reads as
            # large as the buffer cost about two copies a byte (190 MB of PDFs: 1.7 -> 1.3
            # CPU-seconds for the whole component).
            with tarfile.open(
                fileobj=writer,
                mode="w|",
                format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                bufsize=CHUNK,
                copybufsize=CHUNK,
            ) as tar:
                for path, rel in self._members():
                    if out.stopped:
                        raise Stopped()
                    try:
                        self._add(tar, path, rel)
                    except FileNotFoundError:
                        continue  # removed while we walked: not an error
                    except PermissionError as exc:
                        raise SourceError(
                            f"files {self.source.name}: cannot read {path}: {exc.strerror}"
                        ) from None
            writer.flush()
        except SourceError as exc:
            prefix = f"files {self.source.name}: "  # iter_tree's errors do not name the source
            raise exc if str(exc).startswith(prefix) else SourceError(prefix + str(exc)) from None
        except OSError as exc:
            raise SourceError(f"files {self.source.name}: {exc}") from None

    def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        return self.out.chunks(transform)

    async def finish(self) -> FilesMeta:
        await asyncio.to_thread(self.out.join)
        error = self.out.error
        if error is not None:
            if isinstance(error, SourceError):
                raise error
            raise SourceError(f"files {self.source.name}: {error}")
        files = [e for e in self.entries if e["type"] == "file"]
        config = self.source.config
        redacted = sum(1 for e in files if e.get("redacted"))
        if self.source.single_file and not files:
            raise SourceError(f"files {self.source.name}: {config.path} disappeared during the"
                              " backup")
        return FilesMeta(path=str(config.path), file_count=len(files),
                         total_bytes=sum(e["size"] for e in files), entries=len(self.entries),
                         single_file=True if self.source.single_file else None,
                         redact=config.redact,
                         redacted_files=redacted if config.redact else None)

    def index(self) -> bytes:
        return encode_index(self.entries)

    def close(self) -> None:
        self.out.stop()


class FileTree(Source):
    kind = "files"
    extension = ".tar"
    metadata_field = "files"

    def __init__(self, config: FilesConfig):
        super().__init__(config.name)
        self.config = config
        self.single_file = False  # set by _check_root: what the path is when the run starts

    def _check_root(self) -> None:
        problem = path_problem(self.config.path)
        if problem:
            raise SourceError(f"files {self.name}: {self.config.path} {problem}")
        self.single_file = not self.config.path.is_dir()

    async def estimate_size(self) -> int | None:
        def total() -> int:
            if self.single_file:
                return self.config.path.stat().st_size
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
