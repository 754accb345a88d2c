"""A SQLite database as a backup stream: copied online into a private temp file (staging_dir,
else state_dir, mode 0600), checked there (integrity, row counts), then streamed as the plain
database file, so `zstd -d` of the stored object is a working database. The temp copy is
removed however the run ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from kbackup.handoff import CHUNK, ChunkQueue, Stopped, Transform
from kbackup.sources.base import Source, SourceError, SourceStream
from kbackup.sources.sqlite.config import SqliteSource
from kbackup.sources.sqlite.meta import SqliteMeta
from kbackup.sources.sqlite.snapshot import (
    NotADatabase,
    check_file,
    inspect,
    online_copy,
    remove_with_side_files,
)
from kbackup.sources.tools import held_scratch_file, unheld_files

log = logging.getLogger("kbackup.backup")


class CopyStream(SourceStream):
    def __init__(self, name: str, copy: Path, meta: SqliteMeta):
        self.name = name
        self.copy = copy
        self.meta = meta
        self.out = ChunkQueue(self._produce, name=f"sqlite-{name}")

    def _produce(self, out: ChunkQueue) -> None:
        with open(self.copy, "rb") as handle:
            while chunk := handle.read(CHUNK):
                if out.stopped:
                    raise Stopped()
                out.put(chunk)

    def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        return self.out.chunks(transform)

    async def finish(self) -> SqliteMeta:
        await asyncio.to_thread(self.out.join)
        if self.out.error is not None:
            raise SourceError(f"sqlite {self.name}: reading the copy failed: {self.out.error}")
        return self.meta


class SqliteDatabase(Source):
    kind = "sqlite"
    extension = ".db"
    metadata_field = "sqlite"

    def __init__(self, config: SqliteSource):
        super().__init__(config.name)
        self.config = config

    async def estimate_size(self) -> int | None:
        with contextlib.suppress(OSError):
            return self.config.path.stat().st_size
        return None

    def _snapshot(self, copy: Path) -> SqliteMeta:
        """Copy and inspect; every failure as the source's one line."""
        where = f"sqlite {self.name}"
        try:
            check_file(self.config.path)
            online_copy(self.config.path, copy)
            meta = inspect(copy, self.config.path)
        except NotADatabase as exc:
            raise SourceError(f"{where}: {exc}") from None
        except (sqlite3.Error, OSError) as exc:
            raise SourceError(f"{where}: copying {self.config.path} failed: {exc}") from None
        if meta.integrity_check != "ok":
            raise SourceError(f"{where}: PRAGMA integrity_check of the copy of"
                              f" {self.config.path} failed: {meta.integrity_check}")
        return meta

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SourceStream]:
        base = self.scratch_dir or Path(tempfile.gettempdir())
        await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
        for leftover in await asyncio.to_thread(unheld_files, base, "sqlite-*.db"):
            log.warning("event=sqlite.copy_leftover path=%s removed", leftover)
            await asyncio.to_thread(remove_with_side_files, leftover)
        # Held (flock) while this run uses it: a copy nobody holds is a killed daemon's.
        fd, copy = held_scratch_file(base, f"sqlite-{self.name}-", ".db")
        stream: CopyStream | None = None
        snapshot = asyncio.ensure_future(asyncio.to_thread(self._snapshot, copy))
        try:
            meta = await asyncio.shield(snapshot)
            stream = CopyStream(self.name, copy, meta)
            yield stream
        finally:
            if not snapshot.done():  # cancelled: the copy cannot be interrupted, and removing
                with contextlib.suppress(BaseException):  # the file under it would leave
                    await snapshot  # the one inspect() then creates: let it end first
            if stream is not None:
                await asyncio.to_thread(stream.out.stop)
            await asyncio.to_thread(remove_with_side_files, copy)
            os.close(fd)
