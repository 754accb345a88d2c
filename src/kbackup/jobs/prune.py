"""Apply a job's retention policy on each of its storage targets.

Decisions are made per target (a partial backup may exist on one target and not another),
deletion removes the manifest first so an interrupted prune never leaves a backup that looks
complete (a backup under S3 Object Lock on a target is kept there until the lock ends, as the
manifest records it; the objects' own locks are read again before deleting), and leftovers
of runs that never committed (older than a day) are cleaned up too.
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


async def prune_job(config: Config, job: JobConfig, storages: dict[str, Storage],
                    catalog: Catalog, now: datetime, dry_run: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"job": job.name, "dry_run": dry_run, "targets": {},
                              "removed": [], "orphans": [], "errors": []}
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
        if dry_run:
            continue
        for decision in decisions:
            if decision.keep:
                continue
            backup_id = decision.backup.id
            try:
                await delete_backup(storage, job.name, backup_id, now)
            except StorageError as exc:
                report["errors"].append(f"{target_name}: {backup_id}: {exc}")
                continue
            row = rows[backup_id]
            row["targets"][target_name] = "pruned"
            holders = [t for t, state in row["targets"].items() if state == "complete"]
            catalog.set_backup_targets(backup_id, row["targets"],
                                       row["status"] if holders else "pruned")
            report["removed"].append({"id": backup_id, "target": target_name})
            log.info("event=prune.removed job=%s target=%s backup=%s", job.name, target_name,
                     backup_id)
        try:
            removed = await clean_incomplete(storage, set(), now, ORPHAN_AGE)
        except StorageError as exc:
            report["errors"].append(f"{target_name}: cleaning leftovers: {exc}")
            continue
        for key in removed:
            report["orphans"].append({"target": target_name, "key": key})
            log.warning("event=prune.orphan_removed target=%s key=%s", target_name, key)
    return report

