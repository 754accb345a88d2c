"""Loading a decoded dump into a database as fast as pg_restore -j allows.

pg_restore -j needs a seekable file; a stored dump comes back as a stream. When the spool
directory (staging_dir, else state_dir, then `spool/`) has room for the decoded dump, the
stream is written to a spool file and, as it passes, into one pg_restore that creates the
schema (pre-data: the archive's table of contents, at its start) and, when one table holds
most of the rows, loads the data in order too (see data_in_parallel). Once the stream has
ended, pg_restore -j N builds the indexes, constraints and triggers (post-data) from the file,
N at a time, after loading the table data side by side when the rows are spread over tables.
The spool file is removed whatever happens. Without room (or with restore_jobs = 1) the dump
is streamed into one pg_restore, as before. The log says which (one `event=restore.load`
line).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kbackup.repository import Component
from kbackup.sources.base import ReadBack
from kbackup.sources.postgres.config import PostgresSource
from kbackup.sources.postgres.meta import DatabaseMeta
from kbackup.sources.postgres.pgtools import Login, PgError, feed_process, run_tool

log = logging.getLogger("kbackup.restore")

SPOOL_MARGIN = 64 << 20  # free space left over besides the decoded dump
SPOOL_BLOCK = 1 << 20  # the spool file is written in blocks of this size, by a thread
SPREAD_SHARE = 0.5  # data in parallel when no table holds this share of the rows


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
        fd, name = tempfile.mkstemp(prefix=self.PREFIX, suffix=self.SUFFIX, dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        self.path = Path(name)
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
        found = []
        for path in directory.glob(f"{cls.PREFIX}*{cls.SUFFIX}"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found.append(path)
            except OSError:
                pass  # held: in use
            finally:
                os.close(fd)
        return found


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def data_in_parallel(component: Component) -> bool:
    """Whether pg_restore -j should load the table data too, or only build post-data.

    A dump that came through a pipe has no data offsets in its table of contents, and -Z0
    writes one chunk per row: a pg_restore -j worker finds its table by reading past the
    others' rows one by one. That pays off when the rows are spread over tables (they load
    side by side, and index builds start as each table is done); when one table holds most
    of them (or the counts are unknown) the data streams in order while the dump is spooled.
    """
    counts = DatabaseMeta.of(component).row_counts
    total = sum(counts.values()) if counts else 0
    return total > 0 and counts is not None and max(counts.values()) < total * SPREAD_SHARE


def spool_dir(back: ReadBack, component: Component, jobs: int) -> tuple[Path | None, int]:
    """The spool directory when the decoded dump fits there, else None; and its free bytes."""
    base = back.scratch_base() / "spool"
    base.mkdir(mode=0o700, exist_ok=True)
    for orphan in SpoolFile.orphans(base):
        log.warning("event=restore.spool_leftover path=%s removed", orphan)
        orphan.unlink(missing_ok=True)
    free = shutil.disk_usage(base).free
    if jobs < 2 or free < component.raw_bytes + SPOOL_MARGIN:
        return None, free
    return base, free


async def load_dump(back: ReadBack, component: Component, load: Load) -> tuple[int, list[str]]:
    """Restore the component's dump into load.dbname: staged when there is room, else
    streamed. The first failing pg_restore's exit code and stderr, or (0, [])."""
    directory, free = spool_dir(back, component, load.jobs)
    method = "staged" if directory is not None else "streamed"
    parallel = ["--section=data"] if data_in_parallel(component) else []
    log.info("event=restore.load component=%s database=%s method=%s jobs=%d parallel=%s"
             " spool=%s need_bytes=%d free_bytes=%d", component.name, load.dbname, method,
             load.jobs if directory else 1,
             ("data+post-data" if parallel else "post-data") if directory else "-",
             directory or "-", component.raw_bytes, free)
    back.details[f"load_{component.name}"] = (
        f"staged, pg_restore -j{load.jobs}" if directory else "streamed")
    target = f"--dbname={load.login.dsn_for(load.dbname)}"
    env = load.login.child_env()
    stream = back.open(component, component)
    if directory is None:
        argv = [load.login.pg_restore, *load.args, *load.streamed_args, target]
        return await feed_process(argv, env, stream.chunks(), on_chunk=back.advance)
    spool = SpoolFile(directory)
    began = time.monotonic()
    try:
        streamed = ["--section=pre-data"] + ([] if parallel else ["--section=data"])
        argv = [load.login.pg_restore, *load.args, *streamed, target]
        code, stderr = await feed_process(argv, env, stream.chunks(), on_chunk=back.advance,
                                          tee=spool.write)
        if code != 0:
            return code, stderr
        await spool.flush()
        staged = time.monotonic()
        back.progress.phase += f", indexes and constraints (pg_restore -j{load.jobs})"
        argv = [load.login.pg_restore, *load.args, f"--jobs={load.jobs}", *parallel,
                "--section=post-data", target, str(spool.path)]
        code, stderr = await run_tool(argv, env)
        log.info("event=restore.loaded component=%s database=%s staging_seconds=%.1f"
                 " parallel_seconds=%.1f", component.name, load.dbname, staged - began,
                 time.monotonic() - staged)
        return code, stderr
    finally:
        spool.remove()
