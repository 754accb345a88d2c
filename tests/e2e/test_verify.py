"""Verification catches what it promises to catch, at each level, from the storage itself."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import SHOP_COUNTS, KbEnv, PgServer


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def rewrite(kb: KbEnv, backup: dict[str, Any], mutate: Callable[[dict[str, Any], Path], None]
            ) -> None:
    """Change a stored backup behind kbackup's back, keep the manifest self-consistent where
    the mutation says so, and make the catalog pick the manifest up again."""
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    mutate(manifest, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0


def reseal(manifest: dict[str, Any], folder: Path, name: str) -> None:
    """Make the manifest's size and sha256 of a component match what is stored now."""
    component = next(c for c in manifest["components"] if c["name"] == name)
    data = (folder / component["file"]).read_bytes()
    component["size_bytes"] = len(data)
    component["sha256"] = hashlib.sha256(data).hexdigest()


def verify(kb: KbEnv, backup_id: str, level: str) -> tuple[int, str]:
    result = kb.ctl("verify", backup_id, "--level", level, "--wait")
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def backed_up(kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path) -> dict[str, Any]:
    kb.shop_job(pg, shop_db, pdf_tree, extra='[verify]\nsql_checks = '
                '["SELECT id FROM invoices WHERE amount <= 0"]\n')
    kb.start()
    return kb.run_backup()


def test_every_backup_is_checksum_verified_after_writing(backed_up: dict[str, Any]) -> None:
    assert backed_up["verification"]["level"] == "checksum"
    assert backed_up["verification"]["ok"] is True


@pytest.mark.parametrize("level", ["checksum", "structure", "restore-test"])
def test_a_good_backup_passes_every_level(kb: KbEnv, pg: PgServer, backed_up: dict[str, Any],
                                          level: str) -> None:
    code, output = verify(kb, backed_up["id"], level)
    assert code == 0, output + kb.logs()
    shown = kb.ctl_json("show", backed_up["id"])
    assert shown["verification"]["level"] == level and shown["verification"]["ok"]
    if level == "restore-test":
        details = shown["verifications"][0]["details"]
        assert details["rows_shop"] == sum(SHOP_COUNTS.values())
        assert details["files_pdfs"] == 12  # 8 files, 4 directories
    assert pg.databases(f"kbackup_verify_{backed_up['id'][-6:]}") == []  # this run's scratch


def test_flipped_byte_is_caught_by_checksum_and_names_the_object(
        kb: KbEnv, pg: PgServer, backed_up: dict[str, Any]) -> None:
    stored = kb.backup_dir(backed_up) / "files-pdfs.tar.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    code, output = verify(kb, backed_up["id"], "checksum")
    assert code == 1
    assert "files-pdfs.tar.zst: sha256 differs from the manifest" in output
    shown = kb.ctl_json("show", backed_up["id"])
    assert shown["status"] == "corrupt"
    assert "files-pdfs.tar.zst" in shown["error"]
    assert kb.ctl_json("backups")["items"][0]["verification"]["ok"] is False
    status = kb.ctl("show", backed_up["id"]).stdout
    assert "checksum FAILED" in status


