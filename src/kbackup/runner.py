"""Runs jobs under the daemon's limits: at most max_concurrent_jobs at once (the rest queue),
never the same job twice at a time (a trigger while it runs is coalesced into the running one),
a per-job timeout that kills the whole subprocess tree, and a clean abort on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kbackup.catalog import Catalog
from kbackup.errors import Refused
from kbackup.process import stderr_for_log, stderr_of
from kbackup.progress import Progress
from kbackup.times import format_duration, iso, utcnow

if TYPE_CHECKING:  # types only: the config models, storage and jobs load with the daemon
    from kbackup.config import Config
    from kbackup.storage import Storage

log = logging.getLogger("kbackup.runner")


class Limiter:
    """A semaphore whose size can change on reload."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    async def resize(self, limit: int) -> None:
        async with self._cond:
            self.limit = limit
            self._cond.notify_all()


@dataclass
class ActiveRun:
    id: str
    job: str
    kind: str
    trigger: str
    started_at: datetime
    progress: Progress
    task: asyncio.Task[None] | None = None
    coalesced: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    backup_id: str | None = None  # the backup it reads or writes (delete refuses it meanwhile)
    tag: str | None = None  # backups: the schedule tag that fired the run
    label: str | None = None  # backups: the user's label
    backup_good: bool = False  # backups: written whole; a later problem (a hook) fails only the run

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "kind": self.kind,
            "trigger": self.trigger,
            "status": "running",
            "started_at": iso(self.started_at),
            "progress": self.progress.as_dict(),
            "coalesced_triggers": self.coalesced,
        }


Work = Callable[[ActiveRun, "Config"], Awaitable[str | None]]


class RunnerBusy(Refused):
    """The job is busy with another kind of run (a restore during a backup, or vice versa)."""


