"""The repository format on a local storage in tmp: the manifest to JSON and back, the
layout of keys, listing complete backups, deleting one, cleaning leftovers, audit records."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kbackup.repository import (
    FORMAT_VERSION,
    Component,
    Manifest,
    StoredObject,
    audit_key,
    backup_prefix,
    backup_started,
    clean_incomplete,
    delete_backup,
    encode_manifest,
    list_manifests,
    manifest_key,
    new_backup_id,
    read_manifest,
    write_audit,
    write_manifest,
)
from kbackup.storage.base import StorageError
from kbackup.storage.local import LocalStorage

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def make_manifest(job: str = "shop", started: datetime = NOW, **extra: object) -> Manifest:
    bid = new_backup_id(started)
    finished = started + timedelta(minutes=2)
    return Manifest(
        id=bid, job=job, trigger="scheduled", tag="daily", label=None, host="db1",
        kbackup_version="0.1.0", started_at=started.isoformat(), finished_at=finished.isoformat(),
        components=[
            Component(name="shop", kind="postgres", file="shop.dump.zst", size_bytes=1000,
                      sha256="a" * 64, raw_bytes=9000,
                      compression={"algorithm": "zstd", "level": 1},
                      database={"server_version": "16.4", "row_counts": {"orders": 12}}),
            Component(name="pdfs", kind="files", file="pdfs.tar.zst", size_bytes=500,
                      sha256="b" * 64, raw_bytes=700, compression={"algorithm": "zstd"},
                      encryption={"mode": "gpg-symmetric", "cipher": "AES256"},
                      files={"file_count": 3},
                      index=StoredObject(file="pdfs.index.json.zst", size_bytes=40,
                                         sha256="c" * 64)),
        ],
        **extra,
    )


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local", tmp_path / "store")


async def put_backup(storage: LocalStorage, manifest: Manifest, with_manifest: bool = True) -> str:
    prefix = backup_prefix(manifest.job, manifest.id)
    for component in manifest.components:
        for obj in component.stored_objects():
            await storage.put_bytes(prefix + obj.file, b"x" * obj.size_bytes)
    if with_manifest:
        await write_manifest(storage, manifest)
    return prefix


def age(storage: LocalStorage, key: str, seconds: float) -> None:
    path = storage.root / key
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


# ---------------------------------------------------------------------------- the manifest


def test_a_manifest_survives_json_and_back() -> None:
    manifest = make_manifest(note="written by a newer kbackupd")  # unknown fields are kept
    data = encode_manifest(manifest)
    assert data.endswith(b"}\n")
    as_json = json.loads(data)
    assert as_json["format"] == FORMAT_VERSION
    assert as_json["note"] == "written by a newer kbackupd"
    assert list(as_json) == sorted(as_json)  # stable output: keys sorted
    again = Manifest.model_validate_json(data)
    assert again == manifest
    assert encode_manifest(again) == data
    assert again.components[1].index == StoredObject(file="pdfs.index.json.zst",
                                                     size_bytes=40, sha256="c" * 64)
    assert again.components[0].encryption == {"mode": "none"}  # the default, recorded


def test_extra_component_fields_are_kept() -> None:
    raw = json.loads(encode_manifest(make_manifest()))
    raw["components"][0]["checksum_of_tables"] = {"orders": "abc"}
    again = Manifest.model_validate(raw)
    assert json.loads(encode_manifest(again))["components"][0]["checksum_of_tables"] == {
        "orders": "abc"}


def test_size_counts_every_stored_object() -> None:
    manifest = make_manifest()
    assert manifest.size_bytes == 1000 + 500 + 40
    assert [o.file for o in manifest.components[1].stored_objects()] == [
        "pdfs.tar.zst", "pdfs.index.json.zst"]


def test_a_manifest_without_a_required_field_is_refused() -> None:
    raw = json.loads(encode_manifest(make_manifest()))
    del raw["components"][0]["sha256"]
    with pytest.raises(ValueError, match="sha256"):
        Manifest.model_validate(raw)
    # A kind this version has no driver for still reads (a later kbackupd may add kinds
    # within the format); using such a component is what fails, naming the kind.
    raw = json.loads(encode_manifest(make_manifest()))
    raw["components"][0]["kind"] = "mysql"
    assert Manifest.model_validate(raw).components[0].kind == "mysql"


def test_backup_ids_and_the_layout_of_keys() -> None:
    when = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    bid = new_backup_id(when)
    assert bid.startswith("20260301T003000Z-") and len(bid) == 23
    assert new_backup_id(when) != bid  # a random suffix: no clash within a second
    assert backup_started(bid) == when
    assert backup_prefix("shop", bid) == f"shop/2026/03/{bid}/"
    assert manifest_key("shop", bid) == f"shop/2026/03/{bid}/manifest.json"
    # Ids are in UTC, whatever the zone of the time given.
    local = datetime(2026, 3, 1, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert new_backup_id(local).startswith("20260301T003000Z-")
    assert audit_key("restores", "r1", local) == "_audit/restores/2026/03/r1.json"


# ---------------------------------------------------------------------------- on a storage


async def test_write_and_read_a_manifest(local: LocalStorage) -> None:
    manifest = make_manifest()
    await write_manifest(local, manifest)
    key = manifest_key("shop", manifest.id)
    assert (local.root / key).read_bytes() == encode_manifest(manifest)
    assert await read_manifest(local, key) == manifest
    assert not list(local.root.rglob("*.partial"))


async def test_an_unreadable_manifest_is_a_storage_error(local: LocalStorage) -> None:
    key = manifest_key("shop", new_backup_id(NOW))
    await local.put_bytes(key, b'{"id": "half a manif')
    with pytest.raises(StorageError) as caught:
        await read_manifest(local, key)
    assert str(caught.value).startswith(f"storage local: {key} is not a valid manifest")


async def test_listing_finds_complete_backups_only(local: LocalStorage,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    days = [make_manifest(started=NOW - timedelta(days=d)) for d in (3, 1, 2, 40)]
    for manifest in days:
        await put_backup(local, manifest)
    other_job = make_manifest(job="shop2")  # a job whose name starts like another one
    await put_backup(local, other_job)
    no_manifest = make_manifest(started=NOW - timedelta(hours=1))
    await put_backup(local, no_manifest, with_manifest=False)
    broken = make_manifest(started=NOW - timedelta(hours=2))
    await put_backup(local, broken, with_manifest=False)
    await local.put_bytes(manifest_key("shop", broken.id), b"not json")
    await local.put_bytes(audit_key("restores", "r1", NOW), b"{}")
    await local.put_bytes("shop/2026/11/not-a-backup-id/manifest.json",
                          encode_manifest(make_manifest()))

    found = await list_manifests(local, "shop")
    oldest_first = sorted(days, key=lambda m: m.started_at)
    assert [m.id for m in found] == [m.id for m in oldest_first]
    assert [m.id for m in await list_manifests(local, "shop2")] == [other_job.id]
    everything = await list_manifests(local)
    assert {m.id for m in everything} == {m.id for m in days} | {other_job.id}
    assert await list_manifests(local, "nojob") == []
    assert f"key={manifest_key('shop', broken.id)}" in caplog.text  # logged, then skipped


async def test_listing_an_empty_or_missing_storage(tmp_path: Path) -> None:
    assert await list_manifests(LocalStorage("none", tmp_path / "missing")) == []


async def test_delete_backup_removes_the_manifest_and_every_object(local: LocalStorage) -> None:
    keep, gone = make_manifest(), make_manifest()
    await put_backup(local, keep)
    prefix = await put_backup(local, gone)
    await delete_backup(local, "shop", gone.id)
    assert await local.list(prefix) == []
    assert not (local.root / prefix).exists()  # no empty directories left behind
    assert [m.id for m in await list_manifests(local, "shop")] == [keep.id]
    await delete_backup(local, "shop", gone.id)  # again: nothing to do, no error


async def test_clean_incomplete_removes_leftovers_and_nothing_else(local: LocalStorage) -> None:
    complete = make_manifest(started=NOW - timedelta(days=5))
    complete_prefix = await put_backup(local, complete)
    await local.put_bytes(complete_prefix + "stray.partial", b"x")  # beside a manifest: kept

    died = make_manifest()  # the catalog knows this run died: removed at once
    died_prefix = await put_backup(local, died, with_manifest=False)
    writer = await local.open_writer(died_prefix + "shop.dump.zst.next")
    await writer.write(b"half")  # an uncommitted object: <key>.partial

    young = make_manifest()  # unknown origin, young: maybe another daemon writing it
    young_prefix = await put_backup(local, young, with_manifest=False)

    old = make_manifest(started=NOW - timedelta(days=3))  # unknown origin, two days old
    old_prefix = await put_backup(local, old, with_manifest=False)
    for info in await local.list(old_prefix):
        age(local, info.key, 2 * 86400)

    audit = audit_key("deletions", "d1", NOW)
    await local.put_bytes(audit, b"{}")
    age(local, audit, 30 * 86400)

    expected = [info.key for prefix in (died_prefix, old_prefix)
                for info in await local.list(prefix)]
    assert any(key.endswith(".partial") for key in expected)
    now = datetime.now(UTC)
    removed = await clean_incomplete(local, {died.id}, now, timedelta(days=1))
    assert sorted(removed) == sorted(expected)
    assert await local.list(died_prefix) == [] and await local.list(old_prefix) == []
    assert len(await local.list(young_prefix)) == 3
    assert len(await local.list(complete_prefix)) == 5
    assert await local.stat(audit) is not None
    await writer.abort()

    # Once old enough, the unknown one goes too.
    later = now + timedelta(days=2)
    assert {k.split("/")[3] for k in await clean_incomplete(local, set(), later,
                                                            timedelta(days=1))} == {young.id}
    assert [m.id for m in await list_manifests(local)] == [complete.id]


# ---------------------------------------------------------------------------- audit records


async def test_audit_records_go_to_every_target_and_failures_are_returned(
        local: LocalStorage, tmp_path: Path) -> None:
    other = LocalStorage("other", tmp_path / "other")
    blocked_root = tmp_path / "blocked"
    blocked_root.write_text("a file where a directory should be")
    blocked = LocalStorage("blocked", blocked_root)
    record = {"backup": "b1", "by": "alice"}
    failed = await write_audit([local, blocked, other], "deletions", "d1", record, NOW)
    assert list(failed) == ["blocked"] and "storage blocked" in failed["blocked"]
    key = audit_key("deletions", "d1", NOW)
    assert key == "_audit/deletions/2026/11/d1.json"
    for storage in (local, other):
        assert json.loads(await storage.get_bytes(key)) == record
    assert await list_manifests(local) == []  # an audit record is never a backup
