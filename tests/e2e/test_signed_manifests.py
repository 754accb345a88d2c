"""Signed manifests (issue 20): a backup an intruder rewrote on the storage is caught, on the
server that made it and on a new server that has only its public key. Real daemons, a real
PostgreSQL, real files; the by-hand check of docs/format.md run with openssl."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import KbEnv, PgServer, request, stop_gpg_agent

KEY = "signing/ed25519.key"


@pytest.fixture
def new_server(kb: KbEnv, tmp_path: Path) -> Iterator[KbEnv]:
    """A second kbackupd (its own state, its own signing key) on the same storage."""
    base = tmp_path / "new-server"
    base.mkdir()
    sockdir = Path(tempfile.mkdtemp(prefix="kbs", dir="/tmp"))
    sockdir.chmod(0o755)
    env = KbEnv(base, sockdir)
    env.store = kb.store
    env.write_daemon()
    try:
        yield env
    finally:
        env.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
        stop_gpg_agent(env.state / "gnupg")


def forge(kb: KbEnv, victim: dict[str, Any], donor: dict[str, Any]) -> None:
    """What an intruder with write access to the storage (not the key) does: put another
    backup's dump in place of the victim's and rewrite the manifest's size and sha256 so
    that every checksum matches."""
    folder = kb.backup_dir(victim)
    manifest = json.loads((folder / "manifest.json").read_text())
    dump = next(c for c in manifest["components"] if c["kind"] == "postgres")
    data = (kb.backup_dir(donor) / dump["file"]).read_bytes()
    (folder / dump["file"]).write_bytes(data)
    dump["size_bytes"] = len(data)
    dump["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def by_hand(folder: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    """The by-hand check of docs/format.md (its `sh signature-check` block) in the backup's
    directory, with the exported public key as pub.pem there."""
    [block] = re.findall(r"^```sh signature-check\n(.*?)^```", FORMAT_MD.read_text(),
                         re.M | re.S)
    shutil.copy(pub, folder / "pub.pem")
    try:
        return subprocess.run(["bash", "-c", "set -e -o pipefail\n" + block], cwd=folder,
                              capture_output=True, text=True)
    finally:
        (folder / "pub.pem").unlink()


def backups_by_id(kb: KbEnv) -> dict[str, dict[str, Any]]:
    return {b["id"]: b for b in kb.ctl_items("backups")}


def test_a_forged_backup_is_caught_and_an_untouched_one_verifies(
        kb: KbEnv, pg: PgServer, shop_db: str, tmp_path: Path) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    victim = kb.run_backup()
    pg.query(shop_db, "INSERT INTO customers (name) VALUES ('after the first backup')")
    donor = kb.run_backup()
    folder = kb.backup_dir(victim)
    # Signed: the signature beside the manifest, the key named in it, trusted.
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (folder / "manifest.json.sig").stat().st_size == 64
    assert victim["trust"] == "trusted" and victim["trust_reason"] is None
    exported = kb.ctl("keys", "export-signing")
    assert exported.returncode == 0, exported.stderr
    pub = tmp_path / "pub.pem"
    pub.write_text(exported.stdout)
    assert exported.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    # The signature and the fingerprint by hand, as docs/format.md says.
    checked = by_hand(folder, pub)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    fp = manifest["signature"]["key"]
    assert checked.stdout.splitlines() == ["Signature Verified Successfully", fp, fp]
    assert manifest["signature"]["algorithm"] == "ed25519"
    status, _, page = request(kb, "GET", f"/backups/{victim['id']}")  # the dashboard
    assert status == 200 and f'trusted</span> <span class="mono small">ed25519 {fp}' in \
        page.decode()
    show = kb.ctl("show", victim["id"])
    assert f"signed    trusted (ed25519 key {manifest['signature']['key']})" in show.stdout

    forge(kb, victim, donor)
    forged = by_hand(folder, pub)  # by hand too
    assert forged.returncode != 0 and "Signature Verification Failure" in forged.stdout, \
        forged.stdout + forged.stderr
    # Before any rescan the catalog still trusts it: the restore reads the signature itself.
    reason = ("signature does not match manifest.json (key"
              f" {manifest['signature']['key']}): the manifest or its signature was changed")
    live = kb.ctl("restore", victim["id"], "--to-database", "shop_forged", "--yes")
    assert live.returncode != 0
    assert f"backup {victim['id']} is untrusted: {reason}; use --force" in live.stderr, \
        live.stdout + live.stderr
    assert pg.databases("shop_forged") == []
    assert kb.ctl_json("show", victim["id"])["trust_reason"] == reason
    rescan = kb.ctl("catalog", "rescan")
    assert rescan.returncode == 0, rescan.stderr
    assert "untrusted: 1 backups" in rescan.stdout
    listed = backups_by_id(kb)
    assert listed[victim["id"]]["trust"] == "untrusted"
    assert listed[victim["id"]]["trust_reason"] == reason
    assert listed[donor["id"]]["trust"] == "trusted"
    assert "complete UNTRUSTED" in kb.ctl("backups").stdout
    verified = kb.ctl("verify", victim["id"], "--level", "checksum", "--wait")
    assert verified.returncode != 0
    assert f"manifest signature on local: {reason}" in verified.stdout + verified.stderr
    status, _, page = request(kb, "GET", f"/backups/{victim['id']}")
    assert status == 200 and "untrusted</span>" in page.decode()
    assert html.escape(reason) in page.decode()
    shown = kb.ctl_json("show", victim["id"])
    assert shown["status"] == "complete" and shown["trust"] == "untrusted"  # not "corrupt"
    assert shown["verification"]["reason"] == f"manifest signature on local: {reason}"
    refused = kb.ctl("restore", victim["id"], "--to-database", "shop_forged", "--yes")
    assert refused.returncode != 0
    assert refused.stderr.strip() == (f"kbackupctl: backup {victim['id']} is untrusted: {reason};"
                                      " use --force to restore it anyway"), refused.stderr
    assert pg.databases("shop_forged") == []
    try:
        forced = kb.ctl("restore", victim["id"], "--to-database", "shop_forged", "--yes",
                        "--force")
        assert forced.returncode == 0, forced.stderr + kb.logs()
        assert pg.databases("shop_forged") == ["shop_forged"]
    finally:
        pg.drop_database("shop_forged")
    # The untouched backup verifies and restores.
    good = kb.ctl("verify", donor["id"], "--level", "checksum", "--wait")
    assert good.returncode == 0, good.stdout + good.stderr
    try:
        restored = kb.ctl("restore", donor["id"], "--to-database", "shop_donor", "--yes")
        assert restored.returncode == 0, restored.stderr + kb.logs()
    finally:
        pg.drop_database("shop_donor")


def test_a_new_server_trusts_only_backups_signed_by_keys_it_imported(
        kb: KbEnv, new_server: KbEnv, pg: PgServer, shop_db: str, tmp_path: Path) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    signed = kb.run_backup()
    other = kb.run_backup()
    # A backup signed by a key nobody trusts (an intruder's own key, named in the manifest).
    folder = kb.backup_dir(other)
    manifest = json.loads((folder / "manifest.json").read_text())
    intruder = Ed25519PrivateKey.generate()
    manifest["signature"]["key"] = "ab" * 32
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / "manifest.json").write_bytes(data)
    (folder / "manifest.json.sig").write_bytes(intruder.sign(data))
    pub = tmp_path / "old-server.pem"
    pub.write_text(kb.ctl("keys", "export-signing").stdout)
    kb.stop()

    new_server.shop_job(pg, shop_db, None)
    new_server.start()
    assert new_server.ctl("catalog", "rescan").returncode == 0
    before = backups_by_id(new_server)
    assert before[signed["id"]]["trust"] == "untrusted"
    assert before[signed["id"]]["trust_reason"].startswith(
        f"signed by unknown key {signed['manifest']['signature']['key']} ")
    imported = new_server.ctl("keys", "import-signing", str(pub))
    assert imported.returncode == 0, imported.stderr
    assert signed["manifest"]["signature"]["key"] in imported.stdout
    rescan = new_server.ctl("catalog", "rescan")
    assert rescan.returncode == 0 and "untrusted: 1 backups" in rescan.stdout, rescan.stdout
    after = backups_by_id(new_server)
    assert after[signed["id"]]["trust"] == "trusted"
    assert after[other["id"]]["trust"] == "untrusted"
    assert after[other["id"]]["trust_reason"].startswith(f"signed by unknown key {'ab' * 32} ")
    assert new_server.ctl("verify", signed["id"], "--wait").returncode == 0
    dry = new_server.ctl("restore", other["id"], "--to-database", "x_new", "--dry-run")
    assert dry.returncode != 0 and "is untrusted: signed by unknown key" in dry.stderr
    keys = new_server.ctl_json("keys", "export-signing")
    assert keys["trusted"] == [signed["manifest"]["signature"]["key"]]
    assert keys["fingerprint"] != signed["manifest"]["signature"]["key"]


def test_rotation_keeps_old_backups_verifiable_and_the_key_stays_secret(kb: KbEnv,
                                                                        pdf_tree: Path) -> None:
    kb.write_job("docs", f'targets = ["local"]\n[[files]]\nname = "pdfs"\npath = "{pdf_tree}"\n')
    kb.start()
    first = kb.run_backup("docs")
    rotated = kb.ctl("keys", "rotate-signing")
    assert rotated.returncode == 0, rotated.stderr
    second = kb.run_backup("docs")
    old_key = first["manifest"]["signature"]["key"]
    new_key = second["manifest"]["signature"]["key"]
    assert old_key != new_key
    assert f"new signing key {new_key}; the old one {old_key} is kept" in rotated.stdout
    assert kb.ctl("catalog", "rescan").returncode == 0
    for backup in (first, second):
        verified = kb.ctl("verify", backup["id"], "--level", "checksum", "--wait")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert kb.ctl_json("show", backup["id"])["trust"] == "trusted"
    key_file = kb.state / KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert (kb.state / "signing" / "trusted" / f"{old_key}.pub").exists()
    # The private key's bytes are in no log line and no config snapshot.
    secret = "".join(key_file.read_text().splitlines()[1:-1])
    config = next(c for c in second["manifest"]["components"] if c["kind"] == "config")
    snapshot = zstandard.ZstdDecompressor().decompressobj().decompress(
        (kb.backup_dir(second) / config["file"]).read_bytes()).decode()
    for text in (kb.logs(), snapshot):
        assert secret[:20] not in text and secret not in text
    assert "ed25519.key" not in snapshot
