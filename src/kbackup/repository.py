"""The backup repository format: layout of objects, the manifest, and the commit rule.

    <job>/<YYYY>/<MM>/<backup-id>/<component files>
    <job>/<YYYY>/<MM>/<backup-id>/manifest.json.sig  its Ed25519 signature (signing.py)
    <job>/<YYYY>/<MM>/<backup-id>/manifest.json      written last: its presence = complete
    _audit/restores/<YYYY>/<MM>/<restore-id>.json     who restored what, when, with what result
    _audit/deletions/<YYYY>/<MM>/<deletion-id>.json   who deleted which backup from which targets

The same layout on every storage backend. A backup directory without a readable manifest is
never complete, whatever else it holds; deletion removes the manifest first for the same
reason. Nothing under `_audit/` (job names cannot start with `_`) is a backup or a leftover:
listing, rescan and leftover cleanup skip it.

docs/format.md is the specification of all this (every field, every object, every format
version). Manifests are read through one function, `upgrade_manifest` (the Manifest model calls
it before validating, so every reader gets it): a newer `format` than FORMAT_VERSION is refused
with a one-line ManifestTooNew, an older one is upgraded one version step at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from kbackup.errors import KbackupError, Refused
from kbackup.storage.base import PARTIAL_SUFFIX, BackupLocked, Storage, StorageError
from kbackup.times import iso, parse_iso

# The manifest format this code writes and the newest it reads. Bump it (and add an upgrade
# step below, a golden manifest in tests/golden/ and a "Changes" entry in docs/format.md)
# whenever what a manifest says changes.
FORMAT_VERSION = 2
OLDEST_FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = MANIFEST + ".sig"  # the manifest's detached signature (signing.py)
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
AUDIT_PREFIX = "_audit/"
log = logging.getLogger("kbackup.repository")


class ManifestError(KbackupError):
    """A manifest this kbackupd cannot read as a manifest of any format (one line). Not a
    ValueError, so pydantic lets it out of the model's validator as it is."""


class ManifestTooNew(ManifestError, Refused):
    """A manifest written by a newer kbackupd: refused, never guessed at (one line, naming
    the backup and both format versions; a 409 when a request meets it)."""


def _upgrade_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 got `tag` and `label` late (issue 13, without a format change): the first
    format-1 manifests lack them. Format 2 always has both keys; null means none."""
    return {**data, "format": 2, "tag": data.get("tag"), "label": data.get("label")}


# UPGRADES[n] takes a manifest (as parsed JSON) from format n to n + 1. Only append.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _upgrade_1_to_2,
}


def upgrade_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest of any format this code reads, as the current format (FORMAT_VERSION).

    The one place a manifest's `format` is looked at. A newer format is refused with
    ManifestTooNew; an older one goes through UPGRADES one step at a time. A manifest without
    `format` is one being built by this code (jobs/backup.py), so it is the current format."""
    version = data.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        return data  # the model says what is wrong with it
    backup = data.get("id", "?")
    if version > FORMAT_VERSION:
        raise ManifestTooNew(
            f"{MANIFEST} of backup {backup}: format {version} is newer than this kbackupd"
            f" reads ({FORMAT_VERSION}): upgrade kbackupd")
    if version < OLDEST_FORMAT:
        raise ManifestError(f"{MANIFEST} of backup {backup}: format {version} is not a"
                            f" kbackup manifest format ({OLDEST_FORMAT} to {FORMAT_VERSION})")
    while version < FORMAT_VERSION:
        data = UPGRADES[version](data)
        version = data["format"]
    return data


class StoredObject(BaseModel):
    """One object in the backup's directory: its name there, its size and the SHA-256 of the
    bytes as stored (after compression and encryption)."""

    file: str
    size_bytes: int
    sha256: str

    def stored_object(self) -> StoredObject:
        """Just the object (a Component is one too, with more fields)."""
        return StoredObject(**{name: getattr(self, name) for name in StoredObject.model_fields})


