"""Hooks: the user's commands around a job's backups and restores (stop the app, start it).

A command is an argv list, run without a shell, in its own process group, with stdin from
/dev/null and a small environment: PATH, HOME, LANG, TZ and the run's context (KBACKUP_JOB,
KBACKUP_HOOK, KBACKUP_RUN_ID, KBACKUP_BACKUP_ID, KBACKUP_RESTORE_ID, KBACKUP_STATUS,
KBACKUP_ERROR, KBACKUP_COMPONENTS), never the daemon's own environment (credentials
directory, passwords). Past the job's `[hooks] timeout` the whole group is killed. Its stdout
and stderr (head and tail, SECRET=... masked) go into the run's record (the catalog's
`runs.hooks`, JSON) and one `event=hook` log line per command.

The semantics (jobs/backup.py and jobs/restore.py call them): a `before_*` command that fails
stops the run before anything is dumped or replaced, and the commands after it in that hook
do not run; `after_*` and `on_failure` commands all run, each failure reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kbackup.config.hooks import HooksConfig
from kbackup.errors import KbackupError
from kbackup.process import SECRET, kill_tree, stderr_for_log

if TYPE_CHECKING:
    from kbackup.catalog import Catalog

log = logging.getLogger("kbackup.hooks")

KEEP = 4096  # bytes kept of each stream's head, and of its tail
READ_GRACE = 2.0  # seconds to wait for output once the command exited (a child may hold it)
READ = 65536
ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HookFailed(KbackupError):
    """A before_* hook failed: the run stopped before any change."""


@dataclass
class HookResult:
    hook: str
    argv: list[str]
    exit: int | None  # None: not started, or killed at the timeout
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    error: str | None  # the one line a user sees; None when the command succeeded

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Output:
    """One stream of a command: its first and last KEEP bytes, the count left out between."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.skipped = 0

    def add(self, chunk: bytes) -> None:
        room = KEEP - len(self.head)
        self.head += chunk[:room]
        self.tail += chunk[room:] if room > 0 else chunk
        if len(self.tail) > KEEP:
            self.skipped += len(self.tail) - KEEP
            del self.tail[:len(self.tail) - KEEP]

    def text(self) -> str:
        gap = f"\n... ({self.skipped} bytes left out) ...\n".encode() if self.skipped else b""
        raw = bytes(self.head + gap + self.tail).decode(errors="replace")
        return SECRET.sub(lambda m: f"{m.group(1)}=***", raw)


async def _capture(fd: int, into: _Output) -> None:
    """Read a pipe into `into` until EOF (or cancellation, which closes our end)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    try:
        while chunk := await reader.read(READ):
            into.add(chunk)
    finally:
        transport.close()


def hook_env(context: Mapping[str, str]) -> dict[str, str]:
    """The few variables a command needs, then the run's context; no secrets."""
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(context)
    return env


# Lines that only point elsewhere, which tools print after their reason (systemctl: "Failed to
# stop app.service: Access denied." then "See system logs and 'systemctl status ...'").
POINTER = re.compile(r"(?i)^(see |try |hint: |for (more )?details)")


