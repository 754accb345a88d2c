"""kbackupd: load config, recover from the last stop, schedule and run jobs, serve the API.

systemd integration: READY=1 once the socket listens, STATUS= with what is running,
WATCHDOG=1 at half of WATCHDOG_USEC from the event loop itself (a stuck loop stops the pings),
RELOADING=1/READY=1 around SIGHUP reloads, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Any

import sdnotify

from kbackup import __version__
from kbackup.access import Access
from kbackup.access.store import StoreError
from kbackup.alerts.monitor import Monitor
from kbackup.audit import AuditLog
from kbackup.catalog import Catalog, CatalogError, iso, parse_iso, utcnow
from kbackup.config import Config, ConfigError, load_config
from kbackup.fleet import local_job
from kbackup.logs import setup_logging
from kbackup.repository import clean_incomplete
from kbackup.runner import Runner
from kbackup.scheduler import Clock, Scheduler, clock_from_env
from kbackup.services import Services
from kbackup.signing import SigningError, signer
from kbackup.storage import Storage, StorageError, open_storage
from kbackup.storage.base import LockMissing
from kbackup.views import pause_view

log = logging.getLogger("kbackup.daemon")
ORPHAN_AGE = timedelta(days=1)
STARTUP_STORAGE_CHECK = 20.0


def build_storages(config: Config) -> dict[str, Storage]:
    return {name: open_storage(name, cfg) for name, cfg in config.storage.items()}


async def check_locks(storages: dict[str, Storage]) -> None:
    """Targets with object_lock must be buckets with Object Lock: LockMissing (one line) at
    start and reload otherwise. One that does not answer is only logged, as in recover()."""
    for storage in storages.values():
        if storage.lock_mode is None:
            continue
        try:
            async with asyncio.timeout(STARTUP_STORAGE_CHECK):
                await storage.check_lock()
        except LockMissing:
            raise
        except (StorageError, TimeoutError) as exc:
            log.warning("event=storage.lock_unchecked target=%s error=%r", storage.name,
                        str(exc) or "no answer within the start-up check")


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or Clock()
        self.catalog = Catalog(config.daemon.state_dir)
        self.storages = build_storages(config)
        self.runner = Runner(config, self.catalog, self.storages)
        self.scheduler = Scheduler(self.catalog, self._launch, self.clock)
        self.monitor = Monitor(config, self.catalog, self.storages, self.clock,
                               lambda: list(self.runner.active.values()))  # health, alerts
        self.runner.on_finish = self.monitor.run_finished
        self.runner.on_start = self.monitor.run_started  # heartbeat pings
        self.audit = AuditLog(self.catalog)  # restores and deletions, newest first
        self.access = Access(config.daemon.state_dir, self.clock.now)  # tokens, web users
        # The manifest signing key, made here at the first start (kbackup.signing).
        log.info("event=signing.key fingerprint=%s", signer(config.daemon.state_dir).fingerprint)
        self.notifier = sdnotify.SystemdNotifier()
        self.started_at = utcnow()
        self.stopping = asyncio.Event()
        self.last_reload_error: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------------ lifecycle

    def _launch(self, job: str, trigger: str, kind: str = "backup",
                tag: str | None = None) -> None:
        from kbackup.runner import RunnerBusy

        if kind == "backup":
            try:
                self.runner.submit_backup(job, trigger, tag=tag)
            except RunnerBusy as exc:
                log.warning("event=schedule.skipped job=%s reason=%r", job, str(exc))
            return
        newest = self.catalog.last_complete_backup(job)
        if newest is None:
            log.warning("event=verify.skipped job=%s reason=%s", job, "no complete backup yet")
            return
        self.submit_verify(newest, self.config.jobs[job].verify.level, trigger)

    def submit_restore(self, plan: Any, caller: dict[str, Any]) -> Any:
        """Queue a restore; it shares the job's slot with backups (never both at once)."""
        from kbackup.jobs.restore import RestoreRun

        async def work(run: Any, config: Config) -> str | None:
            restore = RestoreRun(config, self.storages, self.catalog, plan, run.progress,
                                 run.id, caller)
            await restore.run()
            return None

        return self.runner.submit(plan.job, "restore", "manual", work, target_id=plan.backup_id)

    def submit_verify(self, backup: dict[str, Any], level: str, trigger: str) -> Any:
        """Queue a verification of one backup (read-only: may run beside the job's backups)."""
        from kbackup.jobs.verify import VerifyRun

        async def work(run: Any, config: Config) -> str | None:
            verify = VerifyRun(config, config.jobs.get(job), self.storages,
                               self.catalog, backup, level, run.progress, run.id)
            result = await verify.run()
            return None if result["ok"] else f"{level} verification failed: {result['problem']}"

        job = local_job(backup)  # another host's backup: read with this host's job of its name
        return self.runner.submit(job, "verify", trigger, work,
                                  key=f"verify:{backup['id']}", target_id=backup["id"])

    def notify(self, message: str) -> None:
        self.notifier.notify(message)

    async def recover(self) -> None:
        """Runs the last daemon never finished are failed; their leftovers are removed."""
        interrupted = self.catalog.interrupted_runs()
        for run in interrupted:
            self.catalog.finish_run(run["id"], "failed", "interrupted: daemon stopped during run")
            if self.catalog.get_backup(run["id"]) is not None:
                self.catalog.mark_backup_failed(run["id"], "interrupted: daemon stopped")
        known = {r["id"] for r in interrupted}
        for storage in self.storages.values():
            if storage.append_only:  # nothing is deleted there: leftovers stay
                continue
            try:
                # Bounded: an unreachable off-site target must not hold back READY=1.
                async with asyncio.timeout(STARTUP_STORAGE_CHECK):
                    removed = await clean_incomplete(storage, known, utcnow(), ORPHAN_AGE)
            except (StorageError, TimeoutError) as exc:
                log.warning("event=storage.unreachable target=%s error=%r", storage.name,
                            str(exc) or "no answer within the start-up check")
                continue
            for key in removed:
                log.warning("event=partial.removed target=%s key=%s", storage.name, key)

    async def start(self) -> None:
        from kbackup.api.server import start_api

        await check_locks(self.storages)
        await self.recover()
        self.scheduler.configure(self.config)
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        self.api_runner, self.listener = await start_api(Services(self),
                                                         self.config.daemon.socket)
        await self.monitor.start()
        self._tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))
        self.notify("READY=1")
        self._update_status()
        log.info(
            "event=daemon.ready version=%s socket=%s jobs=%d",
            __version__,
            self.config.daemon.socket,
            len(self.config.jobs),
        )

    async def _watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        interval = usec / 2e6 if usec and (not pid or int(pid) == os.getpid()) else 0
        while True:
            if interval:
                self.notify("WATCHDOG=1")
            self._update_status()
            await asyncio.sleep(interval or 5.0)

    def _update_status(self) -> None:
        running = list(self.runner.active.values())
        if running:
            parts = []
            for run in running:
                pct = run.progress.percent
                parts.append(
                    f"{run.job}: {run.progress.phase}" + (f" {pct:.0f}%" if pct is not None else "")
                )
            self.notify("STATUS=" + "; ".join(parts))
        else:
            self.notify(f"STATUS=idle, {len(self.config.jobs)} jobs scheduled")

    async def reload(self) -> str | None:
        """Apply a new config; a bad one is rejected and the old one keeps running."""
        # MONOTONIC_USEC (same datagram): Type=notify-reload (systemd >= 253) takes RELOADING=1
        # as the answer to its SIGHUP only with a timestamp later than the signal.
        import time

        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
        try:
            new = load_config(self.config.directory)
            storages = build_storages(new)
            await check_locks(storages)
        except (ConfigError, StorageError) as exc:
            self.last_reload_error = str(exc)
            for line in str(exc).splitlines():
                log.error("event=reload.rejected error=%r", line)
            self.notify("READY=1")
            return str(exc)
        for key in ("socket", "state_dir"):
            if getattr(new.daemon, key) != getattr(self.config.daemon, key):
                log.warning(
                    "event=reload.ignored field=daemon.%s reason=%s", key, "takes effect at restart"
                )
        self.config = new
        self.storages = storages
        await self.runner.reconfigure(new, storages)
        self.scheduler.configure(new)
        self.monitor.reconfigure(new, storages)
        self.last_reload_error = await self._listen(new)
        log.info("event=reload.ok jobs=%d", len(new.jobs))
        warn_missing_hook_programs(new)
        self.notify("READY=1")
        self._update_status()
        return None

    async def _listen(self, config: Config) -> str | None:
        """Move the TCP listener to what [web] now says; the reason when it cannot."""
        try:
            await self.listener.apply(config.settings.web)
        except OSError as exc:  # the port is taken, the certificate does not load
            log.error("event=web.listen_failed address=%s error=%r", config.settings.web.listen,
                      str(exc))
            return f"web.listen: {config.settings.web.listen}: {exc}"
        return None

    async def stop(self) -> None:
        self.notify("STOPPING=1")
        log.info("event=daemon.stopping running=%d", len(self.runner.active))
        await self.runner.shutdown(self.config.daemon.shutdown_grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if getattr(self, "api_runner", None) is not None:
            await self.api_runner.cleanup()
        await self.monitor.stop()
        self.catalog.close()
        log.info("event=daemon.stopped")

    # ------------------------------------------------------------------ queries

    def job_status(self, name: str) -> dict[str, Any]:
        last_run = self.catalog.last_run(name)
        last_backup = self.catalog.last_complete_backup(name)
        active = self.runner.active.get(name)
        next_run = self.scheduler.next_run(name)
        age = None
        if last_backup and last_backup["finished_at"]:
            when = parse_iso(last_backup["finished_at"])
            age = (self.clock.now() - when).total_seconds() if when else None
        return {
            "job": name,
            "running": active.as_dict() if active else None,
            "last_run": None
            if last_run is None
            else {
                k: last_run[k]
                for k in ("id", "status", "trigger", "started_at", "finished_at", "error")
            },
            "last_backup": None
            if last_backup is None
            else {
                "id": last_backup["id"],
                "finished_at": last_backup["finished_at"],
                "age_seconds": age,
                "size_bytes": last_backup["size_bytes"],
            },
            "next_run": iso(next_run),
            "health": self.monitor.job_health(name),
            "paused": pause_view(self.pause_now(name)),
            "restore_test": self.catalog.last_restore_test(name),
        }

    def pause_now(self, name: str) -> dict[str, Any] | None:
        """The job's pause in force now (a catalog record), else None."""
        return self.catalog.active_pause(name, self.clock.now())

    def status(self) -> dict[str, Any]:
        return {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "started_at": iso(self.started_at),
                "config_dir": str(self.config.directory),
                "running": len(self.runner.active),
                "max_concurrent_jobs": self.config.daemon.max_concurrent_jobs,
                "last_reload_error": self.last_reload_error,
                "health": self.monitor.daemon_health(),
            },
            "running": [run.as_dict() for run in self.runner.active.values()],
            "jobs": [self.job_status(name) for name in sorted(self.config.jobs)],
        }


