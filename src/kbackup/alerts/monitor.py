"""The daemon's health loop: gather facts, evaluate (health.py), hand the results to the
alert manager; every minute by the daemon's Clock and right after every run.

Gathering is where the outside world is touched: statvfs of the disks (in a thread, bounded,
since a hung mount must not stall the loop) and a cheap probe of every storage target (every
5 minutes, bounded by a timeout). Also serves /metrics on TCP when [metrics] listen is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from kbackup import health, metrics
from kbackup.alerts.digest import Digests
from kbackup.alerts.heartbeat import Heartbeats
from kbackup.alerts.manager import AlertManager
from kbackup.alerts.store import AlertStore
from kbackup.catalog import Catalog
from kbackup.config import Config
from kbackup.health_facts import OK, CheckResult, DiskStat, Facts, RunningRun, worst
from kbackup.jobs.prune import WAITING
from kbackup.scheduler import Clock
from kbackup.storage import Storage
from kbackup.times import iso

log = logging.getLogger("kbackup.health")
EVALUATE_EVERY = 60.0
PROBE_EVERY = 300.0
PROBE_TIMEOUT = 30.0
DISK_TIMEOUT = 10.0
PROBE_KEY = "_kbackup/health-probe"


def disk_roles(config: Config) -> list[tuple[str, str, Path]]:
    """(key, role, path) of every place the daemon writes to: local targets, state, staging."""
    items = [(name, f"target {name}", cfg.path) for name, cfg in sorted(config.storage.items())
             if cfg.type == "local"]
    items.append(("state_dir", "state_dir", config.daemon.state_dir))
    if config.daemon.staging_dir is not None:
        items.append(("staging", "staging", config.daemon.staging_dir))
    return items


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def stat_disks(items: list[tuple[str, str, Path]]) -> list[DiskStat]:
    """One DiskStat per filesystem, naming every role it plays."""
    found: dict[int, DiskStat] = {}
    disks: list[DiskStat] = []
    for key, role, path in items:
        try:
            where = _existing(path)
            device = os.stat(where).st_dev
            vfs = os.statvfs(where)
        except OSError as exc:
            disks.append(DiskStat(key, str(path), [role], error=exc.strerror or str(exc)))
            continue
        if device in found:
            found[device].roles.append(role)
            continue
        disk = DiskStat(key, str(path), [role], free=vfs.f_bavail * vfs.f_frsize,
                        total=vfs.f_blocks * vfs.f_frsize)
        found[device] = disk
        disks.append(disk)
    return disks


async def probe(storage: Storage, config: Any) -> str | None:
    """None if the target answers; else why not."""
    try:
        if getattr(config, "type", None) == "local":
            path = Path(config.path)
            where = _existing(path)
            if not where.is_dir():
                return f"{where} is not a directory"
            if not os.access(where, os.W_OK | os.X_OK):
                return f"{where} is not writable by the daemon"
            return None
        async with asyncio.timeout(PROBE_TIMEOUT):
            await storage.stat(PROBE_KEY)
        return None
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except Exception as exc:  # any backend failure means "unreachable", with its reason
        return str(exc) or exc.__class__.__name__


class Monitor:
    def __init__(self, config: Config, catalog: Catalog, storages: dict[str, Storage],
                 clock: Clock, active: Callable[[], Iterable[Any]] = lambda: ()):
        self.config = config
        self.storages = storages
        self.clock = clock
        self.active = active
        self.store = AlertStore(catalog)
        self.manager = AlertManager(self.store, config, clock)
        self.heartbeats = Heartbeats(config, self.request_evaluation)  # issue 19
        self.digests = Digests(config, catalog, self.store, lambda: self.manager.channels,
                               clock)  # the report on each channel's `digest` cron
        self.results: list[CheckResult] = []
        self.disks: list[DiskStat] = []
        self.probes: dict[str, str | None] = {}
        self.checked_at: str | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._metrics_runner: web.AppRunner | None = None
        self._stopped = False

    def reconfigure(self, config: Config, storages: dict[str, Storage]) -> None:
        self.config = config
        self.storages = storages
        self.manager.reconfigure(config)
        self.heartbeats.reconfigure(config)
        self.digests.configure(config)
        self.probes = {k: v for k, v in self.probes.items() if k in storages}
        self.request_evaluation()

    # ------------------------------------------------------------------ loop

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._loop(), name="health"))
        self._tasks.append(asyncio.create_task(self._probe_loop(), name="storage-probe"))
        self.heartbeats.start()
        self.digests.start()
        address = self.config.settings.metrics.address
        if address is not None:
            await self._serve_metrics(*address)

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=5)
            if pending:
                log.warning("event=health.stop_slow tasks=%s",
                            ",".join(t.get_name() for t in pending))
        await self.heartbeats.stop()
        await self.digests.stop()
        await self.manager.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    def request_evaluation(self) -> None:
        self._wake.set()

    def run_started(self, run: Any) -> None:
        """Runner hook: the heartbeat's start ping."""
        self.heartbeats.run_started(run)

    def run_finished(self, run: Any, status: str, error: str | None) -> None:
        """Runner hook: notify per notify_on and ping, then evaluate at once."""
        self.manager.run_finished(run.job, run.kind, run.id, status, error)
        self.heartbeats.run_finished(run, status, error)
        self.request_evaluation()

    async def _loop(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                await self.evaluate()
            except Exception:  # a bug in a check must not stop the loop (nor the daemon)
                log.exception("event=health.failed")
            await self.clock.sleep_or_wake(EVALUATE_EVERY, self._wake)

    async def _probe_loop(self) -> None:
        while not self._stopped:
            await self.probe_storage()
            await self.clock.sleep(PROBE_EVERY)

    async def probe_storage(self) -> None:
        names = sorted(self.storages)
        found = await asyncio.gather(*(probe(self.storages[n], self.config.storage.get(n))
                                       for n in names))
        for name, error in zip(names, found, strict=True):
            if error and self.probes.get(name) is None:
                log.error("event=storage.unreachable target=%s error=%r", name, error)
            self.probes[name] = error
        self.request_evaluation()

    # ------------------------------------------------------------------ evaluation

    async def gather(self) -> Facts:
        now = self.clock.now()
        try:
            async with asyncio.timeout(DISK_TIMEOUT):  # not wait_for: it can eat a cancel
                disks = await asyncio.to_thread(stat_disks, disk_roles(self.config))
        except TimeoutError:
            disks = [DiskStat(key, str(path), [role], error="statvfs hung (a stuck mount?)")
                     for key, role, path in disk_roles(self.config)]
        for disk in disks:
            disk.samples = self.store.disk_samples(disk.key, disk.free, now)
        running = [RunningRun(r.id, r.job, r.kind, r.started_at) for r in self.active()]
        return Facts(now=now, disks=disks, storage=dict(self.probes),
                     channels=self.store.channel_states(), running=running,
                     heartbeats=dict(self.heartbeats.states),
                     seen=self.store.seen_since(self.config, now), waiting=dict(WAITING))

    async def evaluate(self) -> list[CheckResult]:
        """One full evaluation; alerts are opened, resolved and sent from its results."""
        facts = await self.gather()
        results = health.evaluate(self.config, self.store, facts)
        self.manager.process(results)
        self.results, self.disks = results, facts.disks
        self.checked_at = iso(facts.now)
        return results

    # ------------------------------------------------------------------ views

    def _view(self, results: list[CheckResult]) -> dict[str, Any]:
        if self.checked_at is None:
            return {"status": "unknown", "checked_at": None, "problems": [], "checks": []}
        return {
            "status": worst(r.severity for r in results),
            "checked_at": self.checked_at,
            "problems": [r.as_dict() for r in results if r.severity != OK],
            "checks": [r.as_dict() for r in results],
        }

    def job_health(self, job: str) -> dict[str, Any]:
        view = self._view(health.job_view(self.config, self.results, job))
        view.pop("checks")
        return view

    def daemon_health(self) -> dict[str, Any]:
        """Overall status (the worst of everything) and the daemon-wide problems."""
        view = self._view([r for r in self.results if r.job is None])
        view.pop("checks")
        if self.checked_at is not None:
            view["status"] = worst(r.severity for r in self.results)
        return view

    def health(self, job: str | None = None) -> dict[str, Any]:
        results = self.results if job is None else health.job_view(self.config, self.results,
                                                                   job)
        view = self._view(results)
        silences = self.store.silences(self.clock.now())
        firing = {a["key"]: a for a in self.store.firing()}
        for check in view["checks"]:
            alert = firing.get(check["key"])
            check["silenced"] = alert is not None and \
                self.manager.silence_for(alert, silences) is not None
        return view

    def metrics_text(self) -> str:
        return metrics.render(self.config, self.store, self.results, self.disks,
                              self.checked_at)

    async def _serve_metrics(self, host: str, port: int) -> None:
        async def handle(_request: web.Request) -> web.Response:
            return web.Response(body=self.metrics_text().encode(),
                                headers={"Content-Type": metrics.CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            log.error("event=metrics.listen_failed listen=%s:%d error=%r", host, port, str(exc))
            return
        self._metrics_runner = runner
        log.info("event=metrics.listening listen=%s:%d", host, port)
