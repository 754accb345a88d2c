"""Loading a decoded dump into a database as fast as pg_restore -j allows.

pg_restore -j needs a seekable file; a stored dump comes back as a stream, and one that came
through a pipe has no data offsets: they are written into the spool file before pg_restore -j
reads it (archive_toc.fill_offsets), so each worker seeks straight to its table. One pg_restore
creates the schema from the head of the stream (the table of contents). Then either the
whole decoded dump is spooled to a file (staging_dir, else state_dir, then `spool/`) from
which pg_restore -j N loads the data and builds the indexes, constraints and triggers, N at a
time; or, when one table holds most of the rows, the data streams into one pg_restore in
order while only the head is spooled, and pg_restore -j N builds post-data from it. The spool
file is removed whatever happens. Without room (or with restore_jobs = 1) the dump is
streamed into one pg_restore, as before. The log says which (one `event=restore.load` line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from kbackup.process import kill_tree, read_stderr_tail, spawn
from kbackup.repository import Component
from kbackup.sources.base import ReadBack
from kbackup.sources.postgres.archive_toc import fill_offsets
from kbackup.sources.postgres.config import PostgresSource
from kbackup.sources.postgres.meta import DatabaseMeta
from kbackup.sources.postgres.pgtools import Login, PgError, run_tool
from kbackup.sources.tools import feed_process, held_scratch_file, unheld_files

log = logging.getLogger("kbackup.restore")

SPOOL_MARGIN = 64 << 20  # free space left over besides the decoded dump
SPOOL_BLOCK = 1 << 20  # the spool file is written in blocks of this size, by a thread
# Data in parallel unless one table holds this share of the data on disk (or of the rows,
# for backups that did not record the sizes): measured in bench/, see data_in_parallel.
ONE_TABLE_SHARE = 0.9
ONE_TABLE_SHARE_BY_ROWS = 0.5


DEFAULT_JOBS_MAX = 16  # a default that cannot exhaust a server's max_connections


def restore_jobs(source: PostgresSource | None) -> int:
    """The source's restore_jobs, else the number of cores (at most DEFAULT_JOBS_MAX)."""
    if source is not None and source.restore_jobs:
        return source.restore_jobs
    return min(os.cpu_count() or 1, DEFAULT_JOBS_MAX)


@dataclass
class Load:
    """Where a dump goes and how: pg_restore options every run shares (ownership, exit on
    error), those only a streamed load gets (--single-transaction), the parallel jobs."""

    login: Login
    dbname: str
    args: list[str]
    jobs: int
    streamed_args: list[str] = field(default_factory=list)


