"""Helpers any source driver may use when it talks to a client tool (pg_restore, psql,
mariadb), keeps a scratch file (a restore's spool, SQLite's copy), replaces a file or sums up
a database component for listings: one home, so that no driver imports another's package."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kbackup.handoff import widen_pipe
from kbackup.pipeline import read_ahead
from kbackup.process import kill_tree, read_stderr_tail, spawn
from kbackup.sources.base import PlanRefused


def safe_file_part(database: str) -> str:
    """A database name as part of an object name: itself when it is only letters, digits,
    _ and -; else those kept, the rest as _, and a hash of the name (stays unique)."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", database):
        return database
    digest = hashlib.sha256(database.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_-]", "_", database)[:40] + "-" + digest


def check_writable(path: Path, what: str) -> None:
    """Refuse at planning time what would fail after the safety backup: the daemon must be
    able to create `path` (its nearest existing ancestor must be writable, and under the
    package's sandbox only ReadWritePaths= are). `what`: the option and its value."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PlanRefused(f"{what}: {probe} is not writable by the daemon (under systemd add"
                          " it to ReadWritePaths= with `systemctl edit kbackupd`)")


def count_mismatch(expected: Mapping[str, int], restored: Mapping[str, int],
                   extra: bool = False) -> str | None:
    """The first table whose restored rows differ from the manifest's (with `extra`, or a
    restored table the manifest does not list); None: all equal. The verdict of every
    restore-test that counts rows."""
    for table, rows in sorted(expected.items()):
        got = restored.get(table)
        if got != rows:
            return (f"table {table}: {rows} rows in manifest, "
                    f"{'missing' if got is None else got} restored")
    unlisted = sorted(set(restored) - set(expected)) if extra else []
    if unlisted:
        return f"table {unlisted[0]}: restored but not in the manifest"
    return None


def counted_summary(component: dict[str, Any], field: str = "database",
                    shown: Sequence[str] = ("server_version", "database_size"),
                    renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The listing's view of a database component (manifest JSON, as the catalog has it):
    the `shown` fields of its `field`, its tables and rows from `row_counts`, then `renamed`
    (listing name -> manifest name)."""
    found = component.get(field)
    if not found:
        return {}
    counts = found.get("row_counts") or {}
    view = {name: found.get(name) for name in shown}
    view.update(tables=len(counts), rows=sum(counts.values()))
    view.update({name: found.get(stored) for name, stored in (renamed or {}).items()})
    return {field: view}


# Decoded chunks fetched ahead of a tool fed from a stream: up to this many (each at most a
# few MiB: DECODE_PIECE of compressed input) wait while the tool reads the one before.
READ_AHEAD = 4

async def feed_process(argv: Sequence[str], env: dict[str, str],
                       stream: AsyncIterator[bytes],
                       stdout: int | None = asyncio.subprocess.DEVNULL,
                       on_chunk: Callable[[int], None] | None = None,
                       tee: Callable[[bytes], Awaitable[None]] | None = None,
                       ) -> tuple[int, list[str]]:
    """Pipe a decoded stream into a tool's stdin; returns its exit code and stderr tail.

    The whole stream is always consumed (so its checksum is checked) even if the tool stops
    reading early, and every chunk also goes to `tee` when given (a spool file); if the
    stream raises, the tool is killed before it sees end-of-input.
    """
    proc = await spawn(argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=stdout)
    assert proc.stdin is not None
    widen_pipe(proc.stdin.transport.get_extra_info("pipe").fileno())
    stderr_task = asyncio.create_task(read_stderr_tail(proc.stderr))
    open_pipe = True
    try:
        async for chunk in read_ahead(stream, READ_AHEAD):
            if on_chunk:
                on_chunk(len(chunk))
            if tee is not None:
                await tee(chunk)
            if not open_pipe:
                continue
            try:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                open_pipe = False
        if open_pipe:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()
                await proc.stdin.wait_closed()
        code = await proc.wait()
        return code, await stderr_task
    except BaseException:
        await kill_tree(proc)
        stderr_task.cancel()
        raise



def held_scratch_file(directory: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new 0600 file and its descriptor, with an flock held until the descriptor closes: a
    file of this shape nobody holds is the leftover of a killed daemon (unheld_files)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, Path(name)


def unheld_files(directory: Path, pattern: str) -> list[Path]:
    """The files matching `pattern` that no running work holds (see held_scratch_file)."""
    found = []
    for path in directory.glob(pattern):
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
