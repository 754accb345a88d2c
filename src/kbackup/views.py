"""The JSON shapes the API returns for jobs, backups, runs and pauses (one place, so CLI and
API agree)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kbackup.config import JobConfig
    from kbackup.runner import ActiveRun


def pause_view(pause: dict[str, Any] | None) -> dict[str, Any] | None:
    """A pause record (catalog job_pauses) as the API shows it, or None."""
    if pause is None:
        return None
    return {k: pause[k] for k in ("paused_at", "paused_by", "reason", "until")}


def job_view(job: JobConfig, default_timezone: str, next_run: str | None,
             pause: dict[str, Any] | None) -> dict[str, Any]:
    """One configured job: schedules, targets, sources, next run, pause in force."""
    return {
        "name": job.name,
        "schedules": [s.model_dump() for s in job.schedules],
        "timezone": job.timezone or default_timezone,
        "targets": job.targets,
        "timeout_seconds": job.timeout,
        "sources": [s.describe() for s in job.sources],
        "next_run": next_run,
        "paused": pause_view(pause),
    }


def run_view(run: dict[str, Any], active: ActiveRun | None) -> dict[str, Any]:
    """A catalog run row, its hooks' results (kbackup.hooks) parsed; while it is running,
    with its live progress."""
    run["hooks"] = json.loads(run.get("hooks") or "[]")
    if active is not None and not active.done.is_set():
        run["progress"] = active.progress.as_dict()
    return run


def component_view(component: dict[str, Any]) -> dict[str, Any]:
    """A manifest component as listed: its object, and its driver's summary, whatever the
    kind (the drivers load here, on first use: the catalog imports this module)."""
    from kbackup.sources.drivers import driver_for_component

    view = {
        k: component.get(k)
        for k in ("name", "kind", "file", "size_bytes", "sha256", "raw_bytes", "encryption")
    }
    driver = driver_for_component(str(component.get("kind")))
    if driver is not None:  # its summary: database tables and rows, file count...
        view.update(driver.summary(component))
    return view


def verification_view(found: dict[str, Any] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    view = {k: found[k] for k in VERIFICATION_FIELDS}
    view["reason"] = found["problem"]  # the check-result field; "problem" kept for readers
    return view


def backup_view(row: dict[str, Any], verification: dict[str, Any] | None = None,
                full: bool = False) -> dict[str, Any]:
    manifest = row.get("manifest") or {}
    view = {k: row.get(k) for k in BACKUP_FIELDS}
    view["verification"] = verification_view(verification)
    view["targets"] = row.get("targets") or {}
    view["components"] = [component_view(c) for c in manifest.get("components", [])]
    if full:
        view["manifest"] = manifest or None
    return view


BACKUP_FIELDS = ("id", "job", "status", "trigger", "tag", "label", "started_at", "finished_at",
                 "size_bytes", "error", "trust", "trust_reason")
VERIFICATION_FIELDS = ("id", "level", "ok", "problem", "finished_at", "restore_seconds")


def _sql_object(pairs: list[tuple[str, str]]) -> str:
    return "json_object(" + ", ".join(f"'{key}', {value}" for key, value in pairs) + ")"


# backup_view(row, its last verification) as SQLite builds it, for listings: one JSON text
# per row of `backups AS b LEFT JOIN verifications AS v`, with no Python per field (10 000
# backups: a few hundred ms less than json.dumps per row). The components are the summary the
# catalog stores (component_view at upsert). A test holds it equal to backup_view.
BACKUP_LISTING_SQL = _sql_object(
    [(k, f"b.{k}") for k in BACKUP_FIELDS]
    + [("verification", "CASE WHEN v.id IS NULL THEN NULL ELSE "
        + _sql_object([(k, "json(CASE WHEN v.ok THEN 'true' ELSE 'false' END)" if k == "ok"
                        else f"v.{k}") for k in VERIFICATION_FIELDS]
                      + [("reason", "v.problem")]) + " END"),
       ("targets", "json(coalesce(b.targets, '{}'))")])
# The components summary (most of the bytes) is JSON already: appended as it is rather than
# parsed again by json() (a third of the listing's time).
BACKUP_LISTING_SQL = ("""'{"components":' || coalesce(b.components, '[]') || ',' || """
                      f"substr({BACKUP_LISTING_SQL}, 2)")