# ---------------------------------------------------------------------- entry point


async def serve(config: Config) -> int:
    try:
        daemon = Daemon(config, clock_from_env())
    except (CatalogError, StoreError, SigningError) as exc:  # e.g. a newer catalog
        log.error("event=daemon.start_failed error=%r", str(exc))
        return 1
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(daemon.reload()))
    try:
        await daemon.start()
    except (OSError, LockMissing) as exc:
        log.error("event=daemon.start_failed error=%r", str(exc))
        return 1
    await daemon.stopping.wait()
    await daemon.stop()
    return 0


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt() names


def tune_malloc(arenas: int = 2) -> None:
    """Two glibc malloc settings for a pipeline that moves 1 MiB buffers between threads.

    Arenas: glibc gives every thread that allocates its own arena, so memory fragments across
    many; two are enough here (MALLOC_ARENA_MAX=2, independent of how the daemon is started).
    Thresholds: glibc serves a 1 MiB request with a fresh mmap() by default, so every chunk
    read from pg_dump cost 256 page faults and as many freshly zeroed pages. Keeping such
    buffers in the heap (and at most 16 MiB of free memory per arena) lets them be reused:
    measured on a 600 MB dump through the pipeline: 4x fewer page faults, ~10% less CPU."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
        libc.mallopt(M_MMAP_THRESHOLD, 2 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 16 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune



def warn_missing_hook_programs(config: Config) -> None:
    """A hook whose program is not there fails its run later: say so when the config loads,
    in the daemon's own log (its PATH and mounts are what count, not `config check`'s)."""
    for name in sorted(config.jobs):
        for problem in config.jobs[name].hooks.missing_programs():
            log.warning("event=config.hook_missing job=%s problem=%r", name, problem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kbackupd", description="kbackup daemon")
    parser.add_argument("--config-dir", help="default: $KBACKUP_CONFIG_DIR or /etc/kbackup")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"kbackupd {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config_dir)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.check:
        print(f"{config.directory}: OK, {len(config.jobs)} job(s)")
        return 0
    setup_logging(config.daemon.log_level)
    warn_missing_hook_programs(config)
    tune_malloc()
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
