"""What the API may ask of the daemon: jobs, backups, runs, restores, health and storage.

Request handlers (api/) get a `Services` and nothing else: they parse a request, call one
service, and answer its result (built by views.py) or let its KbackupError through to the
guard middleware, which maps the class to an HTTP status. The services read the daemon's
current config, catalog, storages and runner at each call, so a reload is seen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from kbackup.errors import KbackupError, NotFound, Refused
from kbackup.fleet import host_job, local_job, scan_other_hosts
from kbackup.jobs.prune import WAITING
from kbackup.repository import list_manifests
from kbackup.storage import StorageError
from kbackup.times import iso
from kbackup.views import backup_view, job_view, pause_view, run_view, verification_view

if TYPE_CHECKING:
    from kbackup.access import Access
    from kbackup.alerts.monitor import Monitor
    from kbackup.audit import AuditLog
    from kbackup.catalog import Catalog
    from kbackup.config import Config, JobConfig
    from kbackup.config.web import WebSection
    from kbackup.jobs.restore_plan import Plan, RestoreRequest
    from kbackup.runner import ActiveRun, Runner
    from kbackup.scheduler import Clock
    from kbackup.storage import Storage

log = logging.getLogger("kbackup.services")


class Core(Protocol):
    """What the services use of the daemon (daemon.Daemon is one): its current state and the
    few acts that belong to it."""

    config: Config
    catalog: Catalog
    storages: dict[str, Storage]
    runner: Runner
    monitor: Monitor
    clock: Clock
    audit: AuditLog
    access: Access

    def status(self) -> dict[str, Any]: ...
    def job_status(self, name: str) -> dict[str, Any]: ...
    def pause_now(self, name: str) -> dict[str, Any] | None: ...
    def submit_verify(self, backup: dict[str, Any], level: str,
                      trigger: str) -> tuple[ActiveRun, bool]: ...
    def submit_restore(self, plan: Any, caller: dict[str, Any]) -> tuple[ActiveRun, bool]: ...
    async def reload(self) -> str | None: ...


class _Service:
    def __init__(self, daemon: Core):
        self._daemon = daemon

    @property
    def config(self) -> Config:
        return self._daemon.config

    def job(self, name: str) -> JobConfig:
        """The job's config, or NotFound naming the jobs there are."""
        job = self.config.jobs.get(name)
        if job is None:
            known = ", ".join(sorted(self.config.jobs)) or "none configured"
            raise NotFound(f"no job named {name!r} (jobs: {known})")
        return job


class Jobs(_Service):
    def listing(self) -> list[dict[str, Any]]:
        daemon = self._daemon
        return [job_view(job, daemon.config.daemon.timezone,
                         daemon.job_status(name)["next_run"], daemon.pause_now(name))
                for name, job in sorted(daemon.config.jobs.items())]

    def run(self, name: str, label: str | None, force: bool) -> dict[str, Any]:
        """Start (or join) a manual backup; a paused job needs force."""
        daemon = self._daemon
        self.job(name)
        pause = daemon.catalog.active_pause(name, daemon.clock.now())
        if pause is not None and not force:
            raise Refused(paused_message(name, pause))
        run, coalesced = daemon.runner.submit_backup(name, "manual", label=label)
        return {"run_id": run.id, "backup_id": run.id, "coalesced": coalesced,
                "label": run.label}

    async def prune(self, name: str, dry_run: bool) -> dict[str, Any]:
        from kbackup.jobs.prune import prune_job

        daemon = self._daemon
        job = self.job(name)
        return await prune_job(daemon.config, job, daemon.storages, daemon.catalog,
                               daemon.clock.now(), dry_run)

    def pause(self, name: str, user: str, reason: str | None,
              seconds: float | None) -> dict[str, Any]:
        daemon = self._daemon
        self.job(name)
        now = daemon.clock.now()
        until = now + timedelta(seconds=seconds) if seconds else None
        record = daemon.catalog.set_pause(name, user, reason, until, now)
        log.info("event=job.paused job=%s by=%s reason=%r until=%s", name, user, reason or "",
                 record["until"] or "-")
        daemon.monitor.request_evaluation()
        return {"job": name, "paused": pause_view(record)}

    def resume(self, name: str, user: str) -> dict[str, Any]:
        daemon = self._daemon
        self.job(name)
        was = daemon.catalog.end_pause(name, user, daemon.clock.now())
        if was is not None:
            log.info("event=job.resumed job=%s by=%s", name, user)
            daemon.monitor.request_evaluation()
        return {"job": name, "resumed": was is not None, "was": pause_view(was)}

    def history(self, name: str, days: int) -> dict[str, Any]:
        """The job's backups and passed restore-tests of the last `days` days (charts)."""
        daemon = self._daemon
        self.job(name)
        now = daemon.clock.now()
        since = now - timedelta(days=days)
        return {"since": since, "until": now,
                "backups": daemon.catalog.job_history(name, since),
                "restore_tests": daemon.catalog.restore_tests(name, since)}

    async def keys(self) -> list[dict[str, Any]]:
        """Per job: what encryption needs and whether it is usable (a check result each)."""
        from kbackup.crypto import KeyProblem, check_job_keys

        report = []
        for name, job in sorted(self.config.jobs.items()):
            try:
                item = await asyncio.to_thread(check_job_keys, self.config, job)
                item.update(ok=True, reason=None)
            except KeyProblem as exc:
                item = {"job": name, "mode": job.encryption.mode, "ok": False,
                        "reason": str(exc), "problem": str(exc)}
            report.append(item)
        return report


