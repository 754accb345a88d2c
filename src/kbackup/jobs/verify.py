"""Prove a backup restores, at three depths, always from the storage itself (no local cache):

- checksum: every stored object re-read; size and SHA-256 compared with the manifest; on a
  target where the manifest records an S3 Object Lock, every object's lock read back too;
- structure: also decoded; every dump parsed whole by pg_restore, every archive listed and its
  files hashed against the backup's file index;
- restore-test: every dump restored into a scratch database whose row counts must equal the
  manifest's (and the job's sql_checks must return no rows); every archive extracted into a
  scratch directory and each file compared with the index. Scratch databases and directories
  are always removed, also on failure.

The first concrete mismatch is the verdict ("table invoices: 10412 rows in manifest, 0
restored"); a failed verification marks the backup corrupt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kbackup.catalog import Catalog
from kbackup.config import Config, EncryptionConfig, JobConfig
from kbackup.crypto import Decryptor, KeyProblem
from kbackup.errors import KbackupError, VerifyError
from kbackup.fleet import with_other_hosts
from kbackup.pipeline import CorruptObject
from kbackup.progress import Progress
from kbackup.repository import (
    MANIFEST,
    SIGNATURE,
    Component,
    Manifest,
    backup_prefix,
    manifest_key,
    read_signed_manifest,
    recorded_lock,
)
from kbackup.signing import keyring, trust_of
from kbackup.sources.base import CannotCheck, CheckFailed, ReadBack, open_object
from kbackup.sources.drivers import (
    CONFIG_KIND,
    driver_for_component,
    unreadable,
    unreadable_line,
)
from kbackup.storage import Storage, StorageError
from kbackup.times import iso, utcnow
from kbackup.verify_levels import LEVELS

__all__ = ["LEVELS", "VerificationFailed", "VerifyRun", "open_object"]
log = logging.getLogger("kbackup.verify")


class VerificationFailed(VerifyError):
    """The backup is not what its manifest promises; the message is the first mismatch."""


class Untrusted(VerificationFailed):
    """The manifest on a target is not what a trusted key signed (kbackup.signing): the
    verification fails, the backup becomes untrusted, not corrupt (its objects may be
    intact; an unsigned backup from before signing is not damaged)."""


class CannotVerify(VerifyError):
    """Not the backup's fault: this version cannot check it (a component of a kind it has no
    driver for). Recorded as "could not verify", the backup's status left as it is."""


