"""Safe extraction of a file-tree archive: nothing may land outside the target directory.

Every member is checked before anything is written: no absolute names, no `..`, no links whose
target resolves outside the target, no hard links to outside names, no device files or fifos.
One bad member rejects the whole archive (it was not written by kbackup). Owners and modes are
restored when running as root, modes only otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import queue
import tarfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kbackup.errors import RestoreError


class UnsafeArchive(RestoreError):
    """The archive tries to write outside its target; the message names the member."""


def check_member(member: tarfile.TarInfo) -> str:
    """The member's normalised relative name, or UnsafeArchive."""
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{name}/":
        raise UnsafeArchive(f"archive member {name!r} escapes the target directory (..)")
    if member.isdev() or member.isfifo():
        raise UnsafeArchive(f"archive member {name!r} is a device or fifo")
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            raise UnsafeArchive(f"symlink {name!r} points to an absolute path {target!r}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(normal), target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(f"symlink {name!r} points outside the target ({target!r})")
    if member.islnk():
        target = posixpath.normpath(member.linkname)
        if target.startswith(("/", "../")) or target == "..":
            raise UnsafeArchive(f"hard link {name!r} points outside the target ({target!r})")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"archive member {name!r} has an unsupported type")
    return normal


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve(strict=False).relative_to(root.resolve())
        return True
    except ValueError:
        return False


class _QueueReader:
    """File-like source for tarfile's stream mode, fed chunk by chunk from the event loop."""

    def __init__(self, feed: queue.Queue[bytes | None]):
        self.feed = feed
        self.buffer = b""
        self.eof = False

    def read(self, size: int = -1) -> bytes:
        while not self.eof and (size < 0 or len(self.buffer) < size):
            chunk = self.feed.get()
            if chunk is None:
                self.eof = True
            else:
                self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def extract_stream(
    reader: Any, target: Path, restore_owner: bool,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Extract a tar stream into target, checking every member; returns what was written.

    target must exist. Each regular file is hashed while written, so callers can compare the
    result with the backup's index without reading the files again.
    """
    root = target.resolve()
    written: list[dict[str, Any]] = []
    directories: list[tuple[Path, tarfile.TarInfo]] = []  # mode and mtime once filled
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            name = check_member(member)
            if name == ".":
                continue
            dest = root / name
            if not _inside(root, dest.parent):
                raise UnsafeArchive(f"archive member {member.name!r} goes through a link outside"
                                    " the target")
            entry: dict[str, Any] = {"path": name, "mode": member.mode & 0o7777}
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                entry["type"] = "dir"
            elif member.issym():
                if not _inside(root, dest.parent / member.linkname):  # via links on disk
                    raise UnsafeArchive(f"symlink {member.name!r} points outside the target"
                                        f" ({member.linkname!r}) through an extracted link")
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink(member.linkname, dest)
                entry.update(type="symlink", target=member.linkname)
            elif member.islnk():
                source = root / posixpath.normpath(member.linkname)
                if not _inside(root, source):
                    raise UnsafeArchive(f"hard link {member.name!r} points outside the target")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, dest)
                entry["type"] = "hardlink"
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_symlink():
                    dest.unlink()
                source_file = tar.extractfile(member)
                assert source_file is not None
                digest = hashlib.sha256()
                size = 0
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := source_file.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                entry.update(type="file", size=size, sha256=digest.hexdigest())
            if member.isdir():
                directories.append((dest, member))
                if restore_owner:
                    os.chown(dest, member.uid, member.gid)
            elif not member.issym():
                os.chmod(dest, member.mode & 0o7777)
                if restore_owner:
                    os.chown(dest, member.uid, member.gid)
                os.utime(dest, (member.mtime, member.mtime))
            elif restore_owner:
                os.lchown(dest, member.uid, member.gid)
            written.append(entry)
            if on_entry:
                on_entry(entry)
    for dest, member in reversed(directories):  # writing into a directory changes its mtime
        os.chmod(dest, member.mode & 0o7777)
        os.utime(dest, (member.mtime, member.mtime))
    return written


def list_stream(reader: Any) -> list[dict[str, Any]]:
    """Every member of a tar stream, regular files hashed, nothing written anywhere."""
    found = []
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            entry: dict[str, Any] = {"path": posixpath.normpath(member.name)}
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                digest = hashlib.sha256()
                size = 0
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                entry.update(size=size, sha256=digest.hexdigest())
            found.append(entry)
    return found


class TarThread:
    """Runs a tar consumer (extract_stream, list_stream) in a worker thread, fed chunk by chunk
    from async code: `await asyncio.to_thread(t.feed, chunk)`, then `t.finish()`."""

    def __init__(self, consume: Callable[[Any], list[dict[str, Any]]]):
        self.feed_queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.result: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(consume,), daemon=True)
        self.thread.start()

    def _run(self, consume: Callable[[Any], list[dict[str, Any]]]) -> None:
        try:
            self.result = consume(_QueueReader(self.feed_queue))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            self.error = exc

    def feed(self, chunk: bytes | None) -> None:
        """Blocking; returns at once if the consumer already stopped."""
        while self.thread.is_alive():
            try:
                self.feed_queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> list[dict[str, Any]]:
        self.feed(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


async def pump_tar(chunks: AsyncIterator[bytes], consume: Callable[[Any], list[dict[str, Any]]],
                   on_chunk: Callable[[int], None]) -> list[dict[str, Any]]:
    """Feed a decoded archive stream to a tar consumer in its thread; what it returns.

    If the stream fails (bad checksum, wrong key), that error wins over the consumer's
    complaint about the truncated archive it then sees."""
    tar = TarThread(consume)
    try:
        async for chunk in chunks:
            on_chunk(len(chunk))
            await asyncio.to_thread(tar.feed, chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(tar.finish)
        raise
    return await asyncio.to_thread(tar.finish)
