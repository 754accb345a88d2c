"""Encryption at rest with real gpg: both modes round-trip, keys are checked before work, wrong
keys fail clearly without touching the target, and secrets never leak anywhere."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SHOP_COUNTS, KbEnv, PgServer, stop_gpg_agent, table_counts

PASSPHRASE = "correct horse battery staple 4711"
KEY_PASSPHRASE = "key-pass-8812"
MARKER = "MARKER-ROW-7f3a9c"


def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    done = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes",
                           "--pinentry-mode", "loopback", *args], input=input, capture_output=True)
    if done.returncode:
        raise AssertionError(f"gpg {' '.join(args)} exited {done.returncode}: "
                             f"{done.stderr.decode(errors='replace')}")
    return done.stdout


def new_key(home: Path, uid: str, passphrase: str = "", extra: tuple[str, ...] = ()) -> str:
    """One gpg call makes the ed25519 primary and its cv25519 encryption subkey, so an expired
    key (made at a faked time) never needs a second call that finds it already expired."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(home, *extra, "--passphrase", passphrase, "--quick-gen-key", uid, "future-default",
        "default", "2y")
    listing = gpg(home, "--with-colons", "--list-keys", uid).decode()
    return re.search(r"^fpr:+([0-9A-F]{40}):", listing, re.M).group(1)  # type: ignore


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("keys")
    owner = base / "owner"
    fingerprint = new_key(owner, "kbackup test <backup@example.com>", KEY_PASSPHRASE)
    (base / "pub.asc").write_bytes(gpg(owner, "--armor", "--export", fingerprint))
    (base / "secret.asc").write_bytes(gpg(owner, "--passphrase", KEY_PASSPHRASE, "--armor",
                                          "--export-secret-keys", fingerprint))
    (base / "key-pass").write_text(KEY_PASSPHRASE + "\n")
    stranger = base / "stranger"
    other = new_key(stranger, "someone else <other@example.com>")
    (base / "other-pub.asc").write_bytes(gpg(stranger, "--armor", "--export", other))
    expired_home = base / "expired"
    expired = new_key(expired_home, "old key <old@example.com>",
                      extra=("--faked-system-time", "20200101T000000"))
    (base / "expired-pub.asc").write_bytes(gpg(expired_home, "--armor", "--export", expired))
    revoked_home = base / "revoked"
    revoked = new_key(revoked_home, "revoked key <rev@example.com>")
    certificate = (revoked_home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
    gpg(revoked_home, "--import", input=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
    (base / "revoked-pub.asc").write_bytes(gpg(revoked_home, "--armor", "--export", revoked))
    yield {"base": base, "owner": owner, "fingerprint": fingerprint, "other": other,
           "expired": expired, "revoked": revoked}
    for home in (owner, stranger, expired_home, revoked_home):
        stop_gpg_agent(home)


@pytest.fixture
def marked_db(pg: PgServer, shop_db: str) -> str:
    pg.query(shop_db, "INSERT INTO customers (name) VALUES (%s)", (MARKER,))
    return shop_db


def symmetric_job(kb: KbEnv, pg: PgServer, db: str, pdfs: Path | None) -> Path:
    secret = kb.base / "secrets" / "backup-pass"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(PASSPHRASE + "\n")
    kb.shop_job(pg, db, pdfs, extra=f'[encryption]\nmode = "gpg-symmetric"\n'
                                     f'passphrase_file = "{secret}"\n')
    return secret


def recipients_job(kb: KbEnv, pg: PgServer, db: str, keys: dict[str, Any],
                   recipient: str, public: str = "pub.asc", secret: bool = True) -> None:
    extra = (f'[encryption]\nmode = "gpg-recipients"\nrecipients = ["{recipient}"]\n'
             f'public_key_files = ["{keys["base"] / public}"]\n')
    if secret:
        extra += (f'secret_key_file = "{keys["base"] / "secret.asc"}"\n'
                  f'secret_key_passphrase_file = "{keys["base"] / "key-pass"}"\n')
    kb.shop_job(pg, db, None, extra=extra)


def restore_into_new(kb: KbEnv, pg: PgServer, backup_id: str, *extra: str) -> tuple[str, Any]:
    name = f"kbt_dec_{uuid.uuid4().hex[:8]}"
    result = kb.ctl("restore", backup_id, "--component", "shop", "--to-database", name,
                    "--yes", *extra)
    return name, result


def test_symmetric_round_trip_and_no_plaintext_at_rest(
        kb: KbEnv, pg: PgServer, marked_db: str, pdf_tree: Path) -> None:
    (pdf_tree / "notes.txt").write_text(f"customer note {MARKER}\n")
    symmetric_job(kb, pg, marked_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    folder = kb.backup_dir(backup)
    stored = sorted(p.name for p in folder.iterdir())
    assert stored == ["config.json.zst.gpg", "db-shop.dump.zst.gpg",
                      "files-pdfs.index.json.zst.gpg", "files-pdfs.tar.zst.gpg",
                      "globals-shop.sql.zst.gpg", "manifest.json", "manifest.json.sig"]
    for path in folder.iterdir():
        data = path.read_bytes()
        assert MARKER.encode() not in data and b"notes.txt" not in data, path.name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["components"][0]["encryption"] == {"mode": "gpg-symmetric",
                                                       "cipher": "AES256"}
    assert "needs the passphrase of the job" in kb.ctl("show", backup["id"]).stdout

    # By hand, with stock tools only.
    restored = f"kbt_hand_{uuid.uuid4().hex[:8]}"
    pg.create_database(restored)
    try:
        passfile = kb.base / "secrets" / "backup-pass"
        pipeline = (f"gpg --batch --pinentry-mode loopback --passphrase-file {passfile} -d "
                    f"{folder}/db-shop.dump.zst.gpg | zstd -dc | pg_restore -h {pg.host} -p"
                    f" {pg.port} -U {pg.user} -d {restored}")
        subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True,
                       capture_output=True, env={**os.environ, "GNUPGHOME": str(kb.base)})
        counts = table_counts(pg, restored)
        assert counts == {**SHOP_COUNTS, "public.customers": 51}
    finally:
        pg.drop_database(restored)

    # Through kbackup: every verification level decrypts, and a restore works.
    for level in ("structure", "restore-test"):
        result = kb.ctl("verify", backup["id"], "--level", level, "--wait")
        assert result.returncode == 0, result.stderr + kb.logs()
    name, result = restore_into_new(kb, pg, backup["id"])
    try:
        assert result.returncode == 0, result.stderr
        assert pg.query(name, "SELECT count(*) FROM customers WHERE name = %s",
                        (MARKER,))[0][0] == 1
    finally:
        pg.drop_database(name)
    out = kb.base / "files-out"
    result = kb.ctl("restore", backup["id"], "--component", "pdfs", "--files-to", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "notes.txt").read_text() == f"customer note {MARKER}\n"


def test_secrets_never_leak(kb: KbEnv, pg: PgServer, marked_db: str, pdf_tree: Path) -> None:
    secret = symmetric_job(kb, pg, marked_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait")
    answers = [kb.ctl("--json", *args).stdout for args in (
        ("status",), ("jobs",), ("backups",), ("show", backup["id"]), ("runs",), ("restores",),
        ("keys", "check"))]
    places = {"log": kb.logs(), "api": "\n".join(answers)}
    for path in kb.state.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("latin-1")
    for path in kb.store.rglob("*"):
        places[str(path)] = path.read_bytes().decode("latin-1") if path.is_file() else ""
    # The config snapshot stored with the backup names the secret file, never its content.
    snapshot = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"gpg --batch --pinentry-mode loopback"
         f" --passphrase-file {secret} -d {kb.backup_dir(backup)}/config.json.zst.gpg"
         " | zstd -dc"], capture_output=True, check=True, text=True,
        env={**os.environ, "GNUPGHOME": str(kb.base)}).stdout
    places["config snapshot"] = snapshot
    assert str(secret) in snapshot
    for where, text in places.items():
        assert PASSPHRASE not in text, f"passphrase found in {where}"
    assert sqlite3.connect(kb.state / "catalog.sqlite3").execute(
        "SELECT count(*) FROM backups").fetchone()[0] == 1


def test_wrong_passphrase_fails_before_anything_is_dropped(
        kb: KbEnv, pg: PgServer, marked_db: str) -> None:
    secret = symmetric_job(kb, pg, marked_db, None)
    kb.start()
    backup = kb.run_backup()
    pg.query(marked_db, 'DELETE FROM "Line Items"; DELETE FROM invoices WHERE id > 1000')
    before = table_counts(pg, marked_db)
    secret.write_text("not the passphrase\n")
    result = kb.ctl("restore", backup["id"], "--yes")
    assert result.returncode == 1
    assert "wrong passphrase or key" in result.stderr
    assert "nothing was changed" in result.stderr
    assert table_counts(pg, marked_db) == before
    # no safety backup yet
    assert [b["trigger"] for b in kb.ctl_json("backups")["items"]] == ["manual"]


def test_recipients_mode_needs_no_private_key_to_back_up(
        kb: KbEnv, pg: PgServer, marked_db: str, keys: dict[str, Any]) -> None:
    recipients_job(kb, pg, marked_db, keys, keys["fingerprint"], secret=False)
    kb.start()
    check = kb.ctl("keys", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert keys["fingerprint"] in check.stdout and "OK" in check.stdout
    backup = kb.run_backup()
    assert keys["fingerprint"] in kb.ctl("show", backup["id"]).stdout
    folder = kb.backup_dir(backup)
    assert MARKER.encode() not in (folder / "db-shop.dump.zst.gpg").read_bytes()
    # Checksums need no key; decrypting levels report the missing key without calling the
    # backup corrupt.
    assert kb.ctl("verify", backup["id"], "--level", "checksum", "--wait").returncode == 0
    result = kb.ctl("verify", backup["id"], "--level", "structure", "--wait")
    assert result.returncode == 1
    assert "could not verify" in result.stderr and keys["fingerprint"] in result.stderr
    assert kb.ctl_json("show", backup["id"])["status"] == "complete"
    # A restore without the key stops before anything happens.
    name, result = restore_into_new(kb, pg, backup["id"])
    assert result.returncode == 1 and "private key" in result.stderr
    assert pg.databases(name) == []
    # With the private key's keyring given (and the key's passphrase file), it restores.
    job = kb.jobs_dir / "shop.toml"
    job.write_text(job.read_text().replace(
        "public_key_files", f'secret_key_passphrase_file = "{keys["base"] / "key-pass"}"\n'
                            "public_key_files"))
    assert kb.ctl("reload").returncode == 0
    name, result = restore_into_new(kb, pg, backup["id"], "--gpg-homedir", str(keys["owner"]))
    try:
        assert result.returncode == 0, result.stderr
        assert table_counts(pg, name)["public.customers"] == 51
    finally:
        pg.drop_database(name)


def test_recipients_round_trip_with_secret_key_file(
        kb: KbEnv, pg: PgServer, marked_db: str, keys: dict[str, Any]) -> None:
    recipients_job(kb, pg, marked_db, keys, keys["fingerprint"])
    kb.start()
    backup = kb.run_backup()
    assert kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait").returncode == 0
    name, result = restore_into_new(kb, pg, backup["id"])
    try:
        assert result.returncode == 0, result.stderr
        assert table_counts(pg, name) == {**SHOP_COUNTS, "public.customers": 51}
    finally:
        pg.drop_database(name)


def test_backup_to_a_key_we_do_not_have_is_refused_clearly(
        kb: KbEnv, pg: PgServer, marked_db: str, keys: dict[str, Any]) -> None:
    # Encrypted to "other"; our secret key file holds only the owner's key.
    recipients_job(kb, pg, marked_db, keys, keys["other"], public="other-pub.asc")
    kb.start()
    backup = kb.run_backup()
    name, result = restore_into_new(kb, pg, backup["id"])
    assert result.returncode == 1
    assert f"no private key for {keys['other']}" in result.stderr
    assert pg.databases(name) == []


@pytest.mark.parametrize(("which", "public", "expected"), [
    ("unknown", "pub.asc", "no such public key"),
    ("expired", "expired-pub.asc", "the key has expired"),
    ("revoked", "revoked-pub.asc", "the key is revoked"),
])
def test_key_problems_stop_the_backup_before_work(
        kb: KbEnv, pg: PgServer, marked_db: str, keys: dict[str, Any], which: str, public: str,
        expected: str) -> None:
    recipient = "0123456789ABCDEF0123456789ABCDEF01234567" if which == "unknown" else keys[which]
    recipients_job(kb, pg, marked_db, keys, recipient, public=public, secret=False)
    kb.start()
    result = kb.ctl("run", "shop", "--wait")
    assert result.returncode == 1
    assert expected in result.stderr and recipient in result.stderr
    assert not list(kb.store.rglob("*.gpg"))
    check = kb.ctl("keys", "check")
    assert check.returncode == 1 and expected in check.stdout


def test_config_errors_for_encryption(kb: KbEnv, pg: PgServer, marked_db: str) -> None:
    kb.shop_job(pg, marked_db, None, extra='[encryption]\nmode = "gpg-symmetric"\n'
                                           'passphrase_file = "/nonexistent/pass"\n')
    result = kb.ctl("config", "check")
    assert result.returncode == 1
    assert "encryption.passphrase_file: /nonexistent/pass does not exist" in result.stderr
    kb.shop_job(pg, marked_db, None, extra='[encryption]\nmode = "gpg-recipients"\n'
                                           'recipients = ["ABCD1234"]\n')
    result = kb.ctl("config", "check")
    assert result.returncode == 1
    assert "encryption.recipients: 'ABCD1234' is not a full fingerprint" in result.stderr


def test_rotation_keeps_old_backups_restorable(kb: KbEnv, pg: PgServer, marked_db: str) -> None:
    old_secret = symmetric_job(kb, pg, marked_db, None)
    kb.start()
    old = kb.run_backup()
    new_secret = kb.base / "secrets" / "new-pass"
    new_secret.write_text("the new passphrase after rotation\n")
    job = kb.jobs_dir / "shop.toml"
    job.write_text(job.read_text().replace(str(old_secret), str(new_secret)))
    assert kb.ctl("reload").returncode == 0
    new = kb.run_backup()
    name, result = restore_into_new(kb, pg, new["id"])
    try:
        assert result.returncode == 0, result.stderr
    finally:
        pg.drop_database(name)
    name, result = restore_into_new(kb, pg, old["id"])  # the job's passphrase is the new one
    assert result.returncode == 1 and "wrong passphrase or key" in result.stderr
    name, result = restore_into_new(kb, pg, old["id"], "--passphrase-file", str(old_secret))
    try:
        assert result.returncode == 0, result.stderr
        assert table_counts(pg, name)["public.customers"] == 51
    finally:
        pg.drop_database(name)
