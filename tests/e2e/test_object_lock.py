"""S3 Object Lock (issue 20): backups an intruder with the daemon's keys cannot erase.

Against moto's S3 server over HTTP, with a bucket created with Object Lock: every object of a
backup carries the lock; deletions before the retain-until date are refused (by kbackup
before it touches anything, and by the server itself); retention keeps locked backups and
removes them whole (no versions, no delete markers) once the lock ended; a bucket without
Object Lock stops the daemon at start and fails `storage check`; verify --level checksum
notices an object whose lock is gone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import KbEnv
from kbackup.repository import backup_prefix, clean_incomplete, delete_backup
from kbackup.storage import Storage
from kbackup.storage.base import BackupLocked
from kbackup.storage.probe import probe
from kbackup.times import parse_iso
from storage_servers import ServerProcess, open_test_storage, s3_client, s3_config, toml_table

pytest_plugins = ["storage_servers"]
MiB = 1 << 20


@pytest.fixture(scope="module")
def lock_bucket(s3_server: ServerProcess) -> str:
    """A bucket with Object Lock enabled (versioned, as S3 makes every such bucket)."""
    name = f"locked-{uuid.uuid4().hex[:8]}"
    s3_client(s3_server).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def make_locked(s3_server: ServerProcess, lock_bucket: str,
                tmp_path: Path) -> Callable[..., Storage]:
    def make(retain: str = "1h", mode: str = "governance", **overrides: Any) -> Storage:
        table = s3_config(s3_server, tmp_path / "secrets", bucket=lock_bucket,
                          object_lock={"mode": mode, "retain": retain}, **overrides)
        return open_test_storage("vault", table)
    return make


def versions(server: ServerProcess, bucket: str, prefix: str) -> dict[str, list[Any]]:
    """Every version and delete marker under a prefix, straight from the server."""
    page = s3_client(server).list_object_versions(Bucket=bucket, Prefix=prefix)
    return {"versions": page.get("Versions", []), "markers": page.get("DeleteMarkers", [])}


# ----------------------------------------------------------------------------- the backend


async def test_lock_every_write_is_locked_and_the_server_refuses_deleting_it(
    make_locked: Callable[..., Storage], s3_server: ServerProcess, lock_bucket: str,
) -> None:
    storage = make_locked(retain="1h")
    assert storage.lock_mode == "governance"
    until = storage.retain_until(datetime.now(UTC))
    assert until is not None and until.microsecond == 0
    big = b"x" * (6 * MiB)  # two parts: a multipart upload
    await storage.put_bytes("b/small", b"small", until)
    await storage.put_bytes("b/big", big, until)
    client = s3_client(s3_server)
    prefix = storage.prefix  # type: ignore[attr-defined]
    for key in ("b/small", "b/big"):
        head = client.head_object(Bucket=lock_bucket, Key=prefix + key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] == until
        lock = await storage.object_lock(key)
        assert lock is not None and lock.retain_until == until
    assert await storage.locked_until("b/") == until

    # The server refuses to delete a locked version; kbackup says so in one line.
    with pytest.raises(BackupLocked) as refused:
        await storage.delete("b/small")
    assert "\n" not in str(refused.value)
    assert "b/small" in str(refused.value) and "Object Lock" in str(refused.value)
    assert await storage.get_bytes("b/small") == b"small"
    assert await storage.get_bytes("b/big") == big
    found = versions(s3_server, lock_bucket, prefix + "b/")
    assert len(found["versions"]) == 2 and found["markers"] == []


async def test_lock_delete_backup_refuses_before_touching_anything_then_removes_all(
    make_locked: Callable[..., Storage], s3_server: ServerProcess, lock_bucket: str,
) -> None:
    storage = make_locked(retain="3s")
    backup_id = "20261203T020000Z-abc123"
    prefix = backup_prefix("shop", backup_id)
    until = storage.retain_until(datetime.now(UTC))
    for name in ("db-shop.dump.zst", "config.json.zst", "manifest.json"):
        await storage.put_bytes(prefix + name, name.encode(), until)
    full = storage.prefix + prefix  # type: ignore[attr-defined]

    with pytest.raises(BackupLocked) as refused:
        await delete_backup(storage, "shop", backup_id)
    assert str(refused.value) == (f"backup {backup_id} is locked on target vault until"
                                  f" {until:%Y-%m-%dT%H:%M:%SZ}")
    assert await storage.get_bytes(prefix + "manifest.json") == b"manifest.json"
    assert len(versions(s3_server, lock_bucket, full)["versions"]) == 3

    assert until is not None
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.2)
    await delete_backup(storage, "shop", backup_id)
    assert await storage.list(prefix) == []
    assert versions(s3_server, lock_bucket, full) == {"versions": [], "markers": []}


async def test_lock_storage_check_fails_on_a_bucket_without_object_lock(
    make_s3: Callable[..., Storage], make_locked: Callable[..., Storage],
) -> None:
    plain = make_s3(object_lock={"mode": "compliance", "days": 30})
    result = await probe(plain)
    assert result["ok"] is False
    assert result["reason"] == (
        "lock: storage offsite: object_lock is set but bucket kbackup-test has no Object"
        " Lock enabled (create the bucket with Object Lock)")
    good = await probe(make_locked())
    assert good["ok"] is True, good
    assert list(good["steps_ms"]) == ["lock", "write", "read", "list", "delete"]


# ----------------------------------------------------------------------------- the daemon


def lock_daemon(kb: KbEnv, server: ServerProcess, tmp_path: Path, bucket: str,
                retain: str, retention: str = "") -> dict[str, Any]:
    """A daemon with one files job backing up to a lock target `vault`."""
    table = s3_config(server, tmp_path / "secrets", bucket=bucket)
    lock = f'object_lock = {{ mode = "governance", retain = "{retain}" }}\n'
    kb.write_daemon(extra=toml_table("vault", table) + lock)
    tree = tmp_path / "docs"
    tree.mkdir(exist_ok=True)
    (tree / "a.txt").write_text("hello\n")
    kb.write_job("docs", f"""
