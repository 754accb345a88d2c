"""Format versions: the golden manifests of every format (tests/golden/) read as documented in
docs/format.md, a newer format refused in one line (also by `kbackupctl catalog rescan`
through a real kbackupd), and a catalog made by today's code opened and migrated."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import KbEnv
from kbackup.audit import AuditLog
from kbackup.catalog import SCHEMA_VERSION, Catalog
from kbackup.repository import (
    FORMAT_VERSION,
    UPGRADES,
    Manifest,
    ManifestError,
    ManifestTooNew,
    StoredObject,
    encode_manifest,
    list_manifests,
    manifest_key,
    read_manifest,
    scan_manifests,
)
from kbackup.storage import StorageError
from kbackup.storage.local import LocalStorage

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
RECIPIENT = "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567"


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text())  # type: ignore[no-any-return]


def test_every_format_has_a_golden_manifest_and_an_upgrade_step() -> None:
    assert FORMAT_VERSION == 2
    for version in range(1, FORMAT_VERSION + 1):
        assert (GOLDEN / f"manifest-v{version}.json").exists()
        assert (GOLDEN / f"manifest-v{version}-gpg.json").exists()
        assert golden(f"manifest-v{version}.json")["format"] == version
    assert sorted(UPGRADES) == list(range(1, FORMAT_VERSION))
    assert f"### Format {FORMAT_VERSION} " in (GOLDEN.parents[1] / "docs" / "format.md").read_text()


def check_common(m: Manifest) -> None:
    """What every golden manifest holds: postgres, its globals, a file tree, the config."""
    assert m.format == FORMAT_VERSION and m.job == "shop" and m.host == "db1.example.com"
    assert [(c.name, c.kind) for c in m.components] == [
        ("shop", "postgres"), ("shop.globals", "globals"), ("pdfs", "files"),
        ("config", "config")]
    db, glob, files, config = m.components
    assert db.database is not None and db.database["row_counts"] == {
        "public.Line Items": 3000, "public.customers": 50, "public.invoices": 2000}
    assert db.database["format"] == "pg_dump custom (-Fc -Z0)"
    assert db.database["server_version_num"] == 150020 and db.database["database"] == "shop"
    assert db.files is None and db.index is None and db.raw_bytes == 195384
    assert glob.database is None and glob.index is None and glob.files is None
    assert files.files == {"path": "/srv/shop/pdfs", "file_count": 8, "total_bytes": 219018,
                           "entries": 12}
    assert files.index is not None and files.index.file.startswith("files-pdfs.index.json.zst")
    assert config.file.startswith("config.json.zst")
    for c in m.components:
        assert c.compression == {"algorithm": "zstd", "level": 1}
        assert len(c.sha256) == 64 and c.size_bytes > 0
        # A component is a stored object (shared fields, not copies of them).
        assert isinstance(c, StoredObject)
        assert c.stored_objects()[0] == StoredObject(file=c.file, size_bytes=c.size_bytes,
                                                     sha256=c.sha256)
    assert [len(c.stored_objects()) for c in m.components] == [1, 1, 2, 1]
    assert m.size_bytes == sum(o.size_bytes for c in m.components for o in c.stored_objects())


def test_format_1_plain_without_tag_and_label() -> None:
    m = Manifest.model_validate_json((GOLDEN / "manifest-v1.json").read_bytes())
    check_common(m)
    assert (m.id, m.trigger, m.tag, m.label) == ("20261101T020000Z-1a2b3c", "scheduled",
                                                   None, None)
    assert (m.started_at, m.finished_at) == ("2026-11-01T02:00:00Z", "2026-11-01T02:00:04Z")
    assert [c.file for c in m.components] == [
        "db-shop.dump.zst", "globals-shop.sql.zst", "files-pdfs.tar.zst", "config.json.zst"]
    assert all(c.encryption == {"mode": "none"} for c in m.components)
    assert m.size_bytes == 71059 + 367 + 220292 + 513 + 1020
    # Written again, it is format 2 with the keys format 2 always has.
    again = json.loads(encode_manifest(m))
    assert again["format"] == 2 and again["tag"] is None and again["label"] is None
    assert {k: v for k, v in again.items() if k not in ("format", "tag", "label")} == {
        k: v for k, v in golden("manifest-v1.json").items() if k != "format"}


def test_format_1_encrypted_to_recipients_with_a_label() -> None:
    m = Manifest.model_validate(golden("manifest-v1-gpg.json"))
    check_common(m)
    assert (m.trigger, m.tag, m.label) == ("manual", None, "before-migration")
    assert all(c.file.endswith(".zst.gpg") for c in m.components)
    assert all(c.encryption == {"mode": "gpg-recipients", "cipher": "AES256",
                                "recipients": [RECIPIENT]} for c in m.components)


def test_format_2_plain_and_symmetric() -> None:
    plain = Manifest.model_validate_json((GOLDEN / "manifest-v2.json").read_bytes())
    check_common(plain)
    assert (plain.id, plain.trigger, plain.tag, plain.label) == (
        "20261203T020000Z-3fa9c1", "scheduled", "daily", None)
    assert all(c.encryption == {"mode": "none"} for c in plain.components)
    enc = Manifest.model_validate_json((GOLDEN / "manifest-v2-gpg.json").read_bytes())
    check_common(enc)
    assert (enc.trigger, enc.tag, enc.label) == ("catch-up", "weekly", "q4-close")
    assert [c.file for c in enc.components] == [
        "db-shop.dump.zst.gpg", "globals-shop.sql.zst.gpg", "files-pdfs.tar.zst.gpg",
        "config.json.zst.gpg"]
    assert enc.components[2].index == StoredObject(
        file="files-pdfs.index.json.zst.gpg", size_bytes=581,
        sha256=enc.components[2].index.sha256)  # type: ignore[union-attr]
    assert all(c.encryption == {"mode": "gpg-symmetric", "cipher": "AES256"}
               for c in enc.components)
    # Today's code writes format 2 exactly as the golden files have it, byte for byte: a
    # change here is a format change (docs/format.md, "Format versions").
    for name, manifest in (("manifest-v2.json", plain), ("manifest-v2-gpg.json", enc)):
        assert encode_manifest(manifest) == (GOLDEN / name).read_bytes()


def newer(version: int = FORMAT_VERSION + 1) -> dict[str, Any]:
    return {**golden("manifest-v2.json"), "format": version, "new_stage": {"x": 1}}


def test_a_newer_format_is_refused_in_one_line() -> None:
    expected = ("manifest.json of backup 20261203T020000Z-3fa9c1: format 3 is newer than"
                " this kbackupd reads (2): upgrade kbackupd")
    with pytest.raises(ManifestTooNew) as caught:
        Manifest.model_validate(newer())  # how verify and restore read the catalog's copy
    assert str(caught.value) == expected
    with pytest.raises(ManifestTooNew) as caught:
        Manifest.model_validate_json(json.dumps(newer()))
    assert str(caught.value) == expected
    with pytest.raises(ManifestError, match="format 0 is not a kbackup manifest format"):
        Manifest.model_validate({**golden("manifest-v2.json"), "format": 0})


def test_storage_readers_refuse_a_newer_manifest_and_skip_broken_ones(tmp_path: Path) -> None:
    storage = LocalStorage("local", tmp_path)
    current = golden("manifest-v2.json")
    too_new = {**newer(), "id": "20261204T020000Z-aaaaaa"}

    async def scenario() -> None:
        for m in (current, too_new, golden("manifest-v1.json")):
            await storage.put_bytes(manifest_key("shop", m["id"]), json.dumps(m).encode())
        await storage.put_bytes(manifest_key("shop", "20261205T020000Z-bbbbbb"), b"{broken")
        with pytest.raises(ManifestTooNew, match="format 3 is newer"):
            await read_manifest(storage, manifest_key("shop", too_new["id"]))
        found, refused = await scan_manifests(storage)
        assert [m.id for m in found] == ["20261101T020000Z-1a2b3c", "20261203T020000Z-3fa9c1"]
        assert [str(r) for r in refused] == [
            "manifest.json of backup 20261204T020000Z-aaaaaa: format 3 is newer than this"
            " kbackupd reads (2): upgrade kbackupd"]
        with pytest.raises(StorageError) as caught:
            await list_manifests(storage)
        assert str(caught.value) == str(refused[0])

    asyncio.run(scenario())


def place(kb: KbEnv, manifest: dict[str, Any]) -> Path:
    key = manifest_key(manifest["job"], manifest["id"])
    path = kb.store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2))
    return path


def files_job(kb: KbEnv) -> None:
    (kb.base / "tree").mkdir()
    kb.write_job("shop", f'schedules = [ {{ cron = "0 2 * * *", tag = "daily" }} ]\n'
                         f'targets = ["local"]\n[[files]]\nname = "pdfs"\n'
                         f'path = "{kb.base / "tree"}"\n')


def test_rescan_through_the_daemon_reports_a_newer_format_and_forgets_nothing(
        kb: KbEnv) -> None:
    files_job(kb)
    place(kb, golden("manifest-v1.json"))
    place(kb, golden("manifest-v2-gpg.json"))
    kb.start()
    first = kb.ctl("catalog", "rescan")
    assert first.returncode == 0, first.stderr
    listed = kb.ctl_items("backups")
    assert sorted(b["id"] for b in listed) == ["20261101T020000Z-1a2b3c",
                                               "20261206T030012Z-7c8d9e"]
    by_id = {b["id"]: b for b in listed}
    assert by_id["20261206T030012Z-7c8d9e"]["tag"] == "weekly"
    assert by_id["20261206T030012Z-7c8d9e"]["label"] == "q4-close"
    shown = kb.ctl_json("show", "20261101T020000Z-1a2b3c")
    assert shown["manifest"]["format"] == FORMAT_VERSION  # the catalog keeps it upgraded

    too_new = place(kb, {**newer(), "id": "20261207T020000Z-cccccc"})
    result = kb.ctl("catalog", "rescan")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: local: ")
    assert errors[0].endswith("manifest.json of backup 20261207T020000Z-cccccc: format 3 is"
                              " newer than this kbackupd reads (2): upgrade kbackupd")
    assert kb.ctl("status").returncode == 0 and kb.proc is not None and kb.proc.poll() is None
    # Nothing forgotten, nothing half-read.
    assert sorted(b["id"] for b in kb.ctl_items("backups")) == [
        "20261101T020000Z-1a2b3c", "20261206T030012Z-7c8d9e"]
    assert "event=manifest.too_new" in kb.logs()

    too_new.unlink()
    assert kb.ctl("catalog", "rescan").returncode == 0


# ---------------------------------------------------------------------- the catalog


def load_golden_catalog(state: Path) -> None:
    """tests/golden/catalog-v2.sql: the SQL dump (plus user_version) of a catalog made by a
    real kbackupd at schema version 2: backups (one labelled), runs, verifications, a restore,
    a pause and its resume, a deletion, schedule and health bookkeeping; its manifests are
    format 1, as kbackupd wrote them before format 2."""
    state.mkdir(parents=True)
    db = sqlite3.connect(state / "catalog.sqlite3")
    db.executescript((GOLDEN / "catalog-v2.sql").read_text())
    db.close()


def test_a_catalog_made_at_schema_version_2_opens_and_migrates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    load_golden_catalog(state)
    raw = sqlite3.connect(state / "catalog.sqlite3")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    raw.close()

    catalog = Catalog(state)
    assert catalog.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    backups = catalog.backups("shop")
    assert [(b["id"], b["label"], b["status"]) for b in backups] == [
        ("20261203T103505Z-3fdabe", None, "complete"),
        ("20261203T103502Z-32fabb", "before-upgrade", "complete")]
    assert [b["id"] for b in catalog.backups("shop", label="before-upgrade")] == [
        "20261203T103502Z-32fabb"]
    listing = catalog.backup_listing("shop")
    assert len(listing) == 2 and catalog.count_backups("shop") == 2
    row = catalog.get_backup("20261203T103502Z-32fabb")
    assert row is not None and row["targets"] == {"local": "complete"}
    # What verify and restore do with the catalog's copy: read it as the current format.
    manifest = Manifest.model_validate(row["manifest"])
    assert manifest.format == FORMAT_VERSION and manifest.label == "before-upgrade"
    assert [c.kind for c in manifest.components] == ["postgres", "globals", "files", "config"]
    assert [r["kind"] for r in catalog.runs("shop", limit=10)].count("backup") == 3
    assert catalog.last_verification("20261203T103505Z-3fdabe")["ok"]  # type: ignore[index]
    assert [r["status"] for r in catalog.restores("shop")] == ["complete"]
    assert catalog.pause_record("shop")["resumed_by"] == "root"  # type: ignore[index]
    assert catalog.active_pause("shop", datetime(2026, 12, 3, 11, 0, tzinfo=UTC)) is None
    deletions = AuditLog(catalog).deletions("shop")
    assert [(d["backup_id"], d["reason"]) for d in deletions] == [
        ("20261203T103501Z-662332", "test")]
    catalog.close()


def test_kbackupd_starts_on_the_golden_catalog(kb: KbEnv) -> None:
    files_job(kb)
    load_golden_catalog(kb.state)
    kb.start()
    assert [b["id"] for b in kb.ctl_items("backups")] == [
        "20261203T103505Z-3fdabe", "20261203T103502Z-32fabb"]
    assert kb.ctl_json("show", "20261203T103502Z-32fabb")["label"] == "before-upgrade"
    assert kb.ctl("status").returncode == 0


def test_verify_and_restore_refuse_a_newer_manifest_in_the_catalog(kb: KbEnv) -> None:
    """A catalog row holding a newer manifest (a newer kbackupd used this state_dir): verify
    fails and restore is refused (409), each with the one line."""
    files_job(kb)
    place(kb, golden("manifest-v2.json"))
    kb.start()
    assert kb.ctl("catalog", "rescan").returncode == 0
    kb.stop()
    db = sqlite3.connect(kb.state / "catalog.sqlite3")
    (text,) = db.execute("SELECT manifest FROM backups").fetchone()
    db.execute("UPDATE backups SET manifest=?", (json.dumps({**json.loads(text), "format": 3}),))
    db.commit()
    db.close()
    kb.start()
    line = ("manifest.json of backup 20261203T020000Z-3fa9c1: format 3 is newer than this"
            " kbackupd reads (2): upgrade kbackupd")
    verify = kb.ctl("verify", "20261203T020000Z-3fa9c1", "--wait")
    assert verify.returncode != 0 and line in verify.stdout + verify.stderr
    restore = kb.ctl("restore", "20261203T020000Z-3fa9c1", "--component", "pdfs",
                     "--files-to", str(kb.base / "out"), "--dry-run")
    assert restore.returncode != 0 and line in restore.stderr, restore.stderr
    assert "internal error" not in restore.stderr
    assert not (kb.base / "out").exists()
