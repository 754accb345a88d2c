"""Bring data back, safely.

A restore is planned first (restore_plan.py: what would be dropped, created or written;
nothing is touched), and the plan is what `--dry-run` prints and what the user confirms.
Executing it:
1. re-reads every object it will use and checks size and SHA-256 (bad data is found before
   anything is dropped), except for a plan of one step that only creates (a new database,
   loaded beside its name and renamed in once its stream checked out): one pass, not two;
2. takes a safety backup (trigger `pre-restore`) of every database or file tree it will
   replace, unless the user opted out;
3. has each component's source driver restore it (kbackup.sources.<kind>.restore: a database
   beside the live one then swapped in, or pg_restore in one transaction; a file tree into a
   new directory swapped in at the end): a failure leaves the old data;
4. records who did what in the catalog and as JSON in the storage (`_audit/restores/`), so the
   trail survives the database it describes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from kbackup.catalog import Catalog
from kbackup.config import Config
from kbackup.crypto import Decryptor, KeyProblem
from kbackup.errors import KbackupError, RestoreFailed
from kbackup.fleet import with_other_hosts
from kbackup.hooks import HookFailed, Hooks
from kbackup.jobs.backup import BackupRun
from kbackup.jobs.restore_plan import Plan, RestoreRefused, RestoreRequest
from kbackup.pipeline import CorruptObject
from kbackup.progress import Progress
from kbackup.repository import (
    Component,
    Manifest,
    manifest_key,
    new_backup_id,
    read_signed_manifest,
    write_audit,
)
from kbackup.signing import keyring, trust_of
from kbackup.sources.base import RestoreContext, open_object
from kbackup.sources.drivers import component_driver
from kbackup.storage import Storage, StorageError
from kbackup.times import iso, utcnow

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
        readable = with_other_hosts(config, storages, holders)
        self.storage = next((readable[t] for t in holders if t in readable), None)
        if self.storage is None:
            raise RestoreRefused("no configured storage target holds this backup")
        self.safety_backup_id: str | None = None
        self.request = RestoreRequest(**plan.request)
        homedir = Path(self.request.gpg_homedir) if self.request.gpg_homedir else None
        passphrase = Path(self.request.passphrase_file) if self.request.passphrase_file else None
        self.decryptor = Decryptor(config, self.job.encryption, homedir, passphrase)
        self.hooks = Hooks(self.job.hooks, plan.job, restore_id, catalog,
                           enabled=not self.request.no_hooks, KBACKUP_BACKUP_ID=plan.backup_id,
                           KBACKUP_RESTORE_ID=restore_id)
        self.components = [s.component for s in plan.steps if s.kind != "skip"]
        self.hooks_started = False  # before_restore began: after_restore must run

    async def _after_restore(self, status: str, error: str | None) -> str | None:
        """after_restore runs whatever the outcome once before_restore began (the app must
        come back up); its failures are added to the restore's error, never replace it."""
        if not self.hooks_started:
            return error
        problems = await self.hooks.run("after_restore", status, error, self.components)
        if not problems:
            return error
        return "; ".join([error or f"restore {self.restore_id} complete", *problems])

    def component(self, name: str) -> Component:
        return next(c for c in self.manifest.components if c.name == name)

    async def _signed(self) -> None:
        """The manifest on the storage read from is what a trusted key signed (signing.py):
        an intruder's rewrite since the catalog last looked stops the restore here, before
        any change, unless --force."""
        assert self.storage is not None
        keys = await asyncio.to_thread(keyring, self.config.daemon.state_dir)
        stored = await read_signed_manifest(self.storage, manifest_key(self.manifest.job,
                                                                       self.manifest.id))
        trust = trust_of(stored, keys)
        self.catalog.set_backup_trust(self.manifest.id, trust.state, trust.reason)
        if trust.trusted or self.request.force:
            return
        raise RestoreRefused(f"backup {self.manifest.id} is untrusted: {trust.reason}; use"
                             " --force to restore it anyway")

    async def _precheck(self) -> None:
        """Every object re-read and checked (and, if encrypted, decrypted) before any change:
        a flipped byte, a wrong passphrase or a missing key stops the restore here. A plan of
        one step its driver checks before changing anything (restored beside, then swapped
        in) skips the re-read: the time to recover is one pass over the backup, not two."""
        assert self.storage is not None
        await self._signed()
        steps = [step for step in self.plan.steps if step.kind != "skip"]
        for step in steps:
            component = self.component(step.component)
            encrypted = component.encryption.get("mode", "none") != "none"
            if encrypted:
                await asyncio.to_thread(self.decryptor.check_secret_key, component.encryption)
            if len(steps) == 1 and step.checked_before_change:
                log.info("event=restore.precheck restore=%s component=%s method=while_restoring",
                         self.restore_id, component.name)
                continue
            self.progress.phase = f"checking {component.file}"
            for obj in component.stored_objects():
                decode = component if encrypted else None
                await open_object(self.storage, self.manifest, obj, decode,
                                  self.decryptor).drain()

    async def _safety_backup(self) -> None:
        if not self.plan.safety_backup:
            return
        job = self.job.with_only_sources(set(self.plan.safety_backup)).model_copy(
            update={"verify": self.job.verify.model_copy(update={"after_backup": "none"})})
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

    def _context(self) -> RestoreContext:
        assert self.storage is not None
        return RestoreContext(self.config, self.job, self.manifest, self.storage,
                              self.decryptor, self.progress, request=self.request,
                              restore_id=self.restore_id)

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
            self.hooks_started = True
            await self.hooks.before("before_restore", self.components)
            await self._safety_backup()
            context = self._context()
            for step in self.plan.steps:
                if step.kind == "skip":
                    continue
                component = self.component(step.component)
                await component_driver(component.kind).restore(context, step, component)
                done.append(f"{step.component} -> {step.target}")
            status = "complete"
        except (CorruptObject, StorageError, KeyProblem, HookFailed) as exc:
            error = f"{exc}; nothing was changed" if not done else str(exc)
        except (KbackupError, OSError) as exc:  # a driver's, a refusal, gpg: its one line
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
            error = await self._after_restore(status, error)
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
