"""S3 Object Lock for the S3 backend (`object_lock` of an S3 target), apart from s3.py.

A bucket with Object Lock is versioned: a DeleteObject without a version id only puts a
delete marker in front of the data, and S3 refuses to delete a locked version (AccessDenied),
whoever asks, unless a governance-mode lock is bypassed, which kbackup never asks for. So on a
lock target kbackup deletes versions, and reads every version's lock before a deletion starts.
"""

from __future__ import annotations

import builtins
import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from kbackup.storage.base import BackupLocked, LockMissing, ObjectLock, StorageError

if TYPE_CHECKING:
    from kbackup.storage.s3 import S3Storage

Version = tuple[str, str, bool]  # (full key, version id, is a delete marker)


async def check_lock(storage: S3Storage) -> None:
    """LockMissing (one line) unless GetObjectLockConfiguration says Enabled."""

    async def get() -> Any:
        try:
            return await client.get_object_lock_configuration(Bucket=storage.bucket)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                    "ObjectLockConfigurationNotFoundError", "InvalidRequest"):
                return {}
            raise

    async with storage.client() as client:
        answer = await storage.call("GetObjectLockConfiguration", "/", get)
    if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
        raise LockMissing(f"storage {storage.name}: object_lock is set but bucket"
                          f" {storage.bucket} has no Object Lock enabled (create the bucket"
                          " with Object Lock)")


async def head_lock(storage: S3Storage, client: Any, full: str, key: str,
                    version: str | None = None) -> ObjectLock | None:
    """The lock of one version (the current one without `version`), from HeadObject."""
    extra = {"VersionId": version} if version else {}

    async def head() -> Any:
        try:
            return await client.head_object(Bucket=storage.bucket, Key=full, **extra)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return {}
            raise

    found = await storage.call("HeadObject", key, head)
    until = found.get("ObjectLockRetainUntilDate")
    if not until or not found.get("ObjectLockMode"):
        return None
    return ObjectLock(str(found["ObjectLockMode"]).lower(), until.astimezone(UTC))


async def locked_until(storage: S3Storage, full_prefix: str) -> datetime | None:
    """The latest retain-until of any version under the prefix (hidden ones too)."""
    latest: datetime | None = None
    async with storage.client() as client:
        for full, version, marker in await versions(storage, full_prefix):
            if marker:
                continue
            lock = await head_lock(storage, client, full, full[len(storage.prefix):], version)
            if lock is not None and (latest is None or lock.retain_until > latest):
                latest = lock.retain_until
    return latest


async def versions(storage: S3Storage, full_prefix: str) -> builtins.list[Version]:
    """Every version and delete marker under the prefix (ListObjectVersions, paged)."""
    found: builtins.list[Version] = []
    markers: dict[str, str] = {}
    async with storage.client() as client:
        while True:
            kwargs: dict[str, Any] = {"Bucket": storage.bucket, "Prefix": full_prefix,
                                      **markers}
            page = await storage.call(
                "ListObjectVersions", full_prefix[len(storage.prefix):] or "/",
                lambda: client.list_object_versions(**kwargs),  # noqa: B023
            )
            found += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
            found += [(v["Key"], v["VersionId"], True) for v in page.get("DeleteMarkers", [])]
            if not page.get("IsTruncated"):
                return found
            markers = {"KeyMarker": page.get("NextKeyMarker", ""),
                       "VersionIdMarker": page.get("NextVersionIdMarker", "")}


async def delete_versions(storage: S3Storage, found: builtins.list[Version]) -> None:
    """Delete these versions for good (never with a governance bypass); S3's refusal of a
    locked one is BackupLocked, one line naming the key."""
    async with storage.client() as client:
        for full, version, _ in found:
            key = full[len(storage.prefix):]
            try:
                await storage.call("DeleteObject", key, functools.partial(
                    client.delete_object, Bucket=storage.bucket, Key=full, VersionId=version))
            except StorageError as exc:
                if ": AccessDenied" in str(exc):
                    raise BackupLocked(f"storage {storage.name}: S3 refused to delete {key}"
                                       " (HTTP 403 AccessDenied): it is under Object Lock"
                                       " or the key may not delete versions") from None
                raise


async def ensure_lock(storage: S3Storage, client: Any, full: str, key: str,
                      retain_until: datetime) -> None:
    """Read a committed object's lock back; where the server did not apply the lock headers
    (moto and some S3-compatible servers ignore them on a multipart upload), set it with
    PutObjectRetention, so that every object of a backup is locked."""
    lock = await head_lock(storage, client, full, key)
    if lock is not None and lock.retain_until >= retain_until:
        return
    await storage.call("PutObjectRetention", key, functools.partial(
        client.put_object_retention, Bucket=storage.bucket, Key=full,
        Retention={"Mode": (storage.lock_mode or "").upper(), "RetainUntilDate": retain_until}))
    if await head_lock(storage, client, full, key) is None:
        raise StorageError(f"storage {storage.name}: {key}: the bucket did not lock the object"
                           " (Object Lock not supported?)")