class VerifyRun:
    def __init__(self, config: Config, job: JobConfig | None, storages: dict[str, Storage],
                 catalog: Catalog, backup: dict[str, Any], level: str, progress: Progress,
                 run_id: str):
        if level not in LEVELS:
            raise ValueError(f"unknown verification level {level!r}; expected one of "
                             + ", ".join(LEVELS))
        self.config = config
        self.job = job
        self.catalog = catalog
        self.backup = backup
        self.manifest = Manifest.model_validate(backup["manifest"])
        self.level = level
        self.progress = progress
        self.run_id = run_id
        complete = [t for t, state in backup["targets"].items() if state == "complete"]
        storages = with_other_hosts(config, storages, complete)
        self.storages = [storages[t] for t in complete if t in storages]
        if not self.storages:
            raise VerificationFailed("no configured storage target holds this backup")
        self.details: dict[str, Any] = {"targets": [s.name for s in self.storages]}
        encryption = job.encryption if job is not None else EncryptionConfig()
        self.decryptor = Decryptor(config, encryption)

    # ------------------------------------------------------------------ levels

    async def _checksums(self, storage: Storage) -> None:
        for component in self.manifest.components:
            for obj in component.stored_objects():
                self.progress.phase = f"checksum {storage.name}:{obj.file}"
                stream = open_object(storage, self.manifest, obj, None)
                try:
                    await stream.drain()
                except StorageError as exc:
                    raise VerificationFailed(f"{obj.file} on {storage.name}: {exc}") from None
                except CorruptObject as exc:
                    raise VerificationFailed(f"{exc} (target {storage.name})") from None
                self.progress.bytes_done += obj.size_bytes
        await self._locks(storage)

    async def _locks(self, storage: Storage) -> None:
        """On a target where the manifest records an Object Lock, every object (manifest
        and its signature included) must still be locked at least until that date."""
        recorded = recorded_lock(self.backup.get("manifest"), storage.name)
        if recorded is None:
            return
        prefix = backup_prefix(self.manifest.job, self.manifest.id)
        files = [o.file for c in self.manifest.components for o in c.stored_objects()]
        if self.manifest.signature is not None:
            files.append(SIGNATURE)
        for file in [*files, MANIFEST]:
            self.progress.phase = f"object lock {storage.name}:{file}"
            try:
                lock = await storage.object_lock(prefix + file)
            except StorageError as exc:
                raise VerificationFailed(f"{file} on {storage.name}: {exc}") from None
            if lock is None or lock.retain_until < recorded:
                found = "none" if lock is None else f"until {iso(lock.retain_until)}"
                raise VerificationFailed(
                    f"{file} on {storage.name}: not under Object Lock until {iso(recorded)}"
                    f" as the manifest records (lock found: {found})")

    # ------------------------------------------------------------------ run

    async def _signed(self) -> None:
        """The manifest on each target is what a trusted key signed (kbackup.signing) and
        what the catalog holds; the verdict is kept as the backup's trust."""
        keys = await asyncio.to_thread(keyring, self.config.daemon.state_dir)
        key = manifest_key(self.manifest.job, self.manifest.id)
        for storage in self.storages:
            self.progress.phase = f"signature {storage.name}"
            try:
                stored = await read_signed_manifest(storage, key)
            except StorageError as exc:
                raise VerificationFailed(f"{MANIFEST} on {storage.name}: {exc}") from None
            trust = trust_of(stored, keys)
            if not trust.trusted:
                self.catalog.set_backup_trust(self.manifest.id, "untrusted", trust.reason)
                raise Untrusted(f"manifest signature on {storage.name}: {trust.reason}")
            if stored.model_dump(mode="json") != self.manifest.model_dump(mode="json"):
                raise CannotVerify(f"{MANIFEST} on {storage.name} is not the one in the"
                                   " catalog (run `kbackupctl catalog rescan`)")
        self.catalog.set_backup_trust(self.manifest.id, "trusted", None)

    async def _verify(self) -> None:
        await self._signed()
        if self.level == "checksum":
            self.progress.bytes_total = self.manifest.size_bytes * len(self.storages)
            for storage in self.storages:
                await self._checksums(storage)
            return
        unknown = unreadable(self.manifest.components)
        if unknown is not None:  # checksums above need no driver; decoding a kind does
            raise CannotVerify(unreadable_line(unknown))
        back = ReadBack(self.config, self.job, self.manifest, self.storages[0],
                        self.decryptor, self.progress, self.details)
        self.progress.bytes_total = sum(c.raw_bytes for c in self.manifest.components
                                        if c.kind != CONFIG_KIND)
        for component in self.manifest.components:
            try:
                await self._component(back, component)
            except CheckFailed as exc:
                raise VerificationFailed(str(exc)) from None
            except CorruptObject as exc:
                raise VerificationFailed(str(exc)) from None
            except (KeyProblem, CannotCheck):
                raise
            except (KbackupError, OSError) as exc:  # a driver's, the storage's, gpg's one line
                raise VerificationFailed(f"{component.kind} {component.name}: {exc}") from None

    async def _component(self, back: ReadBack, component: Component) -> None:
        """The level's check by the component's driver; decoding whole is all there is to
        check of the config snapshot."""
        driver = driver_for_component(component.kind)
        if driver is None:
            await back.open(component, component).drain()
        elif self.level == "structure":
            await driver.structure(back, component)
        else:
            await driver.restore_test(back, component)

    async def run(self) -> dict[str, Any]:
        started = utcnow()
        problem: str | None = None
        untrusted = False
        try:
            await self._verify()
        except Untrusted as exc:
            problem, untrusted = str(exc), True
        except VerificationFailed as exc:
            problem = str(exc)
        except (KeyProblem, CannotVerify, CannotCheck) as exc:
            # Not the backup's fault: record that it could not be checked, leave its status.
            problem = f"could not verify: {exc}"
            self.catalog.add_verification(self.run_id, self.manifest.id, self.manifest.job,
                                          self.level, started, False, problem, self.details)
            return {"backup_id": self.manifest.id, "level": self.level, "ok": False,
                    "problem": problem, "details": self.details}
        finally:
            await asyncio.to_thread(self.decryptor.close)
        ok = problem is None
        took = (utcnow() - started).total_seconds()  # a passed restore-test: the time to recover
        self.catalog.add_verification(self.run_id, self.manifest.id, self.manifest.job,
                                      self.level, started, ok, problem, self.details,
                                      took if ok and self.level == "restore-test" else None)
        if not ok and not untrusted:  # untrusted: the trust says so (_signed), not the status
            self.catalog.set_backup_status(self.manifest.id, "corrupt",
                                           f"{self.level} verification failed: {problem}")
        if not ok:
            log.error("event=verify.failed backup=%s level=%s problem=%r", self.manifest.id,
                      self.level, problem)
        else:
            if self.backup["status"] == "corrupt":
                self.catalog.set_backup_status(self.manifest.id, "complete", None)
            log.info("event=verify.ok backup=%s level=%s", self.manifest.id, self.level)
        return {"backup_id": self.manifest.id, "level": self.level, "ok": ok,
                "problem": problem, "details": self.details}
