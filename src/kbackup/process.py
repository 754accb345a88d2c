"""Child processes (pg_dump, pg_restore, gpg): spawned in their own process group so a timeout
or shutdown kills the whole tree, and without NOTIFY_SOCKET so no child can talk to systemd
on the daemon's behalf."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
    env.update(extra or {})
    return env


async def spawn(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | None = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(env),
        start_new_session=True,
        limit=8 << 20,
    )


async def kill_tree(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    """TERM the process group, then KILL what is left; always reaps the child."""
    if proc.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), wait)
            return
        except TimeoutError:
            continue


async def read_stderr_tail(stream: asyncio.StreamReader | None, keep: int = 20) -> list[str]:
    lines: list[str] = []
    if stream is None:
        return lines
    async for raw in stream:
        lines.append(raw.decode(errors="replace").rstrip())
        del lines[:-keep]
    return lines


def last_error_line(lines: Sequence[str], default: str) -> str:
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return default
