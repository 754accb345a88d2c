"""Delete one backup by hand: from every target that holds it, or from one (--target).

Planned first (`plan_delete`: what goes, what stays, which guard would be overridden;
nothing is touched), then carried out (`execute_delete`). On each target the objects go the
way retention removes them (repository.delete_backup: manifest first, then the objects).

Refusals (DeleteRefused, HTTP 409), checked when the deletion would leave no complete copy:
- the newest complete backup of its job, and deleting below the job's `[retention] min_keep`
  complete backups: both overridable with force (safety backups, trigger `pre-restore`, are
  not counted, as in retention);
- a backup that a run is using (a restore or verification reading it, the backup run writing
  it, also queued): never, not even with force;
- a copy under S3 Object Lock (the manifest's `object_lock` date for that target is still
  ahead): never, not even with force; S3 would refuse it anyway;
- a copy on an append-only target (storage.append_only): never; `kbackupctl prune --target`
  deletes there with the credentials that may. The objects' own locks are
  read again before the first object is deleted (repository.delete_backup).
While a deletion runs, the targets it works on are marked `deleting` in the catalog, so a
verification or restore started meanwhile does not read from them.

Every deletion, also a failed one, is recorded: in the catalog (audit.AuditLog) and as JSON on
every target of the job (`_audit/deletions/YYYY/MM/<deletion-id>.json`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kbackup.audit import AuditLog
from kbackup.catalog import Catalog, iso, utcnow
from kbackup.config import Config
from kbackup.errors import NotFound, Refused
from kbackup.fleet import is_other_host
from kbackup.repository import (
    backup_prefix,
    delete_backup,
    manifest_key,
    new_backup_id,
    recorded_lock,
    write_audit,
)
from kbackup.runner import ActiveRun
from kbackup.storage import Storage, StorageError

log = logging.getLogger("kbackup.delete")
_IN_PROGRESS: set[str] = set()  # backup ids being deleted right now


class DeleteRefused(Refused):
    """The deletion is refused before anything is touched (an unknown backup or copy is a
    NotFound)."""


def plan_delete(config: Config, catalog: Catalog, storages: dict[str, Storage],
                using: Sequence[ActiveRun], backup_id: str, target: str | None,
                force: bool, now: datetime | None = None) -> dict[str, Any]:
    """What a deletion would remove and keep; raises DeleteRefused or NotFound. Touches
    nothing."""
    row = catalog.get_backup(backup_id)
    if row is None:
        raise NotFound(f"no backup with id {backup_id!r} (see `kbackupctl backups`)")
    job = row["job"]
    copies = {t: state for t, state in row["targets"].items() if state != "pruned"}
    if target is not None:
        if target not in copies:
            held = ", ".join(copies) or "none"
            raise NotFound(f"backup {backup_id} has no copy on target {target!r}"
                           f" (its targets: {held})")
        chosen = [target]
    else:
        chosen = list(copies)
    for name in chosen:
        if is_other_host(name):
            raise DeleteRefused(f"backup {backup_id} is another host's ({name}), seen read-only"
                                " with `catalog rescan --all-hosts`: only that host deletes it")
        if name not in storages:
            raise DeleteRefused(f"target {name} of backup {backup_id} is not configured here:"
                                " its copy cannot be deleted (choose another with --target)")
    for name in chosen:
        if getattr(storages[name], "append_only", False):  # a Storage (tests pass stand-ins)
            raise DeleteRefused(f"target {name} is append-only: kbackupd never deletes there;"
                                f" {job}'s backups past retention go with `kbackupctl prune"
                                f" {job} --target {name} --credentials-dir DIR` (as root)")
    for name in chosen:
        until = recorded_lock(row.get("manifest"), name)
        if until is not None and until > (now or utcnow()):
            raise DeleteRefused(f"backup {backup_id} is locked on target {name} until"
                                f" {iso(until)}")
    if backup_id in _IN_PROGRESS:
        raise DeleteRefused(f"backup {backup_id} is being deleted already")
    for run in using:
        raise DeleteRefused(f"backup {backup_id} is in use by a running {run.kind} (run"
                            f" {run.id}); it cannot be deleted, not even with --force, until"
                            " that run has ended")
    if row["status"] == "running":
        raise DeleteRefused(f"backup {backup_id} is still being written; it cannot be deleted,"
                            " not even with --force, until its run has ended")
    remaining = [t for t, state in row["targets"].items()
                 if state == "complete" and t not in chosen]
    overridden: list[str] = []
    if not remaining and row["status"] == "complete" and row["trigger"] != "pre-restore":
        good = [b["id"] for b in catalog.backups(job, "complete")
                if b["trigger"] != "pre-restore"]
        if good and good[0] == backup_id:
            overridden.append(f"backup {backup_id} is the newest complete backup of job {job}")
        job_config = config.jobs.get(job)
        min_keep = job_config.retention.min_keep if job_config is not None else 0
        left = len(good) - (1 if backup_id in good else 0)
        if left < min_keep:
            overridden.append(f"deleting backup {backup_id} would leave {left} complete"
                              f" backup{'' if left == 1 else 's'} of job {job}, fewer than"
                              f" its [retention] min_keep = {min_keep}")
    if overridden and not force:
        raise DeleteRefused(f"{overridden[0]}; --force to delete it anyway")
    return {
        "backup_id": backup_id, "job": job, "status": row["status"], "trigger": row["trigger"],
        "started_at": row["started_at"], "finished_at": row["finished_at"],
        "size_bytes": row["size_bytes"],
        "targets": [{"target": name, "state": row["targets"][name]} for name in chosen],
        "remaining_targets": remaining, "removes_backup": not remaining,
        "force": force, "overridden": overridden, "confirm_word": backup_id,
    }


async def measure(plan: dict[str, Any], storages: dict[str, Storage]) -> None:
    """Add to each target of a plan what is stored there: objects and bytes (a failed or
    partial backup may have leftovers on a target, or nothing)."""
    prefix = backup_prefix(plan["job"], plan["backup_id"])
    for item in plan["targets"]:
        try:
            found = await storages[item["target"]].list(prefix)
        except StorageError as exc:
            item.update(objects=None, size_bytes=None, error=str(exc))
            continue
        item.update(objects=len(found), size_bytes=sum(i.size for i in found))


async def execute_delete(config: Config, catalog: Catalog, audit: AuditLog,
                         storages: dict[str, Storage], plan: dict[str, Any],
                         caller: dict[str, Any], reason: str | None,
                         now: datetime) -> dict[str, Any]:
    """Carry out a plan made just before (no await in between); returns the audit record."""
    backup_id, job = plan["backup_id"], plan["job"]
    row = catalog.get_backup(backup_id)
    assert row is not None
    _IN_PROGRESS.add(backup_id)
    try:
        targets = dict(row["targets"])
        chosen = [item["target"] for item in plan["targets"]]
        for name in chosen:  # verifications and restores read only from "complete" copies
            targets[name] = "deleting"
        catalog.set_backup_targets(backup_id, targets, row["status"])
        deleted: list[str] = []
        errors: dict[str, str] = {}
        for name in chosen:
            storage = storages[name]
            try:
                await delete_backup(storage, job, backup_id, now)
            except StorageError as exc:
                errors[name] = str(exc) or type(exc).__name__
                targets[name] = await _state_after_failure(storage, job, backup_id,
                                                           row["targets"][name], errors[name])
                log.error("event=backup.delete_failed job=%s backup=%s target=%s error=%r",
                          job, backup_id, name, errors[name])
                continue
            deleted.append(name)
            del targets[name]
        holders = [t for t, state in targets.items() if state == "complete"]
        if not holders and not errors:
            catalog.forget_backup(backup_id)  # on no target any more: no longer a backup
        else:
            catalog.set_backup_targets(backup_id, targets,
                                       row["status"] if holders else "failed")
            if not holders:
                catalog.set_backup_status(backup_id, "failed", "deletion incomplete: " + "; ".join(
                    f"{t}: {e}" for t, e in errors.items()))
    finally:
        _IN_PROGRESS.discard(backup_id)
    record = {
        "deletion_id": new_backup_id(now), "job": job, "backup_id": backup_id,
        "deleted_at": iso(now), "user": caller.get("user", "?"), "uid": caller.get("uid", -1),
        "targets": deleted, "remaining_targets": holders, "forced": bool(plan["force"]),
        "overridden": plan["overridden"], "reason": reason, "errors": errors,
        "backup": {k: plan[k] for k in ("status", "trigger", "started_at", "finished_at",
                                        "size_bytes")},
    }
    audit.add_deletion(record)
    job_config = config.jobs.get(job)
    names = job_config.targets if job_config is not None else list(row["targets"])
    audit_failed = await write_audit([storages[n] for n in names if n in storages],
                                     "deletions", record["deletion_id"], record, now)
    log.info("event=backup.deleted job=%s backup=%s targets=%s user=%s forced=%s errors=%d"
             " reason=%r", job, backup_id, ",".join(deleted) or "-", record["user"],
             record["forced"], len(errors), reason)
    return {**record, "catalog": "removed" if not holders and not errors else "updated",
            "audit_errors": audit_failed}


async def _state_after_failure(storage: Storage, job: str, backup_id: str, before: str,
                               error: str) -> str:
    """A copy whose manifest is still there is intact (the manifest goes first); otherwise
    what is left is no backup and a later deletion has to remove it."""
    try:
        intact = await storage.stat(manifest_key(job, backup_id)) is not None
    except StorageError:
        intact = False
    return before if intact else f"delete failed: {error}"
