"""A backup restored by hand with stock tools gives back exactly the rows and bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import zstandard

from conftest import SHOP_COUNTS, KbEnv, PgServer, table_counts


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_restores_by_hand_with_stock_tools(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, tmp_path: Path
) -> None:
    # Files larger than the pipeline's 1 MiB chunks, one of exactly a chunk, and an empty one.
    scans = pdf_tree / "scans"
    scans.mkdir()
    for name, size in (("big.pdf", (3 << 20) + 123), ("chunk.pdf", 1 << 20), ("empty.pdf", 0)):
        (scans / name).write_bytes(os.urandom(size))
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    assert backup["status"] == "complete"
    names = [c["name"] for c in backup["components"]]
    assert names == ["shop", "shop.globals", "pdfs", "config"]
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())

    # Every stored object matches the manifest's size and sha256.
    for component in manifest["components"]:
        stored = folder / component["file"]
        assert stored.stat().st_size == component["size_bytes"]
        assert sha256(stored) == component["sha256"]
    database = manifest["components"][0]["database"]
    assert database["row_counts"] == SHOP_COUNTS
    assert database["server_version"]

    # Change the live data after the backup: the restore must give the backup's rows.
    pg.query(shop_db, 'DELETE FROM "Line Items"; DELETE FROM invoices WHERE id > 10')

    restored = f"kbt_restored_{uuid.uuid4().hex[:8]}"
    pg.create_database(restored)
    try:
        dump = folder / "db-shop.dump.zst"
        pipeline = (f"zstd -dc {dump} | pg_restore --no-owner -h {pg.host} -p {pg.port}"
                    f" -U {pg.user} -d {restored}")
        subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True)
        assert table_counts(pg, restored) == SHOP_COUNTS
        total = pg.query(restored, "SELECT sum(amount) FROM invoices")[0][0]
        assert float(total) == sum(g * 1.25 for g in range(1, 2001))
    finally:
        pg.drop_database(restored)

    out = tmp_path / "restored-files"
    out.mkdir()
    tar = folder / "files-pdfs.tar.zst"
    subprocess.run(["bash", "-o", "pipefail", "-c", f"zstd -dc {tar} | tar -x -C {out}"],
                   check=True)
    originals = {p.relative_to(pdf_tree): sha256(p) for p in pdf_tree.rglob("*") if p.is_file()
                 and not p.name.endswith(".tmp")}
    extracted = {p.relative_to(out): sha256(p) for p in out.rglob("*") if p.is_file()}
    assert extracted == originals
    assert len(extracted) == 11

    index = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(
        (folder / "files-pdfs.index.json.zst").read_bytes()))
    indexed = {e["path"]: e["sha256"] for e in index["entries"] if e["type"] == "file"}
    assert indexed == {str(k): v for k, v in originals.items()}

    snapshot = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(
        (folder / "config.json.zst").read_bytes()))
    assert snapshot["job"]["name"] == "shop"


def test_backups_json_contract(kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    listing = kb.ctl_json("backups")["items"]
    assert [b["id"] for b in listing] == [backup["id"]]
    assert kb.ctl_json("backups", "shop")["items"] == listing
    # typed text is quoted, not spliced
    assert kb.ctl_json("backups", "shop&job=x y")["items"] == []
    for args, expected in ((["show", "no such/id"], "no backup with id 'no such/id' ("),
                           (["run", "shop/../x"], "no job named 'shop/../x' (")):
        result = kb.ctl(*args)
        assert result.returncode == 1
        assert result.stderr.startswith(f"kbackupctl: {expected}"), result.stderr
    item = listing[0]
    for key in ("id", "job", "status", "trigger", "started_at", "finished_at", "size_bytes",
                "components", "targets"):
        assert key in item
    assert item["trigger"] == "manual"
    assert item["started_at"].endswith("Z") and item["finished_at"].endswith("Z")
    assert item["targets"] == {"local": "complete"}
    assert item["size_bytes"] == sum(
        p.stat().st_size for p in kb.backup_dir(backup).iterdir()
        if p.name not in ("manifest.json", "manifest.json.sig"))
    for component in item["components"]:
        assert set(component) >= {"name", "kind", "file", "size_bytes", "sha256"}

    status = kb.ctl_json("status")
    job = status["jobs"][0]
    assert job["last_run"]["status"] == "complete"
    assert job["last_backup"]["id"] == backup["id"]
    assert job["last_backup"]["age_seconds"] is not None
    assert job["next_run"].endswith("02:00:00Z")


def test_progress_total_comes_from_the_sources_then_from_the_last_backup(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    first = kb.run_backup()
    second = kb.run_backup()

    def estimate(backup: dict) -> tuple[int, str]:
        line = next(line for line in kb.logs().splitlines()
                    if "event=backup.estimate" in line and f"backup={backup['id']}" in line)
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        return int(fields["bytes"]), fields["basis"]

    streamed = sum(c["raw_bytes"] for c in first["components"]
                   if c["kind"] in ("postgres", "files"))
    files_total = sum(p.stat().st_size for p in pdf_tree.rglob("*") if p.is_file())
    first_bytes, first_basis = estimate(first)
    assert first_basis == "sources"
    # The files' own sizes, plus the database's tables on disk: same order as the dump.
    assert files_total < first_bytes < 3 * streamed
    assert estimate(second) == (streamed, "last-backup")


def test_rescan_rebuilds_catalog_from_storage(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    """A new server pointed at old storage sees every backup."""
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    first = kb.run_backup()
    second = kb.run_backup()
    kb.stop()
    (kb.state / "catalog.sqlite3").unlink()
    for extra in ("catalog.sqlite3-wal", "catalog.sqlite3-shm"):
        (kb.state / extra).unlink(missing_ok=True)
    kb.start()
    assert kb.ctl_json("backups")["items"] == []
    result = kb.ctl("catalog", "rescan")
    assert result.returncode == 0, result.stderr
    assert "found 2" in result.stdout
    ids = {b["id"] for b in kb.ctl_json("backups")["items"]}
    assert ids == {first["id"], second["id"]}
    shown = kb.ctl_json("show", first["id"])
    assert shown["components"][0]["database"]["rows"] == sum(SHOP_COUNTS.values())


def test_dump_and_row_counts_share_one_snapshot(
    kb: KbEnv, pg: PgServer, shop_db: str, tmp_path: Path
) -> None:
    """Rows committed while the backup runs are in neither the dump nor the manifest's counts."""
    started = tmp_path / "started"
    wrapper = tmp_path / "pg_dump_late"
    wrapper.write_text('#!/bin/sh\n[ "$1" = --version ] && exec pg_dump --version\n'
                       f"touch {started}\nsleep 2\nexec pg_dump \"$@\"\n")
    wrapper.chmod(0o755)
    path = kb.shop_job(pg, shop_db, None)
    path.write_text(path.read_text() + f'pg_dump = "{wrapper}"\n')
    kb.start()
    run_id = kb.ctl("run", "shop").stdout.strip()
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, kb.logs()
        time.sleep(0.05)
    pg.query(shop_db, "INSERT INTO invoices (customer_id, amount)"
                      " SELECT 1, 1 FROM generate_series(1, 500)")
    result = kb.ctl("run", "shop", "--wait")  # coalesces into the running run and waits
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == run_id
    backup = kb.ctl_json("show", run_id)
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    assert manifest["components"][0]["database"]["row_counts"] == SHOP_COUNTS

    restored = f"kbt_restored_{uuid.uuid4().hex[:8]}"
    pg.create_database(restored)
    try:
        dump = kb.backup_dir(backup) / "db-shop.dump.zst"
        subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"zstd -dc {dump} | pg_restore -h {pg.host} -p {pg.port} -U {pg.user}"
                        f" -d {restored}"], check=True)
        assert table_counts(pg, restored) == SHOP_COUNTS
    finally:
        pg.drop_database(restored)
    assert table_counts(pg, shop_db)["public.invoices"] == 2500


