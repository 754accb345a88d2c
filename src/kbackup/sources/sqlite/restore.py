"""Restoring a SQLite database: to a new file (--to-path) or over the live one (--in-place,
after a safety backup). Either way the object is decoded beside the target in the same
directory, fsynced and integrity-checked, then renamed over it: the target is the old file or
the new one, never half of either. The old file's -wal/-shm/-journal are removed only after a
checkpoint of it (they would otherwise be replayed into the new file). A target some process
still has open is refused, naming the process, unless --force-open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

from kbackup.config import JobConfig
from kbackup.errors import RestoreFailed
from kbackup.repository import Component
from kbackup.sources.base import Planned, PlanRefused, RestoreContext, RestoreOptions, Step
from kbackup.sources.sqlite.check import decoded_check, write_stream
from kbackup.sources.sqlite.config import SqliteSource
from kbackup.sources.sqlite.holders import holders
from kbackup.sources.sqlite.snapshot import SIDE_FILES, connect, remove_with_side_files
from kbackup.sources.tools import check_writable


def open_by(path: Path, force_open: bool) -> str | None:
    """Why `path` must not be replaced now (the processes holding it), or None."""
    if force_open or not path.exists():
        return None
    found = holders(path)
    if not found:
        return None
    return (f"{path} is open by {', '.join(found)}: stop it first, or add --force-open"
            " (that process must then be restarted)")


def _plan_to_path(component: Component, request: RestoreOptions) -> Planned:
    assert request.to_path is not None
    target = Path(request.to_path)
    if not request.component:
        raise PlanRefused("--to-path restores one SQLite database: give --component NAME too")
    if not target.is_absolute():
        raise PlanRefused(f"--to-path must be an absolute path, got {request.to_path!r}")
    if target.is_dir():
        raise PlanRefused(f"--to-path {target} is a directory; give the database file's path")
    exists = target.exists()
    if exists and not request.clean:
        raise PlanRefused(f"--to-path {target} exists: choose another path, or add --clean to"
                          " replace it")
    problem = open_by(target, request.force_open)
    if problem:
        raise PlanRefused(problem)
    check_writable(target.parent, f"--to-path {target}")
    detail = (f"{'REPLACE' if exists else 'create'} {target} with sqlite {component.name}"
              " (written beside it, then renamed)")
    return Planned(Step(component.name, "sqlite-new", str(target), detail, destructive=exists,
                        size_bytes=component.raw_bytes, checked_before_change=not exists))


def _plan_in_place(job: JobConfig, component: Component, request: RestoreOptions) -> Planned:
    source = job.source(component.name)
    if not isinstance(source, SqliteSource):
        raise PlanRefused(f"sqlite {component.name}: not configured in job {job.name}, so its"
                          " live path is unknown; use --to-path PATH")
    live = source.path
    check_writable(live.parent, f"--in-place {live}")
    if not live.exists():
        return Planned(Step(component.name, "sqlite-replace", str(live),
                            f"{live} does not exist: create it", size_bytes=component.raw_bytes,
                            checked_before_change=True))
    problem = open_by(live, request.force_open)
    if problem:
        raise PlanRefused(problem)
    # Not checked_before_change: the whole object is re-read before the safety backup, so a
    # damaged backup is found before anything is done.
    step = Step(component.name, "sqlite-replace", str(live),
                f"REPLACE the live database {live} (written beside it, then renamed)"
                + ("" if request.no_safety_backup else "; safety backup of it first"),
                destructive=True, size_bytes=component.raw_bytes)
    return Planned(step, [] if request.no_safety_backup else [component.name])


def plan_sqlite(job: JobConfig, component: Component, request: RestoreOptions) -> Planned:
    if request.in_place and request.to_path:
        raise PlanRefused("--in-place and --to-path exclude each other")
    if request.to_path:
        return _plan_to_path(component, request)
    if request.in_place:
        return _plan_in_place(job, component, request)
    return Planned(Step(component.name, "skip", "-", f"sqlite {component.name} skipped: give"
                        " --to-path PATH (or --in-place) to restore it"))


def _retire(old: Path, new: Path) -> None:
    """Make `new` look like `old` (mode, owner when root), checkpoint `old` and remove its
    -wal/-shm/-journal, so that nothing of it is replayed into the file renamed over it."""
    st = old.stat()
    os.chmod(new, st.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(new, st.st_uid, st.st_gid)
    with contextlib.suppress(sqlite3.Error), connect(old, readonly=False) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{old}{suffix}")


def _swap_in(side: Path, final: Path, force_open: bool) -> None:
    if final.exists():
        problem = open_by(final, force_open)  # the app may have started since the plan
        if problem:
            raise RestoreFailed(f"{problem}; {final} is unchanged")
        _retire(final, side)
    os.rename(side, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def restore_sqlite(ctx: RestoreContext, step: Step, component: Component) -> None:
    final = Path(step.target)
    side = final.with_name(f".{final.name}.kbackup-restore-{ctx.restore_id[-6:]}")
    await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(remove_with_side_files, side)  # left by a crashed restore
    ctx.progress.phase = f"restoring sqlite {component.name} beside {final}"
    try:
        await write_stream(ctx.open(component, component).chunks(), side, ctx.advance)
        await asyncio.to_thread(decoded_check, side, component.name)
        ctx.progress.phase = f"renaming the restored database in as {final}"
        await asyncio.to_thread(_swap_in, side, final, ctx.request.force_open)
    finally:
        await asyncio.to_thread(remove_with_side_files, side)
