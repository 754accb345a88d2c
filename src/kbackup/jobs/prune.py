"""Apply a job's retention policy on each of its storage targets.

Decisions are made per target (a partial backup may exist on one target and not another),
deletion removes the manifest first so an interrupted prune never leaves a backup that looks
complete (a backup under S3 Object Lock on a target is kept there until the lock ends, as the
manifest records it; the objects' own locks are read again before deleting), and leftovers
of runs that never committed (older than a day) are cleaned up too.

On an append-only target (`storage.append_only`: `append_only = true`, or deleting takes other
credentials than the daemon's) nothing is deleted, not even leftovers: the backups past
retention are kept and reported as waiting (`waiting` in the report, INFO in the log and in
health, `WAITING`), for `kbackupctl prune JOB --target T` run by someone who may delete there
(ctl/prune_direct.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from kbackup.catalog import Catalog, parse_iso
from kbackup.config import Config, JobConfig
from kbackup.repository import clean_incomplete, delete_backup, recorded_lock
from kbackup.retention import Candidate, decide
from kbackup.storage import Storage, StorageError

log = logging.getLogger("kbackup.prune")
ORPHAN_AGE = timedelta(days=1)
# (job, append-only target) -> the backups past retention waiting there, as the last prune
# found them; health reports them (INFO). Forgotten at restart until the next prune.
WAITING: dict[tuple[str, str], list[str]] = {}


def waiting_hint(job: str, target: str) -> str:
    """The way out for backups an append-only target keeps."""
    return (f"append-only target: delete with `kbackupctl prune {job} --target {target}"
            " --credentials-dir DIR` (as root)")


async def prune_job(config: Config, job: JobConfig, storages: dict[str, Storage],
                    catalog: Catalog, now: datetime, dry_run: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"job": job.name, "dry_run": dry_run, "targets": {},
                              "removed": [], "orphans": [], "errors": [], "waiting": []}
    if not job.retention.configured:
        report["note"] = "no [retention] rules: every backup is kept"
        return report
    rows = {r["id"]: r for r in catalog.backups(job.name)}
    tz = config.job_timezone(job)
    for target_name in job.targets:
        storage = storages.get(target_name)
        if storage is None:
            continue
        held = [r for r in rows.values() if r["targets"].get(target_name) == "complete"
                and r["status"] in ("complete", "partial", "corrupt")]
        candidates = []
        for row in held:
            started = parse_iso(row["started_at"])
            assert started is not None
            verification = catalog.last_verification(row["id"])
            candidates.append(Candidate(row["id"], started, row["status"], row["trigger"],
                                        verified=bool(verification and verification["ok"]),
                                        tag=row.get("tag"),
                                        locked_until=recorded_lock(row.get("manifest"),
                                                                   target_name)))
        decisions = decide(candidates, job.retention, tz, now)
        report["targets"][target_name] = [
            {"id": d.backup.id, "keep": d.keep, "reasons": d.reasons,
             "started_at": rows[d.backup.id]["started_at"], "status": d.backup.status,
             "tag": d.backup.tag}
            for d in decisions]
        if storage.append_only:
            _report_waiting(report, job.name, target_name, decisions, dry_run)
            continue
        if dry_run:
            continue
        await _remove(report, job.name, storage, decisions, rows, catalog, now)
    return report


def _report_waiting(report: dict[str, Any], job: str, target: str, decisions: list[Any],
                    dry_run: bool) -> None:
    """An append-only target: the backups retention would remove stay, said once (INFO)."""
    ids = [d.backup.id for d in decisions if not d.keep]
    for entry in report["targets"][target]:
        if not entry["keep"]:
            entry["waiting"] = waiting_hint(job, target)
    report["waiting"] += [{"id": backup_id, "target": target} for backup_id in ids]
    if dry_run:
        return
    WAITING[(job, target)] = ids
    if ids:
        log.info("event=prune.waiting job=%s target=%s backups=%d hint=%r", job, target,
                 len(ids), waiting_hint(job, target))


async def _remove(report: dict[str, Any], job: str, storage: Storage, decisions: list[Any],
                  rows: dict[str, dict[str, Any]], catalog: Catalog, now: datetime) -> None:
    """Delete what retention removes on one target, then the leftovers of failed runs."""
    target_name = storage.name
    for decision in decisions:
        if decision.keep:
            continue
        backup_id = decision.backup.id
        try:
            await delete_backup(storage, job, backup_id, now)
        except StorageError as exc:
            report["errors"].append(f"{target_name}: {backup_id}: {exc}")
            continue
        row = rows[backup_id]
        row["targets"][target_name] = "pruned"
        holders = [t for t, state in row["targets"].items() if state == "complete"]
        catalog.set_backup_targets(backup_id, row["targets"],
                                   row["status"] if holders else "pruned")
        report["removed"].append({"id": backup_id, "target": target_name})
        log.info("event=prune.removed job=%s target=%s backup=%s", job, target_name,
                 backup_id)
    try:
        removed = await clean_incomplete(storage, set(), now, ORPHAN_AGE)
    except StorageError as exc:
        report["errors"].append(f"{target_name}: cleaning leftovers: {exc}")
        return
    for key in removed:
        report["orphans"].append({"target": target_name, "key": key})
        log.warning("event=prune.orphan_removed target=%s key=%s", target_name, key)
