"""Planning a restore: what it would drop, create or write, checked before anything is touched.

The plan is what `--dry-run` prints and what the user confirms; RestoreRun (restore.py)
carries it out. Everything that would fail after the safety backup (an unknown table, a
non-empty target, an unwritable directory) is refused here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbackup.catalog import Catalog
from kbackup.config import Config, JobConfig
from kbackup.errors import RestoreRefused as RestoreRefused
from kbackup.jobs.pgtools import Login, PgError, database_exists, database_is_empty
from kbackup.repository import Component, Manifest


@dataclass
class RestoreRequest:
    backup: str
    job: str | None = None
    component: str | None = None
    to_database: str | None = None
    tables: list[str] = field(default_factory=list)
    schema_only: bool = False
    data_only: bool = False
    no_owner: bool = False
    with_globals: bool = False
    clean: bool = False
    files_to: str | None = None
    in_place: bool = False
    no_safety_backup: bool = False
    force: bool = False
    gpg_homedir: str | None = None
    passphrase_file: str | None = None
    dry_run: bool = False
    yes: bool = False

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
class Step:
    component: str
    kind: str  # database-replace, database-new, files-new, files-replace, skip
    target: str
    detail: str
    destructive: bool = False
    size_bytes: int = 0


@dataclass
class Plan:
    backup_id: str
    job: str
    steps: list[Step]
    safety_backup: list[str]
    request: dict[str, Any]

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    def confirm_word(self) -> str:
        """What a person types to confirm: the name of what gets replaced."""
        return next((s.target for s in self.steps if s.destructive), "")

    def as_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "job": self.job, "destructive": self.destructive,
                "confirm_word": self.confirm_word(), "safety_backup": self.safety_backup,
                "steps": [asdict(s) for s in self.steps], "request": self.request}


def resolve_backup(catalog: Catalog, request: RestoreRequest) -> dict[str, Any]:
    if request.backup == "latest":
        if not request.job:
            raise RestoreRefused("'latest' needs --job JOB")
        candidates = [b for b in catalog.backups(request.job, "complete")
                      if b["trigger"] != "pre-restore"]
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
    if row["status"] == "corrupt" and not request.force:
        raise RestoreRefused(f"backup {row['id']} is corrupt ({row['error']}); use --force to"
                             " restore it anyway")
    if row["status"] not in ("complete", "partial", "corrupt") or not row["manifest"]:
        raise RestoreRefused(f"backup {row['id']} is {row['status']}: it cannot be restored")
    return row


def table_args(component: Component, tables: list[str]) -> list[str]:
    """pg_restore -t arguments, every name checked against the backup's table list."""
    known = sorted((component.database or {}).get("row_counts") or {})
    args = []
    for name in tables:
        if "." in name:
            matches = [t for t in known if t == name]
        else:
            matches = [t for t in known if t.split(".", 1)[1] == name]
        if not matches:
            raise RestoreRefused(f"table {name!r} is not in database {component.name} of this"
                                 f" backup; it has: {', '.join(known) or 'no tables'}")
        if len(matches) > 1:
            raise RestoreRefused(f"table {name!r} is ambiguous: {', '.join(matches)}")
        args.append(f"--table={matches[0].split('.', 1)[1]}")
    return args


async def make_plan(config: Config, catalog: Catalog, request: RestoreRequest) -> Plan:
    row = resolve_backup(catalog, request)
    manifest = Manifest.model_validate(row["manifest"])
    job = config.jobs.get(manifest.job)
    if job is None:
        raise RestoreRefused(f"backup {manifest.id} belongs to job {manifest.job!r}, which is"
                             " not configured here (its config tells where to restore)")
    if request.schema_only and request.data_only:
        raise RestoreRefused("--schema-only and --data-only exclude each other")
    if request.in_place and request.files_to:
        raise RestoreRefused("--in-place and --files-to exclude each other")
    kinds = ("globals", "postgres", "files") if request.with_globals else ("postgres", "files")
    components = [c for c in manifest.components if c.kind in kinds]
    if request.component:
        components = [c for c in manifest.components if c.kind != "config" and (
            c.name == request.component
            or (request.with_globals and c.name == f"{request.component}.globals"))]
        if not components:
            names = ", ".join(c.name for c in manifest.components if c.kind != "config")
            raise RestoreRefused(f"backup {manifest.id} has no component {request.component!r}"
                                 f" (it has: {names})")
    steps: list[Step] = []
    safety: list[str] = []
    components.sort(key=lambda c: c.kind != "globals")  # roles before the objects they own
    for component in components:
        if component.kind == "globals":
            steps.append(Step(component.name, "globals", "cluster roles",
                              "create the roles and tablespaces the dump needs (existing ones"
                              " are kept)", size_bytes=component.raw_bytes))
        elif component.kind == "postgres":
            steps.append(await _plan_database(job, component, request, safety))
        else:
            steps.append(_plan_files(job, component, request, safety))
    if all(s.kind == "skip" for s in steps):
        raise RestoreRefused("nothing to restore: " + "; ".join(s.detail for s in steps))
    return Plan(manifest.id, manifest.job, steps, safety, asdict(request))


