"""Bring data back, safely.

A restore is planned first (restore_plan.py: what would be dropped, created or written;
nothing is touched), and the plan is what `--dry-run` prints and what the user confirms.
Executing it:
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
import logging
import os
import shutil
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

from kbackup.catalog import Catalog, iso, utcnow
from kbackup.config import Config
from kbackup.crypto import Decryptor, GpgFailed, KeyProblem
from kbackup.errors import RestoreFailed
from kbackup.extract import UnsafeArchive, extract_stream, pump_tar
from kbackup.jobs.backup import BackupRun
from kbackup.jobs.pgtools import (
    CannotCreateDatabase,
    Login,
    PgError,
    create_database,
    create_database_like,
    database_exists,
    drop_database,
    failure,
    feed_process,
    swap_database,
)
from kbackup.jobs.restore_plan import Plan, RestoreRefused, RestoreRequest, Step, table_args
from kbackup.jobs.verify import open_object
from kbackup.pipeline import CorruptObject
from kbackup.progress import Progress
from kbackup.repository import Component, Manifest, new_backup_id, write_audit
from kbackup.storage import Storage, StorageError

log = logging.getLogger("kbackup.restore")


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
        argv += table_args(component, request.tables)
        self.progress.phase = f"restoring database {step.target}"
        stream = open_object(self.storage, self.manifest, component, component, self.decryptor)
        code, stderr = await feed_process(argv, login.child_env(), stream.chunks(),
                                          on_chunk=self._advance)
        if code != 0:
            raise PgError(failure(f"pg_restore into {step.target}", code, stderr).args[0]
                          + f"; database {step.target} is unchanged (the transaction was rolled"
                          " back)", stderr)

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
                              + f"; database {target} is unchanged", stderr)
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
            raise PgError(f"applying roles failed: {errors[0] if errors else f'exit {code}'}",
                          stderr)

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
        storages = [self.storages[n] for n in self.job.targets if n in self.storages]
        await write_audit(storages, "restores", self.restore_id, record, utcnow())

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
            raise RestoreFailed(error)