class Component(StoredObject):
    """One stored piece of a backup: a database dump, its globals, a file tree, the config
    snapshot. Its own object (file, size_bytes, sha256) comes from StoredObject; a file tree
    has a second one, its `index`. `database` and `files` are the drivers' metadata (see
    docs/format.md), kept as the JSON the driver returned."""

    model_config = ConfigDict(extra="allow")

    name: str
    kind: str  # "config", or one a source driver stores (sources/registry.py)
    raw_bytes: int
    compression: dict[str, Any]
    encryption: dict[str, Any] = {"mode": "none"}
    database: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    index: StoredObject | None = None

    def stored_objects(self) -> list[StoredObject]:
        return [self.stored_object()] + ([self.index] if self.index else [])


class Manifest(BaseModel):
    """What a complete backup is (docs/format.md). `trigger` says what started it (scheduled,
    catch-up, manual, pre-restore); `tag` is the schedule tag it was taken for (also for a
    catch-up run; None for manual and pre-restore backups); `label` is the user's label
    (`kbackupctl run --label`). Every way of reading one (model_validate, model_validate_json)
    goes through upgrade_manifest first."""

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
    # {"algorithm": "ed25519", "key": FINGERPRINT}: the key whose signature of these exact
    # bytes is manifest.json.sig (signing.py); None in backups made before signing.
    signature: dict[str, str] | None = None
    # As read from storage (read_manifest): the exact bytes and the detached signature.
    _stored: bytes | None = PrivateAttr(None)
    _detached: bytes | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        # ManifestError is no ValueError: pydantic lets it through as it is (one line).
        return upgrade_manifest(data) if isinstance(data, dict) else data

    @model_serializer(mode="wrap")
    def _without_absent_signature(self, handler: SerializerFunctionWrapHandler) -> Any:
        """An unsigned manifest (made before signing) is dumped as it was, with no key."""
        data = handler(self)
        if isinstance(data, dict) and data.get("signature", ...) is None:
            del data["signature"]
        return data

    def __eq__(self, other: object) -> bool:
        """Equal when they say the same; the bytes they were read from do not count."""
        if not isinstance(other, Manifest):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    @property
    def size_bytes(self) -> int:
        return sum(o.size_bytes for c in self.components for o in c.stored_objects())

    @property
    def stored(self) -> bytes | None:
        """The manifest's bytes as read from storage (None when not read from storage)."""
        return self._stored

    @property
    def detached_signature(self) -> bytes | None:
        """manifest.json.sig as read from storage beside it (None when there is none)."""
        return self._detached


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


async def write_manifest(storage: Storage, manifest: Manifest,
                         signature: bytes | None = None,
                         retain_until: datetime | None = None) -> None:
    """The manifest's detached signature first, then the manifest: still the last object
    (both locked until retain_until on an Object Lock target)."""
    key = manifest_key(manifest.job, manifest.id)
    if signature is not None:
        await storage.put_bytes(key + ".sig", signature, retain_until)
    await storage.put_bytes(key, encode_manifest(manifest), retain_until)


def lock_record(storage: Storage, retain_until: datetime) -> dict[str, Any]:
    """A target's entry in the manifest's `object_lock` (docs/format.md)."""
    return {"mode": storage.lock_mode, "retain_until": iso(retain_until)}


def recorded_lock(manifest: dict[str, Any] | None, target: str) -> datetime | None:
    """The retain-until a manifest (as JSON) records for a target; None: not locked there."""
    entry = ((manifest or {}).get("object_lock") or {}).get(target) or {}
    return parse_iso(entry.get("retain_until"))


async def read_manifest(storage: Storage, key: str) -> Manifest:
    """The manifest at key, upgraded to the current format. StorageError when it is not a
    manifest (unreadable, not JSON, fields missing); ManifestTooNew when a newer kbackupd
    wrote it."""
    data = await storage.get_bytes(key)
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise StorageError(
            f"storage {storage.name}: {key} is not a valid manifest: {exc}"
        ) from None
    except ManifestTooNew:
        raise
    except ManifestError as exc:
        raise StorageError(f"storage {storage.name}: {key}: {exc}") from None
    manifest._stored = data
    return manifest


async def read_signed_manifest(storage: Storage, key: str, signed: bool | None = None
                               ) -> Manifest:
    """read_manifest, with its detached signature when there is one (`signed`: whether the
    listing showed a manifest.json.sig; None: try to read it)."""
    manifest = await read_manifest(storage, key)
    if signed is not False:
        try:
            manifest._detached = await storage.get_bytes(key + ".sig")
        except StorageError as exc:
            if signed:
                log.warning("event=signature.unreadable storage=%s key=%s.sig error=%s",
                            storage.name, key, exc)
    return manifest