def paused_message(job: str, pause: dict[str, Any]) -> str:
    """One line: why a manual run of a paused job is refused, and what to do."""
    until = f", until {pause['until']}" if pause["until"] else ""
    return (f"job {job} is paused since {pause['paused_at']} by {pause['paused_by']}"
            f" ({pause['reason'] or 'no reason given'}{until}): run it anyway with --force,"
            f" or `kbackupctl resume {job}`")


class Backups(_Service):
    def row(self, backup_id: str) -> dict[str, Any]:
        row = self._daemon.catalog.get_backup(backup_id)
        if row is None:
            raise NotFound(f"no backup with id {backup_id!r} (see `kbackupctl backups`)")
        return row

    def listing_json(self, job: str | None, status: str | None = None,
                     label: str | None = None, limit: int = 50, offset: int = 0) -> str:
        """One page of backups, newest first, with their last verification and the total:
        {"items": [...], "total": N, "limit": L, "offset": O} as JSON text."""
        catalog = self._daemon.catalog
        items = catalog.backup_listing_json(job, status, label, limit, offset)
        total = catalog.count_backups(job, status, label)
        return f'{{"items": {items}, "total": {total}, "limit": {limit}, "offset": {offset}}}'

    def show(self, backup_id: str) -> dict[str, Any]:
        catalog = self._daemon.catalog
        row = self.row(backup_id)
        view = backup_view(row, catalog.last_verification(row["id"]), full=True)
        view["verifications"] = catalog.verifications(row["id"])
        return view

    def verify(self, backup_id: str, level: str) -> dict[str, Any]:
        row = self.row(backup_id)
        if row["status"] not in ("complete", "partial", "corrupt") or not row["manifest"]:
            raise Refused(f"backup {backup_id} is {row['status']}: only complete backups can"
                          " be verified")
        if local_job(row) not in self.config.jobs:
            raise Refused(f"backup {backup_id} belongs to job {local_job(row)!r}, which is not"
                          " configured here")
        run, coalesced = self._daemon.submit_verify(row, level, "manual")
        return {"run_id": run.id, "backup_id": backup_id, "level": level,
                "coalesced": coalesced}

    def last_verifications(self, backup_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """The newest verification of each backup (as backup_view shows it), by id."""
        found = self._daemon.catalog.last_verifications(backup_ids)
        return {i: verification_view(found.get(i)) for i in backup_ids}

    async def delete(self, backup_id: str, target: str | None, force: bool, dry_run: bool,
                     reason: str | None, caller: dict[str, Any]) -> dict[str, Any]:
        from kbackup.jobs.delete import execute_delete, measure, plan_delete

        daemon = self._daemon
        plan = plan_delete(daemon.config, daemon.catalog, daemon.storages,
                           daemon.runner.using(backup_id), backup_id, target, force,
                           daemon.clock.now())
        if dry_run:
            await measure(plan, daemon.storages)
            return {"dry_run": True, "plan": plan}
        return await execute_delete(daemon.config, daemon.catalog, daemon.audit,
                                    daemon.storages, plan, caller, reason, daemon.clock.now())

    def audit(self, job: str | None, limit: int, offset: int) -> dict[str, Any]:
        return self._daemon.audit.history(job, limit, offset)

    async def rescan(self, all_hosts: bool = False) -> dict[str, Any]:
        """Rebuild the backup index from the manifests on every storage target; with
        all_hosts, the other hosts' backups beside this host's folder too (fleet.py)."""
        from kbackup.signing import keyring, trust_of

        daemon = self._daemon
        keys = await asyncio.to_thread(keyring, daemon.config.daemon.state_dir)
        found: dict[str, dict[str, Any]] = {}
        errors = []
        for name, storage in daemon.storages.items():
            try:
                manifests = await list_manifests(storage)
            except StorageError as exc:
                errors.append(f"{name}: {exc}")
                continue
            for manifest in manifests:
                entry = found.setdefault(manifest.id, {"manifest": manifest, "targets": {}})
                entry["targets"][name] = "complete"
                if "trust" not in entry or not entry["trust"].trusted:  # a signed copy wins
                    entry.update(manifest=manifest, trust=trust_of(manifest, keys))
        others: dict[str, dict[str, Any]] = {}
        if all_hosts:
            others, host_errors = await scan_other_hosts(daemon.config)
            errors += host_errors
            others = {k: v for k, v in others.items() if k not in found}
        untrusted = 0
        for backup_id, entry in {**found, **others}.items():
            m = entry["manifest"]
            job = host_job(entry["host"], m.job) if "host" in entry else m.job
            daemon.catalog.upsert_backup(
                backup_id, job, "complete", m.trigger, m.started_at, m.finished_at,
                m.size_bytes, entry["targets"], m.model_dump(mode="json"), tag=m.tag,
                label=m.label,
            )
            trust = entry.get("trust") or trust_of(m, keys)
            daemon.catalog.set_backup_trust(backup_id, trust.state, trust.reason)
            if not trust.trusted:
                untrusted += 1
                log.warning("event=backup.untrusted backup=%s job=%s reason=%r", backup_id,
                            job, trust.reason)
        removed = 0 if errors else daemon.catalog.delete_backups_not_in({**found, **others})
        for (job, target), ids in list(WAITING.items()):  # pruned by `prune --target`
            WAITING[(job, target)] = [i for i in ids
                                      if target in found.get(i, {}).get("targets", {})]
        daemon.monitor.request_evaluation()  # health's retention_waiting follows
        log.info("event=catalog.rescan found=%d other_hosts=%d forgotten=%d errors=%d"
                 " untrusted=%d", len(found), len(others), removed, len(errors), untrusted)
        return {"found": len(found), "other_hosts": len(others), "forgotten": removed,
                "errors": errors, "untrusted": untrusted}


class Runs(_Service):
    def listing(self, job: str | None, limit: int, offset: int) -> tuple[list[Any], int]:
        daemon = self._daemon
        runs = [run_view(run, daemon.runner.find(run["id"]))
                for run in daemon.catalog.runs(job, limit, offset)]
        return runs, daemon.catalog.count_runs(job)

    async def get(self, run_id: str, wait: float) -> dict[str, Any]:
        """One run; with wait > 0 answer as soon as it ends (or after wait seconds), so a
        waiting client learns the end at once instead of at its next poll."""
        daemon = self._daemon
        run = daemon.catalog.get_run(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}")
        active = daemon.runner.find(run_id)
        if active and wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await active.done.wait()
            run = daemon.catalog.get_run(run_id) or run
        return run_view(run, active)


    def active(self) -> list[dict[str, Any]]:
        """The work under way now with its live progress (small: the dashboard polls it)."""
        return [run.as_dict() for run in self._daemon.runner.active.values()]


class Restores(_Service):
    async def plan(self, request: RestoreRequest) -> Plan:
        from kbackup.jobs.restore_plan import make_plan

        return await make_plan(self.config, self._daemon.catalog, request)

    def start(self, plan: Plan, yes: bool, caller: dict[str, Any]) -> dict[str, Any]:
        """Queue a planned restore; one that replaces data needs yes."""
        if plan.destructive and not yes:
            raise Refused(f"restore replaces {plan.confirm_word()!r}: confirm with yes=true"
                          " (kbackupctl asks you to type the name, or takes --yes)")
        run, _ = self._daemon.submit_restore(plan, caller)
        return {"run_id": run.id, "restore_id": run.id, "plan": plan.as_dict()}

    def listing(self, job: str | None, limit: int, offset: int) -> tuple[list[Any], int]:
        catalog = self._daemon.catalog
        return catalog.restores(job, limit, offset), catalog.count_restores(job)


class Health(_Service):
    @property
    def monitor(self) -> Monitor:
        return self._daemon.monitor

    def status(self) -> dict[str, Any]:
        return self._daemon.status()

    def health(self, job: str | None) -> dict[str, Any]:
        if job:
            self.job(job)
        return {"job": job, **self.monitor.health(job)}

    def alerts(self) -> Any:
        return self.monitor.manager.listing()

    def silence(self, match: str, seconds: float, reason: str, user: str) -> Any:
        try:
            return self.monitor.manager.silence(match, seconds, reason, user)
        except ValueError as exc:
            raise NotFound(str(exc)) from None

    def unsilence(self, match: str) -> dict[str, Any]:
        if not self.monitor.manager.unsilence(match):
            raise NotFound(f"no active silence for {match!r} (see kbackupctl alerts)")
        return {"match": match, "unsilenced": True}

    async def test(self, channel: str | None) -> dict[str, Any]:
        try:
            return {"results": await self.monitor.manager.test(channel)}
        except KeyError as exc:
            raise NotFound(str(exc.args[0])) from None

    def metrics_text(self) -> str:
        return self.monitor.metrics_text()


class Reports(_Service):
    """The report of the last `seconds` (kbackup.report), and sending it to a channel now."""

    def report(self, seconds: float) -> dict[str, Any]:
        until = self._daemon.clock.now()
        return self._daemon.monitor.digests.report(until - timedelta(seconds=seconds), until)

    async def send(self, channel: str, seconds: float) -> dict[str, Any]:
        digests = self._daemon.monitor.digests
        if channel not in digests.channels():
            known = ", ".join(sorted(digests.channels())) or "none configured"
            raise NotFound(f"no alert channel named {channel!r} (channels: {known})")
        until = self._daemon.clock.now()
        since = until - timedelta(seconds=seconds)
        error = await digests.send(channel, since, until, retries=0)
        return {"channel": channel, "ok": error is None, "error": error,
                "since": iso(since), "until": iso(until)}


class Targets(_Service):
    async def check(self, target: str | None) -> list[dict[str, Any]]:
        """Write, read back, list and delete a probe object on each (or one) target."""
        from kbackup.storage.probe import probe

        storages = self._daemon.storages
        if target is not None and target not in storages:
            known = ", ".join(sorted(storages)) or "none"
            raise NotFound(f"no storage target named {target!r} (targets: {known})")
        names = [target] if target else sorted(storages)
        return [await probe(storages[name]) for name in names]


class SourceProbes(_Service):
    async def check(self, job: str | None) -> list[dict[str, Any]]:
        """Each source of each job (or of one), probed at once by its driver; a probe that
        hangs is cut after a minute."""
        from kbackup.sources.drivers import driver

        jobs = [self.job(job)] if job is not None else [
            self.config.jobs[name] for name in sorted(self.config.jobs)]
        pairs = [(j, s) for j in jobs for s in j.sources]

        async def one(j: JobConfig, source: Any) -> dict[str, Any]:
            try:
                async with asyncio.timeout(60):
                    found = await driver(source.kind).check(source)
            except TimeoutError:
                found = {"ok": False, "reason": "no answer within 60 s"}
            except KbackupError as exc:
                found = {"ok": False, "reason": str(exc)}
            return {"job": j.name, "source": source.name, "kind": source.kind, **found}

        return list(await asyncio.gather(*(one(j, s) for j, s in pairs)))


class Admin(_Service):
    def access(self) -> tuple[str | None, str | None]:
        """The socket group (read access) and the admin group."""
        return self.config.daemon.socket_group, self.config.daemon.admin_group

    def web(self) -> WebSection:
        """[web]: the TCP listener, its host names, the session lifetime."""
        return self.config.settings.web

    async def reload(self) -> None:
        from kbackup.errors import ConfigError

        problem = await self._daemon.reload()
        if problem:
            raise ConfigError(["config rejected, the previous config keeps running:",
                               problem])


class SigningKeys(_Service):
    """The manifest signing key (kbackup.signing): its public half, the trusted keyring."""

    async def describe(self) -> dict[str, Any]:
        from kbackup.signing import describe

        return await asyncio.to_thread(describe, self.config.daemon.state_dir)

    async def import_key(self, pem: str) -> dict[str, str]:
        from kbackup.signing import import_public

        return await asyncio.to_thread(import_public, self.config.daemon.state_dir, pem)

    async def rotate(self) -> dict[str, str]:
        from kbackup.signing import rotate

        return await asyncio.to_thread(rotate, self.config.daemon.state_dir)


class Services:
    """The narrow face of the daemon that request handlers see."""

    def __init__(self, daemon: Core):
        self.jobs = Jobs(daemon)
        self.backups = Backups(daemon)
        self.runs = Runs(daemon)
        self.restores = Restores(daemon)
        self.health = Health(daemon)
        self.reports = Reports(daemon)
        self.storage = Targets(daemon)
        self.sources = SourceProbes(daemon)
        self.admin = Admin(daemon)
        self.signing = SigningKeys(daemon)
        self.access = daemon.access  # tokens, web users, sessions, throttles (TCP callers)