def test_globals_component_has_roles_but_no_passwords(kb: KbEnv, pg: PgServer,
                                                      shop_db: str) -> None:
    role = f"kbt_role_{uuid.uuid4().hex[:6]}"
    pg.query("postgres", f"CREATE ROLE {role} LOGIN PASSWORD 'topsecret-xyz'")
    try:
        kb.shop_job(pg, shop_db, None)
        kb.start()
        backup = kb.run_backup()
        script = zstandard.ZstdDecompressor().decompressobj().decompress(
            (kb.backup_dir(backup) / "globals-shop.sql.zst").read_bytes()).decode()
        assert f"CREATE ROLE {role};" in script
        assert "topsecret" not in script and "SCRAM-SHA-256" not in script
    finally:
        pg.query("postgres", f"DROP ROLE IF EXISTS {role}")


def test_a_failing_target_makes_the_backup_partial(kb: KbEnv, pg: PgServer,
                                                   shop_db: str) -> None:
    """The other targets still get their copy; the broken one keeps nothing."""
    blocker = kb.base / "not-a-directory"
    blocker.write_text("a file where the target directory should be")
    kb.write_daemon(extra=f'[storage.broken]\ntype = "local"\npath = "{blocker}/store"\n')
    path = kb.shop_job(pg, shop_db, None)
    path.write_text(path.read_text().replace('targets = ["local"]',
                                             'targets = ["local", "broken"]'))
    kb.start()
    result = kb.ctl("run", "shop", "--wait")
    assert result.returncode == 1
    assert "is partial: not on every target (broken:" in result.stderr
    [backup] = kb.ctl_json("backups")["items"]
    assert backup["status"] == "partial"
    assert backup["targets"]["local"] == "complete"
    assert backup["targets"]["broken"].startswith("failed: ")
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    assert manifest["components"][0]["database"]["row_counts"] == SHOP_COUNTS
    verified = kb.ctl("verify", backup["id"], "--level", "structure", "--wait")
    assert verified.returncode == 0, verified.stderr


def test_storage_check_probes_every_target(kb: KbEnv) -> None:
    blocker = kb.base / "not-a-directory"
    blocker.write_text("a file where the target directory should be")
    kb.write_daemon(extra=f'[storage.broken]\ntype = "local"\npath = "{blocker}/store"\n')
    kb.start()
    result = kb.ctl("storage", "check")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("broken (local ") and "FAILED: write: " in lines[0]
    assert lines[1].startswith("local (local ") and ": OK (write " in lines[1]
    assert kb.ctl("storage", "check", "local").returncode == 0
    assert not list(kb.store.rglob("*probe*"))  # the probe cleans up after itself
    unknown = kb.ctl("storage", "check", "nowhere")
    assert unknown.returncode == 1 and "no storage target named 'nowhere'" in unknown.stderr
