"""`[[files]]` on a single file, and `redact = "env"`: end to end through the real daemon.

A single file is backed up, verified and restored byte for byte (into a directory and in
place, atomically, after a safety backup). A redacted .env never lets a value out: the stored
object, decoded by hand, holds the KEY=*** template, and no secret is in any byte of the
storage, the catalog or the daemon's log; restoring it in place is refused.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import zstandard
from test_daemon_lifecycle import assert_run_fails
from test_restore import ctl, ok

from conftest import KbEnv

SECRETS = [b"old-pass-3c", b"pg-pass-9f1c", b"sk_live_77aa", b"smtp pass with spaces",
           b"MIIEvQ-private-body"]
ENV = b"""# shop settings
# DATABASE_URL=postgres://shop:old-pass-3c@localhost/shop
DATABASE_URL=postgres://shop:pg-pass-9f1c@localhost/shop
export STRIPE_KEY="sk_live_77aa"

SMTP_PASSWORD = 'smtp pass with spaces'
PRIVATE_KEY="-----BEGIN PRIVATE KEY-----
MIIEvQ-private-body
-----END PRIVATE KEY-----"
MIIEvQ-private-body
"""
TEMPLATE = b"""# shop settings
# DATABASE_URL=***
DATABASE_URL=***
export STRIPE_KEY=***

SMTP_PASSWORD=***
PRIVATE_KEY=***
# (redacted line)
"""
COMPOSE = b"services:\n  app:\n    image: shop:1.4\n"


def stored_tar(kb: KbEnv, backup: dict[str, Any], name: str) -> dict[str, bytes]:
    """The component's stored object, decoded by hand (zstd, tar): member name -> bytes."""
    raw = (kb.backup_dir(backup) / f"files-{name}.tar.zst").read_bytes()
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def component(backup: dict[str, Any], name: str) -> dict[str, Any]:
    """The component as the backup's manifest records it."""
    return next(c for c in backup["manifest"]["components"] if c["name"] == name)