def _split_key(key: str) -> tuple[str, str, str] | None:
    """(job, backup_id, name) for keys in the backup layout, else None."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0].startswith("_") or not BACKUP_ID.match(parts[3]):
        return None
    return parts[0], parts[3], parts[4]


def is_manifest_key(key: str) -> bool:
    """A key (under a storage's prefix) of a backup's manifest in the layout."""
    split = _split_key(key)
    return split is not None and split[2] == MANIFEST


async def scan_manifests(storage: Storage, job: str | None = None, concurrency: int = 16
                         ) -> tuple[list[Manifest], list[ManifestTooNew]]:
    """The complete backups on a storage whose manifests this kbackupd reads (oldest first),
    and the refusals for those a newer kbackupd wrote. An unreadable manifest is an incomplete
    backup (logged, skipped); a too-new one is a complete backup this code cannot read.

    Manifests are read a few at a time: on S3 or WebDAV each is a request, and a repository
    of 10 000 backups read one by one takes minutes (bench/listing.py measures it)."""
    listed = {info.key for info in await storage.list(f"{job}/" if job else "")
              if (split := _split_key(info.key)) is not None and split[2] in (MANIFEST,
                                                                               SIGNATURE)}
    keys = [key for key in listed if key.endswith("/" + MANIFEST)]
    limit = asyncio.Semaphore(concurrency)

    async def one(key: str) -> Manifest | ManifestTooNew | None:
        async with limit:
            try:
                return await read_signed_manifest(storage, key, key + ".sig" in listed)
            except ManifestTooNew as exc:
                log.error("event=manifest.too_new storage=%s key=%s error=%s",
                          storage.name, key, exc)
                return exc
            except StorageError as exc:
                log.warning("event=manifest.unreadable storage=%s key=%s error=%s",
                            storage.name, key, exc)
                return None

    found = await asyncio.gather(*(one(key) for key in keys))
    manifests = [m for m in found if isinstance(m, Manifest)]
    manifests.sort(key=lambda m: m.started_at)
    return manifests, [m for m in found if isinstance(m, ManifestTooNew)]


async def list_manifests(storage: Storage, job: str | None = None,
                         concurrency: int = 16) -> list[Manifest]:
    """Every complete backup on a storage: the ones whose manifest is present and readable.

    A manifest from a newer kbackupd fails the whole listing (StorageError, one line naming
    the first such backup): a rescan that left those backups out would forget them."""
    manifests, too_new = await scan_manifests(storage, job, concurrency)
    if too_new:
        first = min(too_new, key=str)
        more = f" (and {len(too_new) - 1} more)" if len(too_new) > 1 else ""
        raise StorageError(f"{first}{more}")
    return manifests


async def delete_backup(storage: Storage, job: str, backup_id: str,
                        now: datetime | None = None) -> None:
    """Manifest first, so an interrupted delete never leaves a complete-looking backup. On a
    target with Object Lock, every object version's lock is read first: one still locked
    refuses the whole deletion (BackupLocked) before anything is touched."""
    prefix = backup_prefix(job, backup_id)
    until = await storage.locked_until(prefix)
    if until is not None and until > (now or datetime.now(UTC)):
        raise BackupLocked(f"backup {backup_id} is locked on target {storage.name} until"
                           f" {iso(until)}")
    await storage.delete(prefix + MANIFEST)
    for info in await storage.list(prefix):
        await storage.delete(info.key)
    await storage.remove_hidden(prefix)


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
            prefix = infos[0].key.rsplit("/", 1)[0] + "/"
            until = await storage.locked_until(prefix)
            if until is not None and until > now:  # a failed run's locked objects: later
                log.info("event=leftover.locked storage=%s prefix=%s until=%s", storage.name,
                         prefix, iso(until))
                continue
            for info in infos:
                await storage.delete(info.key)
                removed.append(info.key)
            await storage.remove_hidden(prefix)
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
        except StorageError as exc:
            failed[storage.name] = str(exc)
            log.error("event=audit.write_failed kind=%s target=%s key=%s error=%r", kind,
                      storage.name, key, str(exc))
    return failed