targets = ["vault"]
timeout = "5m"
{retention}
[[files]]
name = "docs"
path = "{tree}"
""")
    return table


def one_line_failure(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return str(lines[0])


def test_lock_daemon_backup_is_locked_and_cannot_be_deleted(
    kb: KbEnv, s3_server: ServerProcess, lock_bucket: str, tmp_path: Path,
) -> None:
    table = lock_daemon(kb, s3_server, tmp_path, lock_bucket, "2h",
                        "[retention]\nkeep_last = 1\n")
    kb.start()
    first = kb.run_backup("docs")
    second = kb.run_backup("docs")
    lock = first["manifest"]["object_lock"]["vault"]
    assert lock["mode"] == "governance"
    until = parse_iso(lock["retain_until"])
    assert until is not None
    started = parse_iso(first["started_at"])
    assert started is not None
    assert timedelta(hours=2) <= until - started <= timedelta(hours=2, seconds=2)

    # Every object, manifest included, carries the lock the manifest records.
    client = s3_client(s3_server)
    prefix = table["prefix"] + backup_prefix("docs", first["id"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=lock_bucket,
                                                      Prefix=prefix)["Contents"]]
    files = [o["file"] for c in first["manifest"]["components"]
             for o in [c, *([c["index"]] if c.get("index") else [])]]
    stored = [*files, "manifest.json", "manifest.json.sig"]
    assert sorted(keys) == sorted(prefix + f for f in stored)
    for key in keys:
        head = client.head_object(Bucket=lock_bucket, Key=key)
        assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == (
            "GOVERNANCE", until), key

    shown = kb.ctl("show", first["id"])
    assert f"locked    vault: governance until {lock['retain_until']}" in shown.stdout

    # A deletion by hand is refused in one line, even with --force; nothing is touched.
    line = one_line_failure(kb.ctl("delete", first["id"], "--yes", "--force"))
    assert line.endswith(f"backup {first['id']} is locked on target vault until"
                         f" {lock['retain_until']}"), line
    assert len(versions(s3_server, lock_bucket, prefix)["versions"]) == len(keys)
    assert kb.ctl_json("show", first["id"])["targets"] == {"vault": "complete"}

    # Retention keeps the older backup while it is locked, and says why.
    dry = kb.ctl("prune", "docs", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    report = kb.ctl_json("prune", "docs")
    [older] = [d for d in report["targets"]["vault"] if d["id"] == first["id"]]
    assert older["keep"] and older["reasons"] == [f"locked until {lock['retain_until']}"]
    assert f"locked until {lock['retain_until']}" in dry.stdout
    assert report["removed"] == [] and report["errors"] == []
    assert len(versions(s3_server, lock_bucket, prefix)["versions"]) == len(keys)

    # verify --level checksum reads each lock back: fine now ...
    verified = kb.ctl("verify", first["id"], "--level", "checksum", "--wait")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # ... and a failure once an object's current version has no lock (rewritten as it was).
    victim = prefix + files[0]
    body = client.get_object(Bucket=lock_bucket, Key=victim)["Body"].read()
    client.put_object(Bucket=lock_bucket, Key=victim, Body=body)
    failed = kb.ctl("verify", first["id"], "--level", "checksum", "--wait")
    assert failed.returncode != 0
    verification = kb.ctl_json("show", first["id"])["verification"]
    assert verification["ok"] is False
    assert verification["problem"] == (
        f"{files[0]} on vault: not under Object Lock until {lock['retain_until']} as the"
        " manifest records (lock found: none)")
    assert second["status"] == "complete"


def test_lock_retention_removes_the_backup_whole_once_the_lock_ended(
    kb: KbEnv, s3_server: ServerProcess, lock_bucket: str, tmp_path: Path,
) -> None:
    table = lock_daemon(kb, s3_server, tmp_path, lock_bucket, "4s",
                        "[retention]\nkeep_last = 1\n")
    kb.start()
    first = kb.run_backup("docs")
    second = kb.run_backup("docs")
    until = parse_iso(first["manifest"]["object_lock"]["vault"]["retain_until"])
    assert until is not None
    early = kb.ctl_json("prune", "docs")
    assert early["removed"] == [] and early["errors"] == []

    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.5)
    dry = kb.ctl_json("prune", "docs", "--dry-run")
    [older] = [d for d in dry["targets"]["vault"] if d["id"] == first["id"]]
    assert older["keep"] is False and older["reasons"] == []
    report = kb.ctl_json("prune", "docs")
    assert report["removed"] == [{"id": first["id"], "target": "vault"}], report
    assert report["errors"] == []
    prefix = table["prefix"] + backup_prefix("docs", first["id"])
    assert versions(s3_server, lock_bucket, prefix) == {"versions": [], "markers": []}
    assert kb.ctl_json("show", first["id"])["status"] == "pruned"

    # The newer one, expired too, goes by hand as any other backup: entirely.
    second_until = parse_iso(second["manifest"]["object_lock"]["vault"]["retain_until"])
    assert second_until is not None
    time.sleep(max(0.0, (second_until - datetime.now(UTC)).total_seconds()) + 1.0)
    result = kb.ctl("delete", second["id"], "--yes", "--force")
    assert result.returncode == 0, result.stderr
    prefix = table["prefix"] + backup_prefix("docs", second["id"])
    assert versions(s3_server, lock_bucket, prefix) == {"versions": [], "markers": []}


def test_lock_daemon_refuses_a_bucket_without_object_lock(
    kb: KbEnv, s3_server: ServerProcess, lock_bucket: str, tmp_path: Path,
) -> None:
    table = s3_config(s3_server, tmp_path / "secrets")  # the plain test bucket
    expected = ("storage vault: object_lock is set but bucket kbackup-test has no Object"
                " Lock enabled (create the bucket with Object Lock)")
    kb.write_daemon(extra=toml_table("vault", table)
                    + 'object_lock = { mode = "compliance", days = 30 }\n')
    proc = kb.start(wait=False)
    assert proc.wait(30) == 1
    failed = [line for line in kb.logs().splitlines() if "start_failed" in line]
    assert len(failed) == 1 and expected in failed[0], kb.logs()

    # With a lock bucket it starts; a reload back to the plain bucket is rejected.
    lock_daemon(kb, s3_server, tmp_path, lock_bucket, "1h")
    kb.start()
    checked = kb.ctl("storage", "check", "vault")
    assert checked.returncode == 0 and "OK (lock " in checked.stdout, checked.stdout
    kb.write_daemon(extra=toml_table("vault", table)
                    + 'object_lock = { mode = "compliance", days = 30 }\n')
    result = kb.ctl("reload")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    status = kb.ctl_json("status")
    assert status["daemon"]["last_reload_error"] == expected


def test_lock_delete_marker_alone_is_cleaned_with_the_backup(
    make_locked: Callable[..., Storage], s3_server: ServerProcess, lock_bucket: str,
) -> None:
    """A DeleteObject without a version (another tool) only hides an object: the backup's
    deletion removes the hidden version and the marker too."""
    storage = make_locked(retain="2s")
    backup_id = "20261203T030000Z-def456"
    prefix = backup_prefix("shop", backup_id)
    until = storage.retain_until(datetime.now(UTC))

    async def write() -> None:
        for name in ("a.zst", "manifest.json"):
            await storage.put_bytes(prefix + name, b"x", until)

    asyncio.run(write())
    full = storage.prefix + prefix  # type: ignore[attr-defined]
    s3_client(s3_server).delete_object(Bucket=lock_bucket, Key=full + "a.zst")
    assert len(versions(s3_server, lock_bucket, full)["markers"]) == 1
    assert until is not None
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.2)
    asyncio.run(delete_backup(storage, "shop", backup_id))
    assert versions(s3_server, lock_bucket, full) == {"versions": [], "markers": []}


async def test_lock_leftovers_of_a_failed_run_wait_for_their_lock(
    make_locked: Callable[..., Storage], s3_server: ServerProcess, lock_bucket: str,
) -> None:
    """A run that failed cannot remove what it locked: the leftover cleanup skips it while
    the lock holds (no error), and removes every version once it has ended."""
    storage = make_locked(retain="2s")
    backup_id = "20261203T040000Z-0f1e2d"
    prefix = backup_prefix("shop", backup_id)
    until = storage.retain_until(datetime.now(UTC))
    await storage.put_bytes(prefix + "db-shop.dump.zst", b"half a backup", until)
    full = storage.prefix + prefix  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    assert await clean_incomplete(storage, {backup_id}, now, timedelta(days=1)) == []
    assert await storage.get_bytes(prefix + "db-shop.dump.zst") == b"half a backup"

    assert until is not None
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.2)
    removed = await clean_incomplete(storage, {backup_id}, datetime.now(UTC),
                                     timedelta(days=1))
    assert removed == [prefix + "db-shop.dump.zst"]
    assert versions(s3_server, lock_bucket, full) == {"versions": [], "markers": []}
