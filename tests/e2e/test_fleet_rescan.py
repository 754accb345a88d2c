"""Several servers, one bucket: each kbackupd under its own prefix; `catalog rescan
--all-hosts` on one of them lists the others' backups read-only (as HOST:JOB), and a
replacement server verifies and restores another host's backup from the shared bucket without
counting it as its own, deleting or pruning it. Two real daemons, a real S3 server (moto)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KbEnv, kb_environment
from storage_servers import ServerProcess, s3_client, s3_config, toml_table

pytest_plugins = ["storage_servers"]

INVOICE = b"%PDF-1.4 invoice 2026-0042 for Acme Ltd\n" * 50


@pytest.fixture
def second_host(tmp_path: Path) -> Iterator[KbEnv]:
    """Another kbackupd on this machine: the replacement server."""
    (tmp_path / "db1").mkdir()
    with kb_environment(tmp_path / "db1") as env:
        yield env


def host(kb: KbEnv, s3: ServerProcess, prefix: str, files: Path, name: str = "crm") -> None:
    """A daemon writing to the shared bucket under `prefix`, job `name` backing up `files`."""
    kb.write_daemon(extra=toml_table("offsite", s3_config(s3, kb.base / "secrets",
                                                           prefix=prefix)))
    kb.write_job(name, f'targets = ["offsite"]\n[verify]\nafter_backup = "none"\n'
                       f'[[files]]\nname = "invoices"\npath = "{files}"\n')
    kb.start()


def objects(s3: ServerProcess, prefix: str) -> list[str]:
    listed = s3_client(s3).list_objects_v2(Bucket=s3_config(s3, Path("/tmp"))["bucket"],
                                            Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_replacement_server_restores_another_hosts_backup(
        kb: KbEnv, second_host: KbEnv, s3_server: ServerProcess, tmp_path: Path) -> None:
    fleet = f"fleet-{uuid.uuid4().hex[:8]}/"
    web1_files = tmp_path / "web1-invoices"
    web1_files.mkdir()
    (web1_files / "2026-0042.pdf").write_bytes(INVOICE)
    host(kb, s3_server, fleet + "web1/", web1_files)
    made = kb.run_backup("crm")
    stored = objects(s3_server, fleet + "web1/")
    assert any(k.endswith("/manifest.json") for k in stored)

    db1 = second_host
    (tmp_path / "db1-invoices").mkdir()
    host(db1, s3_server, fleet + "db1/", tmp_path / "db1-invoices")
    plain = db1.ctl("catalog", "rescan")
    assert plain.returncode == 0 and "found 0 complete" in plain.stdout, plain.stderr
    assert db1.ctl_items("backups") == []

    web1_key = tmp_path / "web1-signing.pem"  # web1's public key, so db1 trusts its backups
    web1_key.write_text(kb.ctl("keys", "export-signing").stdout)
    assert db1.ctl("keys", "import-signing", str(web1_key)).returncode == 0
    rescan = db1.ctl("catalog", "rescan", "--all-hosts")
    assert rescan.returncode == 0, rescan.stderr
    assert "other hosts: 1 backups" in rescan.stdout
    [seen] = db1.ctl_items("backups")
    assert seen["id"] == made["id"] and seen["job"] == "web1:crm"
    assert seen["targets"] == {"offsite@web1": "complete"}
    assert seen["trust"] == "trusted"
    assert db1.ctl_items("backups", "crm") == []  # not db1's own crm backup
    health = db1.ctl_json("status")
    crm = next(j for j in health["jobs"] if j["job"] == "crm")
    assert crm["last_backup"] is None  # web1's backup is not db1's

    verified = db1.ctl("verify", made["id"], "--level", "restore-test", "--wait")
    assert verified.returncode == 0, verified.stdout + verified.stderr + db1.logs()

    out = tmp_path / "restored"
    restored = db1.ctl("restore", made["id"], "--component", "invoices", "--files-to",
                       str(out), "--yes")
    assert restored.returncode == 0, restored.stderr + db1.logs()
    assert (out / "2026-0042.pdf").read_bytes() == INVOICE

    refused = db1.ctl("delete", made["id"], "--yes")
    assert refused.returncode != 0
    assert f"backup {made['id']} is another host's (offsite@web1)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert db1.ctl("prune", "crm").returncode == 0
    assert objects(s3_server, fleet + "web1/") == stored  # untouched by db1


def test_all_hosts_needs_a_per_host_prefix(kb: KbEnv, s3_server: ServerProcess,
                                           tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    host(kb, s3_server, "", tmp_path / "files")
    result = kb.ctl("catalog", "rescan", "--all-hosts")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "kbackupctl: --all-hosts needs an S3 target with a per-host prefix (e.g. prefix ="
        ' "db1/" on host db1, "web1/" on web1 in one bucket); none is configured'), result.stderr