class Runner:
    def __init__(self, config: Config, catalog: Catalog, storages: dict[str, Storage]):
        self.config = config
        self.catalog = catalog
        self.storages = storages
        self.limiter = Limiter(config.daemon.max_concurrent_jobs)
        self.active: dict[str, ActiveRun] = {}  # by exclusivity key (job name for writers)
        # Called with (run, status, error) once a run is recorded as finished (health, alerts).
        self.on_finish: Callable[[ActiveRun, str, str | None], None] | None = None
        self.on_start: Callable[[ActiveRun], None] | None = None  # the heartbeat's /start

    async def reconfigure(self, config: Config, storages: dict[str, Storage]) -> None:
        """Running jobs keep the config they started with; new runs get the new one."""
        self.config = config
        self.storages = storages
        await self.limiter.resize(config.daemon.max_concurrent_jobs)

    def submit(self, job_name: str, kind: str, trigger: str, work: Work,
               key: str | None = None, target_id: str | None = None) -> tuple[ActiveRun, bool]:
        """Start (or queue) work; returns the run and whether it joined a running one.

        Runs sharing a key never overlap: a second trigger of the same kind is coalesced into
        the running one, another kind is refused with RunnerBusy.
        """
        if job_name not in self.config.jobs:
            raise KeyError(job_name)
        key = key or job_name
        running = self.active.get(key)
        if running is not None:
            if running.kind != kind:
                raise RunnerBusy(f"job {job_name} is busy with a {running.kind} run "
                                 f"({running.id}); try again when it has finished")
            running.coalesced += 1
            log.warning("event=run.coalesced job=%s run=%s trigger=%s reason=%s", job_name,
                        running.id, trigger, "previous run still in progress")
            return running, True
        from kbackup.repository import new_backup_id  # the manifest models: with the jobs

        now = utcnow()
        run = ActiveRun(new_backup_id(now), job_name, kind, trigger, now, Progress())
        run.backup_id = target_id or (run.id if kind == "backup" else None)
        self.catalog.add_run(run.id, job_name, kind, trigger, now)
        self.active[key] = run
        run.task = asyncio.create_task(self._execute(run, key, work, target_id),
                                       name=f"{kind}-{run.id}")
        log.info("event=run.queued job=%s kind=%s run=%s trigger=%s", job_name, kind, run.id,
                 trigger)
        return run, False

    def submit_backup(self, job_name: str, trigger: str, tag: str | None = None,
                      label: str | None = None) -> tuple[ActiveRun, bool]:
        run, coalesced = self.submit(job_name, "backup", trigger, self._backup)
        if not coalesced:  # set before the task first runs (no await in between)
            run.tag, run.label = tag, label
        return run, coalesced

    async def _backup(self, run: ActiveRun, config: Config) -> str | None:
        # The jobs (pipeline, gpg, the drivers) load with the first run, not with the runner:
        # the unit tests and kbackupctl import this module without needing them.
        from kbackup.jobs.backup import BackupRun
        from kbackup.jobs.verify import VerifyRun

        job = config.jobs[run.job]
        backup = BackupRun(config, job, self.storages, self.catalog, run.id, run.trigger,
                           run.progress, tag=run.tag, label=run.label)
        manifest = await backup.run()
        level = job.verify.after_backup
        if level != "none":
            run.progress.phase = f"verifying ({level})"
            run.progress.bytes_done = 0
            row = self.catalog.get_backup(manifest.id)
            assert row is not None
            verify = VerifyRun(config, job, self.storages, self.catalog, row, level,
                               run.progress, run.id)
            result = await verify.run()
            if not result["ok"]:
                raise RuntimeError(f"backup written but {level} verification failed: "
                                   f"{result['problem']}")
        partial = backup.partial_reason()
        if partial:
            return "; ".join(filter(None, [f"backup {manifest.id} is partial: {partial}",
                                           backup.hook_error]))
        await self._prune(config, run)
        log.info("event=backup.complete job=%s backup=%s size_bytes=%d", run.job, manifest.id,
                 manifest.size_bytes)
        run.backup_good = True
        return backup.hook_error  # an after_backup command failed: the backup itself is fine

    async def _prune(self, config: Config, run: ActiveRun) -> None:
        """Retention after each successful backup; a prune problem never fails the backup."""
        from kbackup.jobs.prune import prune_job

        job = config.jobs[run.job]
        if not job.retention.configured:
            return
        run.progress.phase = "applying retention"
        try:
            report = await prune_job(config, job, self.storages, self.catalog, utcnow(), False)
        except Exception as exc:  # noqa: BLE001 - logged, the backup itself is fine
            log.error("event=prune.failed job=%s error=%r", run.job, str(exc))
            return
        for problem in report["errors"]:
            log.error("event=prune.error job=%s error=%r", run.job, problem)

    async def _execute(self, run: ActiveRun, key: str, work: Work,
                       target_id: str | None) -> None:
        config = self.config
        status, error = "failed", None
        stderr: list[str] = []
        try:
            async with self.limiter:
                config = self.config  # the newest config once it is this run's turn
                if run.job not in config.jobs:
                    raise RuntimeError(f"job {run.job} was removed from the configuration")
                timeout = config.jobs[run.job].timeout
                run.progress.phase = "starting"
                log.info("event=run.start job=%s kind=%s run=%s", run.job, run.kind, run.id)
                self._hook("on_start", run)
                try:
                    async with asyncio.timeout(timeout):
                        error = await work(run, config)
                except TimeoutError:
                    error = f"timed out after {format_duration(timeout)} (job timeout)"
                else:
                    status = "complete" if error is None else "failed"
        except asyncio.CancelledError:
            error = "aborted: daemon shutting down"
        except Exception as exc:  # one job must never take the daemon down
            error = str(exc) or exc.__class__.__name__
            stderr = stderr_of(exc)
        finally:
            if status != "complete":
                # With a failed tool's whole stderr: the error above is its one telling line.
                log.error("event=run.failed job=%s kind=%s run=%s error=%r%s", run.job,
                          run.kind, run.id, error,
                          f" stderr={stderr_for_log(stderr)!r}" if stderr else "")
                if (run.kind == "backup" and not run.backup_good
                        and self.catalog.get_backup(run.id) is not None):
                    row = self.catalog.get_backup(run.id)
                    if row is not None and row["status"] not in ("corrupt", "partial"):
                        self.catalog.mark_backup_failed(run.id, error or "failed")
            else:
                log.info("event=run.complete job=%s kind=%s run=%s", run.job, run.kind, run.id)
            backup_id = run.id if run.kind == "backup" else target_id
            self.catalog.finish_run(run.id, status, error, backup_id=backup_id)
            run.progress.phase = status
            self.active.pop(key, None)
            self._hook("on_finish", run, status, error)
            run.done.set()

    def _hook(self, name: str, run: ActiveRun, *args: Any) -> None:
        hook = getattr(self, name)
        if hook is not None:
            try:
                hook(run, *args)
            except Exception:  # a hook must never break the runner
                log.exception("event=run.hook_failed run=%s hook=%s", run.id, name)

    def using(self, backup_id: str) -> list[ActiveRun]:
        """Runs, running or queued, that read or write this backup (its restore, its
        verification, the backup run writing it)."""
        return [r for r in self.active.values()
                if r.backup_id == backup_id and not r.done.is_set()]

    def find(self, run_id: str) -> ActiveRun | None:
        return next((r for r in self.active.values() if r.id == run_id), None)

    async def shutdown(self, grace: float) -> None:
        """Abort running work cleanly: sources killed, partial objects removed."""
        runs = list(self.active.values())
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), grace)