async def _plan_database(job: JobConfig, component: Component, request: RestoreRequest,
                         safety: list[str]) -> Step:
    source = next((p for p in job.postgres if p.name == component.name), None)
    login = Login.for_restore(source)
    if request.tables:
        table_args(component, request.tables)
    what = ("schema only" if request.schema_only else "data only" if request.data_only
            else "schema and data")
    if request.tables:
        what += " of tables " + ", ".join(request.tables)
    try:
        if request.to_database:
            name = request.to_database
            exists = await database_exists(login, name)
            if exists and not request.clean and not await database_is_empty(login, name):
                raise RestoreRefused(f"database {name!r} exists and is not empty: choose another"
                                     " name, or add --clean to replace its contents")
            detail = (f"restore {what} into {'existing' if exists else 'new'} database {name!r};"
                      f" {login.database() or 'the original'} is not touched")
            return Step(component.name, "database-new", name, detail,
                        destructive=exists and request.clean, size_bytes=component.raw_bytes)
        name = login.database() or (component.database or {}).get("database", "")
        if not name:
            raise RestoreRefused(f"database {component.name}: the DSN names no dbname")
        if not await database_exists(login, name):
            return Step(component.name, "database-new", name,
                        f"database {name!r} does not exist: create it and restore {what}",
                        size_bytes=component.raw_bytes)
    except PgError as exc:
        raise RestoreRefused(f"database {component.name}: {exc}") from None
    if not request.no_safety_backup:
        safety.append(component.name)
    detail = (f"REPLACE {what} in live database {name!r} (pg_restore --clean, one transaction)")
    if request.no_safety_backup:
        detail += "; NO safety backup (--no-safety-backup)"
    else:
        detail += "; safety backup of it first"
    return Step(component.name, "database-replace", name, detail, destructive=True,
                size_bytes=component.raw_bytes)


def _check_writable(path: Path, option: str) -> None:
    """Refuse at planning time what would fail after the safety backup: the daemon must be
    able to create `path` (its nearest existing ancestor must be writable, and under the
    package's sandbox only ReadWritePaths= are)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RestoreRefused(f"{option} {path}: {probe} is not writable by the daemon (under"
                             " systemd add it to ReadWritePaths= with `systemctl edit kbackupd`)")


def _plan_files(job: JobConfig, component: Component, request: RestoreRequest,
                safety: list[str]) -> Step:
    size = (component.files or {}).get("total_bytes", component.raw_bytes)
    if request.files_to:
        target = Path(request.files_to)
        if not target.is_absolute():
            raise RestoreRefused(f"--files-to must be an absolute path, got {request.files_to!r}")
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise RestoreRefused(f"--files-to {target} exists and is not an empty directory")
        _check_writable(target, "--files-to")
        return Step(component.name, "files-new", str(target),
                    f"extract {component.files and component.files.get('file_count')} files"
                    f" into {target}", size_bytes=size)
    if request.in_place:
        source = next((f for f in job.files if f.name == component.name), None)
        if source is None:
            raise RestoreRefused(f"files {component.name}: not configured in job {job.name}, so"
                                 " its live path is unknown; use --files-to DIR")
        _check_writable(source.path.parent, "--in-place")  # extracted beside, then swapped
        if not source.path.exists():  # a new server: nothing to replace, nothing to back up
            return Step(component.name, "files-replace", str(source.path),
                        f"{source.path} does not exist: extract the files there", size_bytes=size)
        if not request.no_safety_backup:
            safety.append(component.name)
        return Step(component.name, "files-replace", str(source.path),
                    f"REPLACE the live tree {source.path} (extracted beside it, then swapped)"
                    + ("" if request.no_safety_backup else "; safety backup of it first"),
                    destructive=True, size_bytes=size)
    return Step(component.name, "skip", "-", f"files {component.name} skipped: give --files-to"
                " DIR (or --in-place) to restore them")
