"""The backup repository format: layout of objects, the manifest, and the commit rule.

    <job>/<YYYY>/<MM>/<backup-id>/<component files>
    <job>/<YYYY>/<MM>/<backup-id>/manifest.json      written last: its presence = complete
    _audit/restores/<YYYY>/<MM>/<restore-id>.json     who restored what, when, with what result
    _audit/deletions/<YYYY>/<MM>/<deletion-id>.json   who deleted which backup from which targets

The same layout on every storage backend. A backup directory without a readable manifest is
never complete, whatever else it holds; deletion removes the manifest first for the same
reason. Nothing under `_audit/` (job names cannot start with `_`) is a backup or a leftover:
listing, rescan and leftover cleanup skip it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kbackup.storage.base import PARTIAL_SUFFIX, Storage, StorageError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
AUDIT_PREFIX = "_audit/"
log = logging.getLogger("kbackup.repository")


class StoredObject(BaseModel):
    file: str
    size_bytes: int
    sha256: str


class Component(BaseModel):
    """One stored piece of a backup: a database dump, a file tree, the config snapshot."""

    model_config = ConfigDict(extra="allow")

    name: str
    kind: str  # "config", or one a source driver stores (sources/registry.py)
    file: str
    size_bytes: int
    sha256: str
    raw_bytes: int
    compression: dict[str, Any]
    encryption: dict[str, Any] = {"mode": "none"}
    database: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    index: StoredObject | None = None

    def stored_objects(self) -> list[StoredObject]:
        own = StoredObject(file=self.file, size_bytes=self.size_bytes, sha256=self.sha256)
        return [own] + ([self.index] if self.index else [])


class Manifest(BaseModel):
    """What a complete backup is. `trigger` says what started it (scheduled, catch-up, manual,
    pre-restore); `tag` is the schedule tag it was taken for (also for a catch-up run; None for
    manual and pre-restore backups); `label` is the user's label (`kbackupctl run --label`).
    Manifests written before tags and labels existed load with both None."""

    model_config = ConfigDict(extra="allow")

    format: int = FORMAT_VERSION
    id: str
    job: str
    trigger: str
    tag: str | None = None
    label: str | None = None
    host: str
    kbackup_version: str
    started_at: str
    finished_at: str
    components: list[Component]

    @property
    def size_bytes(self) -> int:
        return sum(o.size_bytes for c in self.components for o in c.stored_objects())


def new_backup_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def backup_started(backup_id: str) -> datetime:
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def backup_prefix(job: str, backup_id: str) -> str:
    started = backup_started(backup_id)
    return f"{job}/{started:%Y}/{started:%m}/{backup_id}/"


def manifest_key(job: str, backup_id: str) -> str:
    return backup_prefix(job, backup_id) + MANIFEST


def encode_manifest(manifest: Manifest) -> bytes:
    return json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"


async def write_manifest(storage: Storage, manifest: Manifest) -> None:
    await storage.put_bytes(manifest_key(manifest.job, manifest.id), encode_manifest(manifest))


async def read_manifest(storage: Storage, key: str) -> Manifest:
    data = await storage.get_bytes(key)
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise StorageError(
            f"storage {storage.name}: {key} is not a valid manifest: {exc}"
        ) from None


def _split_key(key: str) -> tuple[str, str, str] | None:
    """(job, backup_id, name) for keys in the backup layout, else None."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0].startswith("_") or not BACKUP_ID.match(parts[3]):
        return None
    return parts[0], parts[3], parts[4]


async def list_manifests(storage: Storage, job: str | None = None,
                         concurrency: int = 16) -> list[Manifest]:
    """Every complete backup on a storage: the ones whose manifest is present and readable.

    Manifests are read a few at a time: on S3 or WebDAV each is a request, and a repository
    of 10 000 backups read one by one takes minutes (bench/listing.py measures it)."""
    keys = [info.key for info in await storage.list(f"{job}/" if job else "")
            if (split := _split_key(info.key)) is not None and split[2] == MANIFEST]
    limit = asyncio.Semaphore(concurrency)

    async def one(key: str) -> Manifest | None:
        async with limit:
            try:
                return await read_manifest(storage, key)
            except StorageError as exc:
                log.warning("event=manifest.unreadable storage=%s key=%s error=%s",
                            storage.name, key, exc)
                return None

    found = await asyncio.gather(*(one(key) for key in keys))
    manifests = [m for m in found if m is not None]
    manifests.sort(key=lambda m: m.started_at)
    return manifests


async def delete_backup(storage: Storage, job: str, backup_id: str) -> None:
    """Manifest first, so an interrupted delete never leaves a complete-looking backup."""
    prefix = backup_prefix(job, backup_id)
    await storage.delete(prefix + MANIFEST)
    for info in await storage.list(prefix):
        await storage.delete(info.key)


async def clean_incomplete(
    storage: Storage, known_incomplete: set[str], now: datetime, orphan_age: timedelta
) -> list[str]:
    """Remove leftovers of runs that never committed a manifest.

    Partial objects and manifest-less backup directories go at once when the catalog knows their
    run died (known_incomplete), otherwise once older than orphan_age (another daemon could be
    writing them right now). Returns the removed keys.
    """
    objects = await storage.list("")
    by_backup: dict[str, list[Any]] = {}
    for info in objects:
        split = _split_key(info.key.removesuffix(PARTIAL_SUFFIX))
        if split is not None:
            by_backup.setdefault(split[1], []).append(info)
    removed: list[str] = []
    for backup_id, infos in by_backup.items():
        if any(i.key.endswith("/" + MANIFEST) for i in infos):
            continue
        newest = max(i.modified for i in infos)
        if backup_id in known_incomplete or now - newest > orphan_age:
            for info in infos:
                await storage.delete(info.key)
                removed.append(info.key)
    # Uploads S3 never made visible (a killed daemon's multipart uploads) age out the same way.
    removed += await storage.abort_stale_uploads(orphan_age)
    return removed


def audit_key(kind: str, record_id: str, when: datetime) -> str:
    """Where an audit record lives: `_audit/<kind>/YYYY/MM/<record-id>.json` (UTC month)."""
    when = when.astimezone(UTC)
    return f"{AUDIT_PREFIX}{kind}/{when:%Y}/{when:%m}/{record_id}.json"


async def write_audit(storages: Iterable[Storage], kind: str, record_id: str,
                      record: dict[str, Any], when: datetime) -> dict[str, str]:
    """Store an audit record (a restore, a deletion) as JSON on each of these storages, so the
    trail survives the server. A target that cannot take it is logged and skipped; returns
    {target: error} for those."""
    key = audit_key(kind, record_id, when)
    data = json.dumps(record, indent=2).encode() + b"\n"
    failed: dict[str, str] = {}
    for storage in storages:
        try:
            await storage.put_bytes(key, data)
        except (StorageError, OSError) as exc:
            failed[storage.name] = str(exc)
            log.error("event=audit.write_failed kind=%s target=%s key=%s error=%r", kind,
                      storage.name, key, str(exc))
    return failed