def last_line(text: str) -> str:
    """The last line saying why (a pointer to the logs after it is skipped)."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    telling = [line for line in lines if not POINTER.match(line)] or lines
    return telling[-1] if telling else ""


async def run_command(hook: str, argv: list[str], env: Mapping[str, str],
                      limit: float) -> HookResult:
    """Run one command to its end or its timeout (then kill its process group)."""
    shown = shlex.join(argv)
    started = time.monotonic()
    pipes = [os.pipe(), os.pipe()]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=pipes[0][1], stderr=pipes[1][1],
            env=dict(env), cwd="/", start_new_session=True)
    except OSError as exc:
        for read_fd, _ in pipes:
            os.close(read_fd)
        return HookResult(hook, argv, None, False, time.monotonic() - started, "", "",
                          f"{hook} hook \"{shown}\" could not start: {exc.strerror or exc}")
    finally:
        for _, write_fd in pipes:
            os.close(write_fd)
    outputs = (_Output(), _Output())
    readers = [asyncio.create_task(_capture(fd, out))
               for (fd, _), out in zip(pipes, outputs, strict=True)]
    timed_out = False
    try:
        try:
            async with asyncio.timeout(limit):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await kill_tree(proc)
    finally:
        if proc.returncode is None:  # cancelled: the command goes with the run
            await asyncio.shield(kill_tree(proc))
        _, pending = await asyncio.wait(readers, timeout=READ_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    stdout, stderr = outputs[0].text(), outputs[1].text()
    error = None
    if timed_out:
        error = f"{hook} hook \"{shown}\" timed out after {limit:g}s (killed)"
    elif proc.returncode != 0:
        why = last_line(stderr) or last_line(stdout) or "no output"
        error = f"{hook} hook \"{shown}\" failed (exit {proc.returncode}): {why}"
    return HookResult(hook, argv, None if timed_out else proc.returncode, timed_out,
                      round(time.monotonic() - started, 3), stdout, stderr, error)


class Hooks:
    """The hooks of one run: runs them in order, keeps every result, stores them with the
    run (its row in the catalog's runs table) as they finish."""

    def __init__(self, config: HooksConfig, job: str, run_id: str, catalog: Catalog | None,
                 enabled: bool = True, **context: str):
        self.config = config
        self.job = job
        self.run_id = run_id
        self.catalog = catalog
        self.enabled = enabled
        self.context = {"KBACKUP_JOB": job, "KBACKUP_RUN_ID": run_id, **context}
        self.results: list[HookResult] = []

    async def run(self, hook: str, status: str, error: str | None = None,
                  components: list[str] | None = None, **context: str) -> list[str]:
        """Run the hook's commands; the error lines of those that failed. A before_* hook
        stops at its first failure."""
        if not self.enabled:
            return []
        env = hook_env({**self.context, **context, "KBACKUP_HOOK": hook,
                        "KBACKUP_STATUS": status, "KBACKUP_ERROR": error or "",
                        "KBACKUP_COMPONENTS": ",".join(components or [])})
        errors: list[str] = []
        for argv in self.config.commands(hook):
            result = await run_command(hook, argv, env, self.config.timeout)
            self.results.append(result)
            self._log(result)
            self._store()
            if result.error:
                errors.append(result.error)
                if hook.startswith("before_"):
                    break
        return errors

    async def before(self, hook: str, components: list[str], **context: str) -> None:
        """Run a before_* hook; raise HookFailed (its one line) if a command failed."""
        errors = await self.run(hook, "running", components=components, **context)
        if errors:
            raise HookFailed(errors[0])

    def _log(self, result: HookResult) -> None:
        output = (result.stdout + "\n" + result.stderr).splitlines()
        level = logging.INFO if result.error is None else logging.ERROR
        log.log(level, "event=hook job=%s run=%s hook=%s argv0=%s exit=%s seconds=%.3f%s%s",
                self.job, self.run_id, result.hook, os.path.basename(result.argv[0]),
                "timeout" if result.timed_out else result.exit, result.seconds,
                f" output={stderr_for_log(output, 1000)!r}" if any(output) else "",
                f" error={result.error!r}" if result.error else "")

    def _store(self) -> None:
        if self.catalog is not None:
            store_results(self.catalog, self.run_id, self.results)


def store_results(catalog: Catalog, run_id: str, results: list[HookResult]) -> None:
    """The run's hooks as JSON in its catalog row (`runs.hooks`, migration 4); views.run_view
    reads it back. A run without a row (a safety backup) records nothing."""
    try:
        catalog.db.execute("UPDATE runs SET hooks=? WHERE id=?",
                           (json.dumps([r.as_dict() for r in results]), run_id))
    except Exception:  # noqa: BLE001 - the record never fails the run; the log has it all
        log.exception("event=hook.record_failed run=%s", run_id)
