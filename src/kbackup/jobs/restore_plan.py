"""Planning a restore: what it would drop, create or write, checked before anything is touched.

The plan is what `--dry-run` prints and what the user confirms; RestoreRun (restore.py)
carries it out. Everything that would fail after the safety backup (an unknown table, a
non-empty target, an unwritable directory) is refused here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kbackup.catalog import Catalog
from kbackup.config import Config
from kbackup.errors import RestoreRefused as RestoreRefused
from kbackup.repository import Component, Manifest, upgrade_manifest
from kbackup.sources.base import PlanRefused, RestoreOptions, Step
from kbackup.sources.drivers import (
    CONFIG_KIND,
    component_driver,
    driver_for_component,
    unreadable,
    unreadable_line,
)

RESTORE_HOOKS = ("before_restore", "after_restore")
__all__ = ["Plan", "RestoreRefused", "RestoreRequest", "Step", "make_plan", "resolve_backup"]


@dataclass
class RestoreRequest(RestoreOptions):
    """RestoreOptions as the API hands them over (POST /v1/restores)."""

    no_hooks: bool = False  # skip the job's before_restore/after_restore hooks (--no-hooks)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RestoreRequest:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise RestoreRefused(f"unknown restore option(s): {', '.join(unknown)}")
        if not isinstance(body.get("backup"), str) or not body["backup"]:
            raise RestoreRefused("give a backup id or 'latest'")
        return cls(**body)


@dataclass
class Plan:
    backup_id: str
    job: str
    steps: list[Step]
    safety_backup: list[str]
    request: dict[str, Any]
    hooks: dict[str, list[list[str]]] = field(default_factory=dict)  # the commands to run

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    def confirm_word(self) -> str:
        """What a person types to confirm: the name of what gets replaced."""
        return next((s.target for s in self.steps if s.destructive), "")

    def as_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "job": self.job, "destructive": self.destructive,
                "confirm_word": self.confirm_word(), "safety_backup": self.safety_backup,
                "steps": [asdict(s) for s in self.steps], "request": self.request,
                "hooks": self.hooks}


def resolve_backup(catalog: Catalog, request: RestoreRequest) -> dict[str, Any]:
    if request.backup == "latest":
        if not request.job:
            raise RestoreRefused("'latest' needs --job JOB")
        complete = [b for b in catalog.backups(request.job, "complete")
                    if b["trigger"] != "pre-restore"]
        candidates = [b for b in complete if b["trust"] != "untrusted" or request.force]
        if complete and not candidates:
            raise RestoreRefused(f"job {request.job} has only untrusted backups (newest"
                                 f" {complete[0]['id']}: {complete[0]['trust_reason']}); import"
                                 " the signing key that made them (`kbackupctl keys"
                                 " import-signing FILE`, then `catalog rescan`) or use --force")
        if not candidates:
            raise RestoreRefused(f"job {request.job} has no complete backup (try `kbackupctl"
                                 " catalog rescan` on a new server)")
        return candidates[0]
    row = catalog.get_backup(request.backup)
    if row is None:
        raise RestoreRefused(f"no backup with id {request.backup!r} (see `kbackupctl backups`)")
    if request.job and row["job"] != request.job:
        raise RestoreRefused(f"backup {row['id']} belongs to job {row['job']!r},"
                             f" not {request.job!r}")
    if row["manifest"]:
        upgrade_manifest(row["manifest"])  # a newer format is refused before anything else
    if row["trust"] == "untrusted" and not request.force:
        raise RestoreRefused(f"backup {row['id']} is untrusted: {row['trust_reason']}; use"
                             " --force to restore it anyway")
    if row["status"] == "corrupt" and not request.force:
        raise RestoreRefused(f"backup {row['id']} is corrupt ({row['error']}); use --force to"
                             " restore it anyway")
    if row["status"] not in ("complete", "partial", "corrupt") or not row["manifest"]:
        raise RestoreRefused(f"backup {row['id']} is {row['status']}: it cannot be restored")
    return row


async def make_plan(config: Config, catalog: Catalog, request: RestoreRequest) -> Plan:
    row = resolve_backup(catalog, request)
    manifest = Manifest.model_validate(row["manifest"])
    job = config.jobs.get(manifest.job)
    if job is None:
        raise RestoreRefused(f"backup {manifest.id} belongs to job {manifest.job!r}, which is"
                             " not configured here (its config tells where to restore)")
    components = _selected(manifest, request)
    components.sort(key=lambda c: component_driver(c.kind).restore_rank(c))
    steps: list[Step] = []
    safety: list[str] = []
    for component in components:
        try:
            planned = await component_driver(component.kind).plan(job, component, request)
        except PlanRefused as exc:
            raise RestoreRefused(str(exc)) from None
        steps.append(planned.step)
        safety += planned.safety_backup
    if all(s.kind == "skip" for s in steps):
        raise RestoreRefused("nothing to restore: " + "; ".join(s.detail for s in steps))
    hooks = {} if request.no_hooks else {
        h: job.hooks.commands(h) for h in RESTORE_HOOKS if job.hooks.commands(h)}
    return Plan(manifest.id, manifest.job, steps, safety, asdict(request), hooks)


def _selected(manifest: Manifest, request: RestoreRequest) -> list[Component]:
    """The components the request covers (never the config snapshot); refused if one of them
    (any, without --component) is of a kind this version cannot restore."""
    unknown = unreadable([c for c in manifest.components
                          if not request.component or c.name == request.component])
    if unknown is not None:
        raise RestoreRefused(f"backup {manifest.id}: {unreadable_line(unknown)}")
    components = [c for c in manifest.components
                  if (d := driver_for_component(c.kind)) and d.selected(c, request)]
    if request.component and not components:
        names = ", ".join(c.name for c in manifest.components if c.kind != CONFIG_KIND)
        raise RestoreRefused(f"backup {manifest.id} has no component {request.component!r}"
                             f" (it has: {names})")
    return components