def test_truncated_dump_is_caught_by_structure(kb: KbEnv, pg: PgServer,
                                               backed_up: dict[str, Any]) -> None:
    def truncate(manifest: dict[str, Any], folder: Path) -> None:
        stored = folder / "db-shop.dump.zst"
        raw = unzstd(stored.read_bytes())
        stored.write_bytes(zstd(raw[: len(raw) * 2 // 3]))
        reseal(manifest, folder, "shop")

    rewrite(kb, backed_up, truncate)
    assert verify(kb, backed_up["id"], "checksum")[0] == 0  # the bytes are as recorded...
    code, output = verify(kb, backed_up["id"], "structure")  # ...but not a whole dump
    assert code == 1
    assert "database shop" in output and "pg_restore" in output
    assert kb.ctl_json("show", backed_up["id"])["status"] == "corrupt"


def test_missing_rows_are_caught_by_restore_test(kb: KbEnv, pg: PgServer,
                                                 backed_up: dict[str, Any]) -> None:
    def overstate(manifest: dict[str, Any], folder: Path) -> None:
        manifest["components"][0]["database"]["row_counts"]["public.invoices"] = 2500

    rewrite(kb, backed_up, overstate)
    assert verify(kb, backed_up["id"], "structure")[0] == 0
    code, output = verify(kb, backed_up["id"], "restore-test")
    assert code == 1
    assert "table public.invoices: 2500 rows in manifest, 2000 restored" in output
    assert pg.databases(f"kbackup_verify_{backed_up['id'][-6:]}") == []  # this run's scratch


def test_changed_file_is_caught_and_named(kb: KbEnv, pg: PgServer,
                                          backed_up: dict[str, Any]) -> None:
    def alter_index(manifest: dict[str, Any], folder: Path) -> None:
        component = next(c for c in manifest["components"] if c["name"] == "pdfs")
        index_path = folder / component["index"]["file"]
        index = json.loads(unzstd(index_path.read_bytes()))
        entry = next(e for e in index["entries"] if e["path"] == "2026/03/inv-1.pdf")
        entry["sha256"] = "0" * 64
        data = zstd(json.dumps(index).encode())
        index_path.write_bytes(data)
        component["index"].update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    rewrite(kb, backed_up, alter_index)
    for level in ("structure", "restore-test"):
        code, output = verify(kb, backed_up["id"], level)
        assert code == 1
        assert "pdfs/2026/03/inv-1.pdf: sha256 differs" in output


def test_a_truncated_archive_is_one_line_from_verify_and_restore(
        kb: KbEnv, pg: PgServer, backed_up: dict[str, Any]) -> None:
    """tarfile's own error stays inside the files driver: verify and restore report it as
    the component's one line, and the backup is corrupt."""
    def truncate(manifest: dict[str, Any], folder: Path) -> None:
        stored = folder / "files-pdfs.tar.zst"
        raw = unzstd(stored.read_bytes())
        stored.write_bytes(zstd(raw[: len(raw) // 2]))
        reseal(manifest, folder, "pdfs")

    rewrite(kb, backed_up, truncate)
    out = kb.base / "restored"
    restored = kb.ctl("restore", backed_up["id"], "--component", "pdfs", "--files-to",
                      str(out), "--yes")
    assert restored.returncode != 0
    [line] = restored.stderr.strip().splitlines()
    assert "unexpected end of data" in line and "Traceback" not in kb.logs(), line
    code, output = verify(kb, backed_up["id"], "structure")
    assert code == 1
    assert "files pdfs: unexpected end of data" in output
    assert kb.ctl_json("show", backed_up["id"])["status"] == "corrupt"


def test_failing_sql_check_fails_restore_test(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None, extra='[verify]\nafter_backup = "restore-test"\nsql_checks = '
                '["SELECT id FROM invoices WHERE amount > 2000 ORDER BY id"]\n')
    kb.start()
    result = kb.ctl("run", "shop", "--wait")
    assert result.returncode == 1
    assert "sql_checks[0] returned rows (first: (1601,))" in result.stderr
    [backup] = kb.ctl_json("backups")["items"]
    assert backup["status"] == "corrupt"
    assert pg.databases(f"kbackup_verify_{backup['id'][-6:]}") == []  # this run's scratch


def test_unknown_and_incomplete_backups_are_refused(kb: KbEnv, pg: PgServer,
                                                    backed_up: dict[str, Any]) -> None:
    result = kb.ctl("verify", "20200101T000000Z-abcdef", "--wait")
    assert result.returncode == 1
    assert "no backup with id '20200101T000000Z-abcdef'" in result.stderr


def test_a_component_of_an_unknown_kind_is_named_by_verify_and_restore(
        kb: KbEnv, pg: PgServer, backed_up: dict[str, Any]) -> None:
    """A backup a newer kbackup wrote, with a kind this version has no driver for: its bytes
    still checksum, but structure and restore say which component and kind they cannot read,
    in one line, and the backup is not marked corrupt for it."""
    def add_unknown(manifest: dict[str, Any], folder: Path) -> None:
        globals_ = next(c for c in manifest["components"] if c["kind"] == "globals")
        data = (folder / globals_["file"]).read_bytes()
        (folder / "cassandra-notes.zst").write_bytes(data)
        manifest["components"].insert(0, {**globals_, "name": "notes", "kind": "cassandra",
                                          "file": "cassandra-notes.zst"})

    rewrite(kb, backed_up, add_unknown)
    assert verify(kb, backed_up["id"], "checksum")[0] == 0, kb.logs()
    code, output = verify(kb, backed_up["id"], "structure")
    assert code == 1
    line = next(line for line in output.splitlines() if "FAILED" in line)
    assert "could not verify: component 'notes' is of kind 'cassandra'" in line
    assert kb.ctl_json("show", backed_up["id"])["status"] == "complete"
    restore = kb.ctl("restore", backed_up["id"], "--files-to", str(kb.base / "out"),
                     "--dry-run")
    assert restore.returncode != 0
    errors = restore.stderr.strip().splitlines()
    assert len(errors) == 1 and "component 'notes' is of kind 'cassandra'" in errors[0], errors
    assert not (kb.base / "out").exists()
    # Restoring another component by name is not held up by it.
    only_shop = kb.ctl_json("restore", backed_up["id"], "--component", "shop",
                            "--to-database", "kbackup_unknown_kind_copy", "--dry-run")
    assert [s["component"] for s in only_shop["steps"]] == ["shop"]
