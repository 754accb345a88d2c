"""`kbackupctl prune JOB --target T [--credentials-dir DIR]`: retention applied by kbackupctl
itself on one target, with credentials the daemon does not have.

On an append-only target (README "Append-only targets") kbackupd never deletes: the backups
past retention wait there. Whoever may delete (root on the server, or another machine with a
copy of the configuration directory) runs this: it reads the configuration, opens the target
with the delete credentials (DIR/<target>.access_key_id and DIR/<target>.secret_access_key
for S3, DIR/<target>.password for WebDAV; without --credentials-dir the files the target's
delete_* fields name, else its ordinary ones), and removes what retention removes, the way
the daemon would (repository.delete_backup: manifest first, locks read first), then the
leftovers of failed runs. Which backups go: the daemon's decision when it answers (a dry-run
prune: it knows verifications), otherwise retention over the manifests on the target. Then
the daemon, if it answers, rescans its catalog. Heavy imports (config, storage) only here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kbackup.ctl.client import Client, CliError, segment
from kbackup.ctl.output import emit_json

CREDENTIAL_FILES = {"s3": {"access_key_id_file": "access_key_id",
                           "secret_access_key_file": "secret_access_key"},
                    "webdav": {"password_file": "password"}}


def cmd_prune_target(client: Client, args: argparse.Namespace) -> int:
    from kbackup.config import ConfigError, load_config

    try:
        config = load_config(args.config_dir)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    job = config.jobs.get(args.job)
    if job is None:
        raise CliError(f"no job {args.job!r} in {config.directory} (jobs:"
                       f" {', '.join(sorted(config.jobs)) or 'none'})")
    if args.target not in job.targets or args.target not in config.storage:
        raise CliError(f"job {job.name} has no target {args.target!r} (its targets:"
                       f" {', '.join(job.targets)})")
    target = deleting_config(args.target, config.storage[args.target], args.credentials_dir)
    daemon = _daemon_plan(client, job.name, args.target)
    report = asyncio.run(_apply(config, job, args.target, target, daemon, args.dry_run))
    if not args.dry_run and daemon is not None:
        try:
            report["rescan"] = client.call("POST", "/v1/catalog/rescan", {})
        except CliError as exc:  # what was deleted is still reported
            report["errors"].append(f"catalog rescan: {exc}")
    return _print(report, args)


def deleting_config(name: str, table: Any, credentials_dir: str | None) -> Any:
    """The target's configuration with the credentials that may delete there."""
    update: dict[str, Any] = {"append_only": False}
    files = CREDENTIAL_FILES.get(table.type, {})
    if credentials_dir is not None:
        for field, suffix in files.items():
            path = Path(credentials_dir).absolute() / f"{name}.{suffix}"
            if not path.is_file():
                raise CliError(f"--credentials-dir {credentials_dir}: {path.name} is missing"
                               f" (the delete {suffix} of target {name})")
            update[field] = path
    elif table.type != "local":
        delete = table.delete_files()
        update.update({field: delete[suffix] for field, suffix in files.items()
                       if suffix in delete})
    if table.type == "webdav" and table.delete_username is not None:
        update["username"] = table.delete_username
    return table.model_copy(update=update)


def _daemon_plan(client: Client, job: str, target: str) -> list[str] | None:
    """What the daemon's retention removes on the target (None: the daemon does not answer;
    a refusal, an unknown job, is an error)."""
    try:
        report = client.call("POST", f"/v1/jobs/{segment(job)}/prune", {"dry_run": True})
    except CliError as exc:
        if exc.code == 3:  # not running, not reachable
            return None
        raise
    return [d["id"] for d in report.get("targets", {}).get(target, []) if not d["keep"]]


async def _apply(config: Any, job: Any, name: str, table: Any, daemon: list[str] | None,
                 dry_run: bool) -> dict[str, Any]:
    from kbackup.jobs.prune import ORPHAN_AGE
    from kbackup.repository import clean_incomplete, delete_backup
    from kbackup.storage import StorageError, open_storage

    now = datetime.now(UTC)
    report: dict[str, Any] = {"job": job.name, "target": name, "dry_run": dry_run,
                              "decided_by": "kbackupd" if daemon is not None else "manifests",
                              "removed": [], "errors": [], "orphans": []}
    try:
        storage = open_storage(name, table)
        storage.append_only = False
        remove = daemon if daemon is not None else await _manifest_plan(config, job, storage,
                                                                        now)
    except StorageError as exc:
        raise CliError(str(exc)) from None
    report["remove"] = remove
    if dry_run:
        return report
    for backup_id in remove:
        try:
            await delete_backup(storage, job.name, backup_id, now)
        except StorageError as exc:
            report["errors"].append(f"{name}: {backup_id}: {exc}")
            continue
        report["removed"].append(backup_id)
    try:
        report["orphans"] = await clean_incomplete(storage, set(), now, ORPHAN_AGE)
    except StorageError as exc:
        report["errors"].append(f"{name}: cleaning leftovers: {exc}")
    return report


async def _manifest_plan(config: Any, job: Any, storage: Any, now: datetime) -> list[str]:
    """Retention over the manifests on the target (no catalog here: no verifications)."""
    from kbackup.repository import list_manifests, recorded_lock
    from kbackup.retention import Candidate, decide
    from kbackup.times import parse_iso

    candidates = []
    for manifest in await list_manifests(storage, job.name):
        started = parse_iso(manifest.started_at)
        assert started is not None
        data = manifest.model_dump(mode="json")
        status = "partial" if data.get("missing_components") else "complete"
        candidates.append(Candidate(manifest.id, started, status, manifest.trigger,
                                    tag=manifest.tag,
                                    locked_until=recorded_lock(data, storage.name)))
    decisions = decide(candidates, job.retention, config.job_timezone(job), now)
    return [d.backup.id for d in decisions if not d.keep]


def _print(report: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        emit_json(report)
        return 1 if report["errors"] else 0
    name = report["target"]
    source = ("kbackupd's retention" if report["decided_by"] == "kbackupd"
              else "retention over the manifests on the target (kbackupd did not answer)")
    print(f"target {name}: {len(report['remove'])} backup(s) past retention, decided by"
          f" {source}")
    for backup_id in report["remove"]:
        done = "would remove" if args.dry_run else (
            "removed" if backup_id in report["removed"] else "NOT removed")
        print(f"{done} {backup_id}")
    for key in report["orphans"]:
        print(f"removed leftover {name}:{key}")
    for problem in report["errors"]:
        print(f"error: {problem}", file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing was removed")
    elif "rescan" in report:
        print(f"kbackupd rescanned its catalog: {report['rescan']['found']} backups found")
    elif report["decided_by"] == "kbackupd":
        print("run `kbackupctl catalog rescan` so that kbackupd's catalog follows")
    else:
        print("kbackupd did not answer: run `kbackupctl catalog rescan` once it runs")
    return 1 if report["errors"] else 0
