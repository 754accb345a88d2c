"""Bring data back, safely.

A restore is planned first (what would be dropped, created or written; nothing is touched), and
the plan is what `--dry-run` prints and what the user confirms. Executing it:
1. re-reads every object it will use and checks size and SHA-256 (bad data is found before
   anything is dropped);
2. takes a safety backup (trigger `pre-restore`) of every database or file tree it will
   replace, unless the user opted out;
3. restores each database with pg_restore in one transaction (a failure leaves the old data),
   and each file tree by safe extraction into a new directory that is swapped in at the end;
4. records who did what in the catalog and as JSON in the storage (`_audit/restores/`), so the
   trail survives the database it describes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kbackup.catalog import Catalog, iso, utcnow
from kbackup.config import Config, JobConfig
from kbackup.crypto import Decryptor, GpgFailed, KeyProblem
from kbackup.extract import UnsafeArchive, extract_stream, pump_tar
from kbackup.jobs.backup import BackupRun
from kbackup.jobs.pgtools import (
    CannotCreateDatabase,
    Login,
    PgError,
    create_database,
    create_database_like,
    database_exists,
    database_is_empty,
    drop_database,
    failure,
    feed_process,
    swap_database,
)
from kbackup.jobs.verify import open_object
from kbackup.pipeline import CorruptObject
from kbackup.progress import Progress
from kbackup.repository import Component, Manifest, new_backup_id
from kbackup.storage import Storage, StorageError

log = logging.getLogger("kbackup.restore")


class RestoreRefused(Exception):
    """The request cannot be planned: wrong backup, unknown table, unsafe target..."""


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


def _table_args(component: Component, tables: list[str]) -> list[str]:
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
        _table_args(component, request.tables)
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


class RestoreRun:
    def __init__(self, config: Config, storages: dict[str, Storage], catalog: Catalog,
                 plan: Plan, progress: Progress, restore_id: str, caller: dict[str, Any]):
        self.config = config
        self.job = config.jobs[plan.job]
        self.storages = storages
        self.catalog = catalog
        self.plan = plan
        self.progress = progress
        self.restore_id = restore_id
        self.caller = caller
        row = catalog.get_backup(plan.backup_id)
        assert row is not None
        self.manifest = Manifest.model_validate(row["manifest"])
        holders = [t for t, state in row["targets"].items() if state == "complete"]
        self.storage = next((storages[t] for t in holders if t in storages), None)
        if self.storage is None:
            raise RestoreRefused("no configured storage target holds this backup")
        self.safety_backup_id: str | None = None
        self.request = RestoreRequest(**plan.request)
        homedir = Path(self.request.gpg_homedir) if self.request.gpg_homedir else None
        passphrase = Path(self.request.passphrase_file) if self.request.passphrase_file else None
        self.decryptor = Decryptor(config, self.job.encryption, homedir, passphrase)

    def component(self, name: str) -> Component:
        return next(c for c in self.manifest.components if c.name == name)

    async def _precheck(self) -> None:
        """Every object re-read and checked (and, if encrypted, decrypted) before any change:
        a flipped byte, a wrong passphrase or a missing key stops the restore here."""
        assert self.storage is not None
        for step in self.plan.steps:
            if step.kind == "skip":
                continue
            component = self.component(step.component)
            self.progress.phase = f"checking {component.file}"
            encrypted = component.encryption.get("mode", "none") != "none"
            if encrypted:
                await asyncio.to_thread(self.decryptor.check_secret_key, component.encryption)
            for obj in component.stored_objects():
                decode = component if encrypted else None
                await open_object(self.storage, self.manifest, obj, decode,
                                  self.decryptor).drain()

    async def _safety_backup(self) -> None:
        if not self.plan.safety_backup:
            return
        names = set(self.plan.safety_backup)
        job = self.job.model_copy(update={
            "postgres": [p for p in self.job.postgres if p.name in names],
            "files": [f for f in self.job.files if f.name in names],
            "verify": self.job.verify.model_copy(update={"after_backup": "none"}),
        })
        backup_id = new_backup_id(utcnow())
        self.progress.phase = "safety backup"
        backup = BackupRun(self.config, job, self.storages, self.catalog, backup_id,
                           "pre-restore", Progress())
        try:
            await backup.run()
        except Exception as exc:  # noqa: BLE001 - any reason stops the restore before a change
            raise RestoreRefused(f"safety backup {backup_id} failed ({exc}); nothing was"
                                 " changed") from None
        self.safety_backup_id = backup_id  # only a backup that exists is named as the way back
        log.info("event=restore.safety_backup restore=%s backup=%s", self.restore_id,
                 self.safety_backup_id)

    async def _database(self, step: Step) -> None:
        assert self.storage is not None
        component = self.component(step.component)
        source = next((p for p in self.job.postgres if p.name == component.name), None)
        login = Login.for_restore(source)
        request = self.request
        whole = not (request.tables or request.schema_only or request.data_only)
        if step.kind == "database-replace" and whole:
            try:
                await self._replace_whole_database(login, component, step.target)
                return
            except CannotCreateDatabase as exc:
                log.warning("event=restore.fallback restore=%s reason=%r method=%s",
                            self.restore_id, str(exc), "pg_restore --clean in place")
        argv = [login.pg_restore, "--exit-on-error", "--single-transaction",
                f"--dbname={login.dsn_for(step.target)}"]
        if (step.kind == "database-replace" or request.clean) and not request.data_only:
            argv += ["--clean", "--if-exists"]  # pg_restore refuses --clean with --data-only
        if step.kind == "database-new" and not await database_exists(login, step.target):
            await create_database(login, step.target)
        if request.schema_only:
            argv.append("--schema-only")
        if request.data_only:  # the dump's data is in name order, not foreign-key order
            argv += ["--data-only", "--disable-triggers"]
        if request.no_owner:
            argv += ["--no-owner", "--no-acl"]
        argv += _table_args(component, request.tables)
        self.progress.phase = f"restoring database {step.target}"
        stream = open_object(self.storage, self.manifest, component, component, self.decryptor)
        code, stderr = await feed_process(argv, login.child_env(), stream.chunks(),
                                          on_chunk=self._advance)
        if code != 0:
            raise PgError(failure(f"pg_restore into {step.target}", code, stderr).args[0]
                          + f"; database {step.target} is unchanged (the transaction was rolled"
                          " back)")

    async def _replace_whole_database(self, login: Login, component: Component,
                                      target: str) -> None:
        """Restore into a side database, then swap it in: the result is exactly the backup
        (tables created since are gone too), and a failure leaves the live database as it
        was. pg_restore --clean alone cannot do that: it drops only the dump's own objects."""
        side = f"{target[:40]}_kbrestore_{self.restore_id[-6:]}"
        await drop_database(login, side)
        await create_database_like(login, side, target)
        argv = [login.pg_restore, "--exit-on-error", "--single-transaction",
                f"--dbname={login.dsn_for(side)}"]
        if self.request.no_owner:
            argv += ["--no-owner", "--no-acl"]
        self.progress.phase = f"restoring database {target} (beside it, as {side})"
        stream = open_object(self.storage, self.manifest, component, component,  # type: ignore[arg-type]
                             self.decryptor)
        try:
            code, stderr = await feed_process(argv, login.child_env(), stream.chunks(),
                                              on_chunk=self._advance)
            if code != 0:
                raise PgError(failure(f"pg_restore of {target}", code, stderr).args[0]
                              + f"; database {target} is unchanged")
            self.progress.phase = f"swapping the restored database in as {target}"
            await swap_database(login, target, side, self.restore_id[-6:])
        except BaseException:
            await asyncio.shield(drop_database(login, side))
            raise

    async def _globals(self, step: Step) -> None:
        """Apply the roles script; roles that already exist are errors psql reports and skips."""
        assert self.storage is not None
        component = self.component(step.component)
        database = component.name.removesuffix(".globals")
        source = next((p for p in self.job.postgres if p.name == database), None)
        login = Login.for_restore(source)
        psql = str(Path(login.pg_restore).with_name("psql")) if "/" in login.pg_restore else "psql"
        self.progress.phase = "creating roles"
        stream = open_object(self.storage, self.manifest, component, component, self.decryptor)
        argv = [psql, "-X", "-q", f"--dbname={login.dsn_for('postgres')}", "-f", "-"]
        code, stderr = await feed_process(argv, login.child_env(), stream.chunks(),
                                          on_chunk=self._advance)
        errors = [line for line in stderr if "ERROR" in line and "already exists" not in line]
        if code != 0 or errors:
            raise PgError(f"applying roles failed: {errors[0] if errors else f'exit {code}'}")

    async def _files(self, step: Step) -> None:
        assert self.storage is not None
        component = self.component(step.component)
        final = Path(step.target)
        into = final
        if step.kind != "files-new":  # extract beside the live tree, swap in at the end
            into = final.with_name(f".{final.name}.kbackup-restore-{self.restore_id[-6:]}")
        await asyncio.to_thread(into.mkdir, parents=True, exist_ok=into == final)
        self.progress.phase = f"extracting files into {final}"
        try:
            stream = open_object(self.storage, self.manifest, component, component, self.decryptor)
            await pump_tar(stream.chunks(),
                           lambda r: extract_stream(r, into, os.geteuid() == 0), self._advance)
        except BaseException:
            if into != final:
                await asyncio.to_thread(shutil.rmtree, into, True)
            raise
        if into != final:
            await asyncio.to_thread(self._swap, into, final)

    def _swap(self, new: Path, live: Path) -> None:
        old = live.with_name(f".{live.name}.kbackup-old-{self.restore_id[-6:]}")
        if live.exists():
            os.rename(live, old)
        os.rename(new, live)
        shutil.rmtree(old, ignore_errors=True)

    def _advance(self, size: int) -> None:
        self.progress.bytes_done += size

    async def _write_audit(self, record: dict[str, Any]) -> None:
        when = utcnow()
        key = f"_audit/restores/{when:%Y}/{when:%m}/{self.restore_id}.json"
        data = json.dumps(record, indent=2).encode() + b"\n"
        for name in self.job.targets:
            storage = self.storages.get(name)
            if storage is None:
                continue
            try:
                await storage.put_bytes(key, data)
            except (StorageError, OSError) as exc:
                log.error("event=restore.audit_failed target=%s error=%r", name, str(exc))

    async def run(self) -> None:
        started: datetime = utcnow()
        self.catalog.add_restore(self.restore_id, self.plan.job, self.plan.backup_id,
                                 self.caller.get("user", "?"), self.caller.get("uid", -1),
                                 self.plan.as_dict(), started)
        self.progress.bytes_total = sum(s.size_bytes for s in self.plan.steps)
        status, error = "failed", None
        done: list[str] = []
        try:
            await self._precheck()
            await self._safety_backup()
            for step in self.plan.steps:
                if step.kind == "globals":
                    await self._globals(step)
                elif step.kind.startswith("database"):
                    await self._database(step)
                elif step.kind.startswith("files"):
                    await self._files(step)
                else:
                    continue
                done.append(f"{step.component} -> {step.target}")
            status = "complete"
        except (CorruptObject, StorageError, KeyProblem) as exc:
            error = f"{exc}; nothing was changed" if not done else str(exc)
        except (PgError, RestoreRefused, OSError, GpgFailed, UnsafeArchive,
                tarfile.TarError) as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "restore aborted"
            raise
        except Exception as exc:  # still recorded in the catalog and the audit trail
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if error and done:
                error += f" (already restored: {', '.join(done)})"
            await asyncio.to_thread(self.decryptor.close)
            if error and self.safety_backup_id:
                error += f"; safety backup {self.safety_backup_id} holds the pre-restore state"
            self.catalog.finish_restore(self.restore_id, status, self.safety_backup_id, error)
            await self._write_audit({
                "restore_id": self.restore_id, "job": self.plan.job,
                "backup_id": self.plan.backup_id, "user": self.caller.get("user"),
                "uid": self.caller.get("uid"), "started_at": iso(started),
                "finished_at": iso(utcnow()), "status": status, "error": error,
                "safety_backup_id": self.safety_backup_id, "plan": self.plan.as_dict(),
            })
            log.info("event=restore.%s restore=%s backup=%s user=%s error=%r", status,
                     self.restore_id, self.plan.backup_id, self.caller.get("user"), error)
        if error:
            raise RestoreRefused(error)