class SpoolFile:
    """A new 0600 file filled in SPOOL_BLOCK writes made by a thread, so a slow disk does not
    stall the event loop. It holds an flock until removed: a file nobody holds is a leftover
    of a killed daemon (orphans() finds those)."""

    PREFIX, SUFFIX = "kbackup-restore-", ".dump"

    def __init__(self, directory: Path):
        self.fd, self.path = held_scratch_file(directory, self.PREFIX, self.SUFFIX)
        self.pending: list[bytes] = []
        self.pending_size = 0

    async def write(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        if self.pending_size >= SPOOL_BLOCK:
            await self.flush()

    async def flush(self) -> None:
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending.clear()
        self.pending_size = 0
        try:
            await asyncio.to_thread(_write_all, self.fd, data)
        except OSError as exc:
            raise PgError(f"cannot write the restore spool file {self.path}: {exc.strerror}"
                          ) from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)

    @classmethod
    def orphans(cls, directory: Path) -> list[Path]:
        """Spool files no running restore holds."""
        return unheld_files(directory, f"{cls.PREFIX}*{cls.SUFFIX}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def data_in_parallel(component: Component) -> bool:
    """Whether pg_restore -j should load the table data too, or only build post-data.

    The whole decoded dump must be spooled before pg_restore -j can start (with its data
    offsets filled in). That pays off unless one table holds nearly all the data: then the
    data streams in order, into one pg_restore, while the spool holds only the table of
    contents. The tables' sizes on disk say how the data is shared out; a backup from before
    they were recorded has only row counts, a poorer guide (a table of wide rows counts few).
    """
    meta = DatabaseMeta.of(component)
    shares, threshold = meta.table_sizes, ONE_TABLE_SHARE
    if not shares:
        shares, threshold = meta.row_counts, ONE_TABLE_SHARE_BY_ROWS
    total = sum(shares.values()) if shares else 0
    return total > 0 and shares is not None and max(shares.values()) < total * threshold


def spool_dir(back: ReadBack) -> tuple[Path, int]:
    """The spool directory (leftovers of a killed daemon removed) and its free bytes."""
    base = back.scratch_base() / "spool"
    base.mkdir(mode=0o700, exist_ok=True)
    for orphan in SpoolFile.orphans(base):
        log.warning("event=restore.spool_leftover path=%s removed", orphan)
        orphan.unlink(missing_ok=True)
    return base, shutil.disk_usage(base).free


async def load_dump(back: ReadBack, component: Component, load: Load) -> tuple[int, list[str]]:
    """Restore the component's dump into load.dbname: staged when there is room, else
    streamed. The first failing pg_restore's exit code and stderr, or (0, [])."""
    parallel_data = data_in_parallel(component)
    # Data loaded in parallel reads it from the spool; else the spool holds only the table
    # of contents (the head of the stream), for post-data.
    need = (component.raw_bytes if parallel_data else 0) + SPOOL_MARGIN
    directory, free = spool_dir(back)
    staged = load.jobs >= 2 and free >= need
    log.info("event=restore.load component=%s database=%s method=%s jobs=%d parallel=%s"
             " spool=%s need_bytes=%d free_bytes=%d", component.name, load.dbname,
             "staged" if staged else "streamed", load.jobs if staged else 1,
             ("data+post-data" if parallel_data else "post-data") if staged else "-",
             directory if staged else "-", need, free)
    back.details[f"load_{component.name}"] = (
        f"staged, pg_restore -j{load.jobs}" if staged else "streamed")
    target = f"--dbname={load.login.dsn_for(load.dbname)}"
    env = load.login.child_env()
    async with _closing(back.open(component, component).chunks()) as chunks:
        if not staged:
            argv = [load.login.pg_restore, *load.args, *load.streamed_args, target]
            return await feed_process(argv, env, chunks, on_chunk=back.advance)
        spool = SpoolFile(directory)
        try:
            began = time.monotonic()
            if parallel_data:
                argv = [load.login.pg_restore, *load.args, "--section=pre-data", target]
                code, stderr = await feed_process(argv, env, chunks, on_chunk=back.advance,
                                                  tee=spool.write)
            else:
                code, stderr = await _schema_then_data(back, load, target, chunks, spool)
            if code != 0:
                return code, stderr
            await spool.flush()
            if parallel_data:
                filled = await asyncio.to_thread(fill_offsets, spool.fd)
                log.info("event=restore.offsets component=%s filled=%d", component.name,
                         filled)
            loaded = time.monotonic()
            back.progress.phase += f", indexes and constraints (pg_restore -j{load.jobs})"
            sections = ["--section=data"] if parallel_data else []
            argv = [load.login.pg_restore, *load.args, f"--jobs={load.jobs}", *sections,
                    "--section=post-data", target, str(spool.path)]
            code, stderr = await run_tool(argv, env)
            log.info("event=restore.loaded component=%s database=%s streamed_seconds=%.1f"
                     " parallel_seconds=%.1f", component.name, load.dbname, loaded - began,
                     time.monotonic() - loaded)
            return code, stderr
        finally:
            spool.remove()


@contextlib.asynccontextmanager
async def _closing(chunks: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """The stream's generator closed however the load ends (its decoders are released)."""
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _schema_then_data(back: ReadBack, load: Load, target: str,
                            chunks: AsyncIterator[bytes], spool: SpoolFile
                            ) -> tuple[int, list[str]]:
    """The schema by one pg_restore, fed until it stops reading (it then has the whole table
    of contents, which the head of the stream given to it holds: that head goes to the
    spool, for post-data), then the table data, in order, by another from the whole stream."""
    argv = [load.login.pg_restore, *load.args, "--section=pre-data", target]
    proc = await spawn(argv, env=load.login.child_env(), stdin=asyncio.subprocess.PIPE,
                       stdout=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None
    stderr_task = asyncio.create_task(read_stderr_tail(proc.stderr))
    head: list[bytes] = []
    try:
        async for chunk in chunks:
            back.advance(len(chunk))
            head.append(chunk)
            try:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                break  # done with the table of contents
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()
            await proc.stdin.wait_closed()
        code, stderr = await proc.wait(), await stderr_task
    except BaseException:
        await kill_tree(proc)
        stderr_task.cancel()
        raise
    if code != 0:
        return code, stderr
    for chunk in head:
        await spool.write(chunk)
    argv = [load.login.pg_restore, *load.args, "--section=data", target]
    return await feed_process(argv, load.login.child_env(), _after(head, chunks, back))


async def _after(head: list[bytes], rest: AsyncIterator[bytes],
                 back: ReadBack) -> AsyncIterator[bytes]:
    """The head of the stream again, then the rest of it (counted as it comes)."""
    for chunk in head:
        yield chunk
    async for chunk in rest:
        back.advance(len(chunk))
        yield chunk
