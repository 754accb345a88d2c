"""Child processes (pg_dump, pg_restore, gpg): spawned in their own process group so a timeout
or shutdown kills the whole tree, and without NOTIFY_SOCKET so no child can talk to systemd
on the daemon's behalf."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence

from kbackup.errors import ToolError as ToolError

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


def stderr_of(exc: BaseException | None) -> list[str]:
    """The stderr a ToolError (or one it was raised from) carries; [] if none."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ToolError) and exc.stderr:
            return exc.stderr
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return []


STDERR_HEAD, STDERR_TAIL = 20, 40  # lines kept of a child's stderr: the cause comes early


async def read_stderr_tail(stream: asyncio.StreamReader | None,
                           head: int = STDERR_HEAD, tail: int = STDERR_TAIL) -> list[str]:
    """A child's stderr lines: the first `head` and the last `tail` (a tool says why it failed
    first and what it was doing last), with one line telling how many were left out between."""
    first: list[str] = []
    last: list[str] = []
    skipped = 0
    if stream is None:
        return first
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if len(first) < head:
            first.append(line)
            continue
        last.append(line)
        if len(last) > tail:
            del last[0]
            skipped += 1
    gap = [f"... ({skipped} lines left out)"] if skipped else []
    return first + gap + last


ERROR_MARKERS = ("error:", "fatal:", "panic:")  # pg_dump: error:, FATAL:, ERROR:, gpg: fatal:
DETAIL_MARKERS = ("detail:", "hint:")
# Where a tool echoes what it was running, not why it failed.
ECHO_MARKERS = ("command was:", "the command was:")
SECRET = re.compile(r"(?i)\b(password|passwd|secret|token)=\S+")


def _is_echo(line: str) -> bool:
    low = line.lower()
    return any(marker in low for marker in ECHO_MARKERS)


def _is_error(line: str) -> bool:
    low = line.lower()
    return any(marker in low for marker in ERROR_MARKERS) and not _is_echo(line)


def _is_detail(line: str) -> bool:
    low = line.lower()
    return any(marker in low for marker in DETAIL_MARKERS) and not _is_echo(line)


def error_reason(lines: Sequence[str], default: str) -> str:
    """Why an external tool failed, from its stderr, as one line.

    The first line carrying error: / FATAL: / ERROR: / fatal: (or panic:), with up to two
    detail or error lines right after it (pg_dump puts the server's reason there:
    "detail: Error message from server: server closed the connection unexpectedly"); the
    "Command was: ..." echo and indented continuation lines are left out. A tool that marks
    no line an error is named by its last line; no output at all gives `default`."""
    kept = [line for line in lines if line.strip()]
    at = next((i for i, line in enumerate(kept) if _is_error(line)), None)
    if at is None:
        plain = [line for line in kept if not _is_echo(line)] or kept
        return " ".join(plain[-1].split()) if plain else default
    first = " ".join(kept[at].split())
    prefix = first.split(": ", 1)[0] + ": " if ": " in first else ""
    parts = [first]
    for line in kept[at + 1:]:
        if len(parts) == 3:
            break
        if line[:1].isspace() or _is_echo(line):
            continue  # continuation of the line before, or the echoed command
        if not (_is_detail(line) or _is_error(line)):
            break
        text = " ".join(line.split())
        if prefix and text.startswith(prefix) and not text.lower().startswith(
                ("error:", "fatal:")):
            text = text[len(prefix):]
        parts.append(text)
    return " ".join(parts)


def stderr_for_log(lines: Sequence[str], limit: int = 4000) -> str:
    """A child's stderr as one log value: lines joined with " | ", secrets masked, bounded."""
    text = " | ".join(" ".join(line.split()) for line in lines if line.strip())
    text = SECRET.sub(lambda m: f"{m.group(1)}=***", text)
    return text if len(text) <= limit else text[:limit] + "..."
