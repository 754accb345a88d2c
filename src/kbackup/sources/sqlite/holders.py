"""Which processes have a file open, from /proc/*/fd: a SQLite file is not replaced under a
running app (it would keep writing to the old inode, or replay its old WAL into the new file).
Only the processes this daemon may look at are seen (all of them as root)."""

from __future__ import annotations

import os
from pathlib import Path

from kbackup.sources.sqlite.snapshot import SIDE_FILES


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def holders(database: Path) -> list[str]:
    """'name (pid N)' of every other process with the database or its -wal/-shm open."""
    database = database.resolve()
    wanted = {str(database), *(f"{database}{s}" for s in SIDE_FILES)}
    found = []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in wanted:
                found.append(f"{_comm(pid)} (pid {pid})")
                break
    return found
