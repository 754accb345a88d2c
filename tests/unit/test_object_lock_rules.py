"""Object Lock (issue 20) without a server: the `object_lock` table of an S3 target, the
retain-until date a backup gets, what a manifest records, and retention keeping a locked
backup (for the lock alone, counting for no rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from kbackup.config import RetentionConfig, S3StorageConfig, StorageConfig
from kbackup.repository import recorded_lock
from kbackup.retention import Candidate, decide
from kbackup.storage.local import LocalStorage

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def s3_table(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    key = tmp_path / "key"
    key.write_text("k\n")
    return {"type": "s3", "bucket": "vault", "access_key_id_file": str(key),
            "secret_access_key_file": str(key), **extra}


def test_object_lock_takes_days_or_a_duration(tmp_path: Path) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(StorageConfig)
    by_days = adapter.validate_python(
        s3_table(tmp_path, object_lock={"mode": "compliance", "days": 30}))
    assert isinstance(by_days, S3StorageConfig) and by_days.object_lock is not None
    assert by_days.object_lock.seconds == 30 * 86400
    by_duration = adapter.validate_python(
        s3_table(tmp_path, object_lock={"mode": "governance", "retain": "36h"}))
    assert by_duration.object_lock.seconds == 36 * 3600
    assert adapter.validate_python(s3_table(tmp_path)).object_lock is None


@pytest.mark.parametrize(("lock", "expected"), [
    ({"mode": "governance"}, "exactly one of days"),
    ({"mode": "governance", "days": 3, "retain": "3d"}, "exactly one of days"),
    ({"mode": "legal-hold", "days": 3}, "'governance' or 'compliance'"),
    ({"mode": "compliance", "days": 0}, "greater than or equal to 1"),
    ({"mode": "compliance", "days": 3, "years": 1}, "Extra inputs are not permitted"),
])
def test_object_lock_refuses_what_it_cannot_mean(tmp_path: Path, lock: dict[str, Any],
                                                  expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(StorageConfig).validate_python(s3_table(tmp_path, object_lock=lock))
    assert expected in str(refused.value)


def test_retain_until_is_the_start_plus_the_lock_rounded_up_to_a_second(
        tmp_path: Path) -> None:
    storage = LocalStorage("disk", tmp_path)
    assert storage.retain_until(NOW) is None  # no lock on this target
    storage.lock_mode, storage.lock_seconds = "compliance", 1.5
    assert storage.retain_until(NOW + timedelta(microseconds=200_000)) == \
        NOW + timedelta(seconds=2)
    assert storage.retain_until(NOW) == NOW + timedelta(seconds=2)  # 1.5 s: up to 2


def test_recorded_lock_reads_the_manifests_object_lock() -> None:
    manifest = {"object_lock": {"vault": {"mode": "governance",
                                          "retain_until": "2026-12-10T12:00:00Z"}}}
    assert recorded_lock(manifest, "vault") == datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
    assert recorded_lock(manifest, "local") is None
    assert recorded_lock({}, "vault") is None and recorded_lock(None, "vault") is None


def test_retention_keeps_a_locked_backup_for_the_lock_alone() -> None:
    backups = [Candidate(f"b{i}", NOW - timedelta(days=3 - i), "complete", "scheduled")
               for i in range(3)]
    backups[0].locked_until = NOW + timedelta(hours=1)  # the oldest, still locked
    backups[1].locked_until = NOW - timedelta(seconds=1)  # its lock just ended
    policy = RetentionConfig(keep_last=1, min_keep=1)
    decisions = {d.backup.id: d for d in decide(backups, policy, ZoneInfo("UTC"), NOW)}
    assert decisions["b0"].keep and decisions["b0"].reasons == [
        "locked until 2026-12-03T13:00:00Z"]
    assert not decisions["b1"].keep and decisions["b1"].reasons == []
    assert decisions["b2"].reasons == ["keep_last 1"]