def test_a_single_file_backs_up_verifies_and_restores_identically(
    kb: KbEnv, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    settings = app / "settings.bin"
    original = bytes(range(256)) * 300 + b"\nend"
    settings.write_bytes(original)
    settings.chmod(0o640)
    (app / "beside.txt").write_text("not in the backup\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a directory still works\n")
    kb.write_job("cfg", f'targets = ["local"]\n\n[[files]]\nname = "settings"\n'
                        f'path = "{settings}"\n\n[[files]]\nname = "docs"\npath = "{docs}"\n')
    kb.start()
    backup = kb.run_backup("cfg")
    meta = component(backup, "settings")["files"]
    assert (meta["single_file"], meta["file_count"], meta["total_bytes"]) == (
        True, 1, len(original))
    assert "redact" not in meta and "single_file" not in component(backup, "docs")["files"]
    assert stored_tar(kb, backup, "settings") == {"settings.bin": original}

    for level in ("structure", "restore-test"):
        ok(ctl(kb, "verify", backup["id"], "--level", level, "--wait"), kb)

    out_dir = tmp_path / "out"
    ok(ctl(kb, "restore", backup["id"], "--component", "settings", "--files-to", str(out_dir)),
       kb)
    assert [p.name for p in out_dir.iterdir()] == ["settings.bin"]
    assert (out_dir / "settings.bin").read_bytes() == original
    assert oct((out_dir / "settings.bin").stat().st_mode & 0o777) == oct(0o640)
    docs_out = tmp_path / "docs-out"
    ok(ctl(kb, "restore", backup["id"], "--component", "docs", "--files-to", str(docs_out)), kb)
    assert (docs_out / "a.txt").read_text() == "a directory still works\n"

    # In place: renamed over the live file after a safety backup; nothing left beside it.
    settings.write_bytes(b"damaged")
    out = ok(ctl(kb, "restore", backup["id"], "--component", "settings", "--in-place",
                 "--yes"), kb)
    assert "REPLACE the live file" in out
    assert settings.read_bytes() == original
    assert sorted(p.name for p in app.iterdir()) == ["beside.txt", "settings.bin"]
    found = re.search(r"safety backup of the previous state: (\S+)", out)
    assert found, out
    undo = tmp_path / "undo"
    ok(ctl(kb, "restore", found.group(1), "--component", "settings", "--files-to", str(undo)),
       kb)
    assert (undo / "settings.bin").read_bytes() == b"damaged"

    # The live path now a directory: refused in one line, nothing touched.
    settings.unlink()
    settings.mkdir()
    refused = ctl(kb, "restore", backup["id"], "--component", "settings", "--in-place", "--yes")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "the backup holds a single file but" in refused.stderr
    assert settings.is_dir() and not any(settings.iterdir())

    # A new server: the file is not there; in place creates it, no safety backup needed.
    settings.rmdir()
    out = ok(ctl(kb, "restore", backup["id"], "--component", "settings", "--in-place",
                 "--yes"), kb)
    assert "does not exist: extract the file settings.bin there" in out
    assert settings.read_bytes() == original
    assert sorted(p.name for p in app.iterdir()) == ["beside.txt", "settings.bin"]


def all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_a_redacted_env_never_stores_a_value(kb: KbEnv, tmp_path: Path) -> None:
    app = tmp_path / "shop"
    app.mkdir()
    env = app / ".env"
    env.write_bytes(ENV)
    (app / "docker-compose.yml").write_bytes(COMPOSE)
    (app / "mail.env").write_bytes(b"# mail\nSMTP_PASSWORD=smtp pass with spaces\n")
    kb.write_job("app", f'targets = ["local"]\n\n[[files]]\nname = "env"\npath = "{env}"\n'
                        f'redact = "env"\n\n[[files]]\nname = "app"\npath = "{app}"\n'
                        f'redact = "env"\n')
    kb.start()
    backup = kb.run_backup("app")
    assert component(backup, "env")["files"]["redact"] == "env"
    assert component(backup, "env")["files"]["redacted_files"] == 1
    assert component(backup, "app")["files"]["redacted_files"] == 2

    # Decoded by hand: the template, and the directory's other files as they are.
    assert stored_tar(kb, backup, "env") == {".env": TEMPLATE}
    by_hand = subprocess.run(  # README's and format.md's command, with stock zstd and tar
        ["bash", "-o", "pipefail", "-c",
         f"zstd -dc {component(backup, 'env')['file']} | tar -x -O .env"],
        cwd=kb.backup_dir(backup), capture_output=True, timeout=60)
    assert by_hand.returncode == 0 and by_hand.stdout == TEMPLATE, by_hand.stderr
    assert stored_tar(kb, backup, "app") == {
        ".env": TEMPLATE, "docker-compose.yml": COMPOSE, "mail.env": b"# mail\nSMTP_PASSWORD=***\n"}
    everything = all_bytes(kb.store) + all_bytes(kb.state) + [(kb.log, kb.log.read_bytes())]
    assert any(p.suffix == ".zst" for p, _ in everything)
    for secret in SECRETS:
        for path, data in everything:
            assert secret not in data, f"{secret!r} in {path}"
        for _, data in stored_plain(kb, backup):
            assert secret not in data

    ok(ctl(kb, "verify", backup["id"], "--level", "restore-test", "--wait"), kb)

    # To a directory: the template, and the plan says so.
    out_dir = tmp_path / "template"
    out = ok(ctl(kb, "restore", backup["id"], "--component", "env", "--files-to",
                 str(out_dir)), kb)
    assert "template with values redacted (KEY=***)" in out
    assert (out_dir / ".env").read_bytes() == TEMPLATE

    # In place: refused in one line, for the redacted single file and the directory.
    for name in ("env", "app"):
        refused = ctl(kb, "restore", backup["id"], "--component", name, "--in-place", "--yes")
        assert refused.returncode != 0, refused.stdout
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "template with values redacted (KEY=***)" in lines[0], lines
        assert "--files-to DIR" in lines[0]
    assert env.read_bytes() == ENV
    assert not [p for p in app.iterdir() if p.name.startswith(".env.")]


def stored_plain(kb: KbEnv, backup: dict[str, Any]) -> list[tuple[Path, bytes]]:
    """Every stored object of the backup, zstd-decoded."""
    out = []
    for path in kb.backup_dir(backup).glob("*.zst"):
        out.append((path, zstandard.ZstdDecompressor().decompressobj().decompress(
            path.read_bytes())))
    return out


def test_a_redacting_source_refuses_in_place_even_for_a_plain_backup(
    kb: KbEnv, tmp_path: Path
) -> None:
    """The safety backup of a redacting source would hold the template, not the live values:
    replacing the live file after it would lose them for good."""
    env = tmp_path / "app.env"
    env.write_bytes(b"TOKEN=plain-first\n")
    job = f'targets = ["local"]\n\n[[files]]\nname = "env"\npath = "{env}"\n'
    kb.write_job("plain", job)
    kb.start()
    backup = kb.run_backup("plain")
    kb.write_job("plain", job + 'redact = "env"\n')
    ok(ctl(kb, "reload"), kb)
    env.write_bytes(b"TOKEN=live-value\n")
    refused = ctl(kb, "restore", backup["id"], "--component", "env", "--in-place", "--yes")
    assert refused.returncode != 0
    assert "so a safety backup of" in refused.stderr and "would not keep" in refused.stderr
    assert env.read_bytes() == b"TOKEN=live-value\n"
    assert os.listdir(tmp_path).count("app.env") == 1


def test_a_missing_or_special_path_fails_the_run_in_one_line(kb: KbEnv, tmp_path: Path) -> None:
    gone = tmp_path / "gone.env"
    kb.write_job("cfg", f'targets = ["local"]\n\n[[files]]\nname = "env"\npath = "{gone}"\n'
                        'redact = "env"\n')
    kb.start()
    assert_run_fails(kb, f"files env: {gone} does not exist", job="cfg")
    os.mkfifo(gone)
    assert_run_fails(kb, f"files env: {gone} is neither a directory nor a regular file",
                     job="cfg")
