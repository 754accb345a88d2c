"""Runs jobs under the daemon's limits: at most max_concurrent_jobs at once (the rest queue),
never the same job twice at a time (a trigger while it runs is coalesced into the running one),
a per-job timeout that kills the whole subprocess tree, and a clean abort on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kbackup.catalog import Catalog, iso, utcnow
from kbackup.config import Config
from kbackup.jobs.backup import BackupRun
from kbackup.progress import Progress
from kbackup.repository import new_backup_id
from kbackup.storage import Storage
from kbackup.units import format_duration

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


class Runner:
    def __init__(self, config: Config, catalog: Catalog, storages: dict[str, Storage]):
        self.config = config
        self.catalog = catalog
        self.storages = storages
        self.limiter = Limiter(config.daemon.max_concurrent_jobs)
        self.active: dict[str, ActiveRun] = {}  # by job name

    async def reconfigure(self, config: Config, storages: dict[str, Storage]) -> None:
        """Running jobs keep the config they started with; new runs get the new one."""
        self.config = config
        self.storages = storages
        await self.limiter.resize(config.daemon.max_concurrent_jobs)

    def submit(self, job_name: str, trigger: str) -> tuple[ActiveRun, bool]:
        """Start (or queue) a backup of job_name; returns the run and whether it was coalesced."""
        if job_name not in self.config.jobs:
            raise KeyError(job_name)
        running = self.active.get(job_name)
        if running is not None:
            running.coalesced += 1
            log.warning(
                "event=run.coalesced job=%s run=%s trigger=%s reason=%s",
                job_name,
                running.id,
                trigger,
                "previous run still in progress",
            )
            return running, True
        now = utcnow()
        run = ActiveRun(new_backup_id(now), job_name, "backup", trigger, now, Progress())
        self.catalog.add_run(run.id, job_name, "backup", trigger, now)
        self.active[job_name] = run
        run.task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        log.info("event=run.queued job=%s run=%s trigger=%s", job_name, run.id, trigger)
        return run, False

    async def _execute(self, run: ActiveRun) -> None:
        job = self.config.jobs[run.job]
        config, storages = self.config, self.storages
        status, error = "failed", None
        try:
            async with self.limiter:
                run.progress.phase = "starting"
                log.info("event=run.start job=%s run=%s", run.job, run.id)
                backup = BackupRun(
                    config, job, storages, self.catalog, run.id, run.trigger, run.progress
                )
                try:
                    async with asyncio.timeout(job.timeout):
                        manifest = await backup.run()
                except TimeoutError:
                    error = f"timed out after {format_duration(job.timeout)} (job timeout)"
                else:
                    status = "complete"
                    log.info(
                        "event=run.complete job=%s run=%s size_bytes=%d",
                        run.job,
                        run.id,
                        manifest.size_bytes,
                    )
        except asyncio.CancelledError:
            error = "aborted: daemon shutting down"
        except Exception as exc:  # one job must never take the daemon down
            error = str(exc) or exc.__class__.__name__
        finally:
            if status != "complete":
                log.error("event=run.failed job=%s run=%s error=%r", run.job, run.id, error)
                self.catalog.mark_backup_failed(run.id, error or "failed")
            self.catalog.finish_run(run.id, status, error, backup_id=run.id)
            run.progress.phase = status
            self.active.pop(run.job, None)
            run.done.set()

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
