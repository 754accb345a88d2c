"""Append-only targets (issue 20): kbackupd never deletes where it may not.

Against real servers: moto with IAM enforced (the daemon's key is denied s3:DeleteObject,
another key may delete), wsgidav with a second login (the daemon's login is answered 403 to
every DELETE by the fault middleware, which also counts them), and a local directory. The
daemon keeps what retention would remove, says so (prune report, INFO health check), refuses
`delete` in one line; `kbackupctl prune JOB --target T --credentials-dir DIR` then deletes
with the other credentials and the catalog follows. A target that refuses deletes without
being declared append-only costs one error line per backup and leaves every backup whole.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import KbEnv, request, wait_for
from kbackup.repository import backup_prefix
from storage_servers import (
    DAV_DELETE_PASSWORD,
    DAV_DELETE_USER,
    DAV_PASSWORD,
    DAV_USER,
    ServerProcess,
    dav_config,
    s3_client,
    s3_config,
    toml_table,
    write_secret,
)

pytest_plugins = ["storage_servers"]
KEEP_ONE = "[retention]\nkeep_last = 1\n"
WRITE_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    {"Effect": "Deny", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
     "Resource": "*"}]}
EVERYTHING = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def docs_job(kb: KbEnv, tmp_path: Path, target: str) -> None:
    tree = tmp_path / "docs"
    tree.mkdir(exist_ok=True)
    (tree / "a.txt").write_text("hello\n")
    kb.write_job("docs", f"""
targets = ["{target}"]
timeout = "5m"
{KEEP_ONE}
[[files]]
name = "docs"
path = "{tree}"
""")


def one_line_failure(result: Any) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return str(lines[0])


def three_backups_wait(kb: KbEnv, target: str) -> list[str]:
    """Three backups with keep_last = 1: the two older ones wait, nothing is deleted."""
    ids = []
    for _ in range(3):  # start times a second apart: retention orders by them
        ids.append(kb.run_backup("docs")["id"])
        time.sleep(1.1)
    report = kb.ctl_json("prune", "docs")
    assert report["removed"] == [] and report["errors"] == [] and report["orphans"] == []
    assert report["waiting"] == [{"id": i, "target": target} for i in reversed(ids[:2])]
    text = kb.ctl("prune", "docs")
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("waits (append-only)") == 2
    assert (f"kept on append-only target {target}: delete with `kbackupctl prune docs --target"
            f" {target} --credentials-dir DIR` (as root)") in text.stdout
    assert "event=prune.waiting job=docs target=" + target in kb.logs()
    assert "event=prune.error" not in kb.logs()

    # Health: INFO, nothing wrong (no alert, status stays OK).
    status, _, body = request(kb, "GET", "/v1/health")
    assert status == 200
    health = json.loads(body)
    [check] = [c for c in health["checks"] if c["check"] == "retention_waiting"]
    assert check["severity"] == "info" and check["target"] == target
    assert check["reason"] == f"2 backups past retention wait on append-only target {target}"
    assert health["status"] == "ok", health
    assert kb.ctl("check", "docs").returncode == 0
    assert f"2 backups past retention wait on append-only target {target}" in kb.ctl(
        "status").stdout

    line = one_line_failure(kb.ctl("delete", ids[0], "--yes", "--force"))
    assert line.endswith(f"target {target} is append-only: kbackupd never deletes there;"
                         " docs's backups past retention go with `kbackupctl prune docs"
                         f" --target {target} --credentials-dir DIR` (as root)"), line
    assert kb.ctl_json("show", ids[0])["targets"] == {target: "complete"}
    return ids


def pruned_by_hand(kb: KbEnv, target: str, ids: list[str], *extra: str) -> None:
    result = kb.ctl("prune", "docs", "--target", target, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed {ids[0]}" in result.stdout and f"removed {ids[1]}" in result.stdout
    assert "decided by kbackupd's retention" in result.stdout
    assert "kbackupd rescanned its catalog: 1 backups found" in result.stdout
    assert [b["id"] for b in kb.ctl_items("backups", "docs")] == [ids[2]]
    wait_for(lambda: not [c for c in json.loads(request(kb, "GET", "/v1/health")[2])["checks"]
                          if c["check"] == "retention_waiting"], what="INFO check gone")


def test_append_s3_write_only_key_daemon_never_deletes_then_root_prunes(
    kb: KbEnv, s3_server: ServerProcess, tmp_path: Path,
) -> None:
    writer = s3_server.control("fill", {"user": "kb-writer", "policy": WRITE_ONLY})
    deleter = s3_server.control("fill", {"user": "kb-deleter", "policy": EVERYTHING})
    secrets, creds = tmp_path / "secrets", tmp_path / "root-creds"
    table = s3_config(s3_server, secrets)
    table.update(
        access_key_id_file=str(write_secret(secrets, "w-id", writer["access_key"])),
        secret_access_key_file=str(write_secret(secrets, "w-secret", writer["secret_key"])),
        delete_access_key_id_file=str(
            write_secret(creds, "offsite.access_key_id", deleter["access_key"])),
        delete_secret_access_key_file=str(
            write_secret(creds, "offsite.secret_access_key", deleter["secret_key"])))
    kb.write_daemon(extra=toml_table("offsite", table))
    docs_job(kb, tmp_path, "offsite")
    # Every DELETE signed with the daemon's key is counted (and refused, as IAM would).
    s3_server.faults({"method": "DELETE", "auth": writer["access_key"], "status": 403})
    kb.start()
    checked = kb.ctl("storage", "check", "offsite")  # no delete step on an append-only target
    assert checked.returncode == 0 and ": OK" in checked.stdout, checked.stdout
    ids = three_backups_wait(kb, "offsite")

    client = s3_client(s3_server)
    def manifests() -> list[str]:
        found = client.list_objects_v2(Bucket=table["bucket"], Prefix=table["prefix"])
        return sorted(o["Key"] for o in found.get("Contents", [])
                      if o["Key"].endswith("/manifest.json"))
    assert manifests() == sorted(table["prefix"] + backup_prefix("docs", i) + "manifest.json"
                                 for i in ids)
    assert s3_server.hits() == 0  # the daemon never even asked

    # The key really is write-only: moto's IAM refuses it a delete.
    import boto3
    from botocore.exceptions import ClientError
    denied = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id=writer["access_key"],
                          aws_secret_access_key=writer["secret_key"])
    s3_server.faults()
    with pytest.raises(ClientError) as refused:
        denied.delete_object(Bucket=table["bucket"], Key=manifests()[0])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert len(manifests()) == 3

    s3_server.faults({"method": "DELETE", "auth": writer["access_key"], "status": 403})
    pruned_by_hand(kb, "offsite", ids, "--credentials-dir", str(creds))
    assert manifests() == [table["prefix"] + backup_prefix("docs", ids[2]) + "manifest.json"]
    leftover = client.list_objects_v2(Bucket=table["bucket"],
                                      Prefix=table["prefix"] + backup_prefix("docs", ids[0]))
    assert leftover.get("Contents", []) == []
    assert s3_server.hits() == 0


def test_append_webdav_login_without_delete_then_root_prunes_with_the_other_login(
    kb: KbEnv, dav_server: ServerProcess, tmp_path: Path,
) -> None:
    creds = tmp_path / "root-creds"
    table = dav_config(dav_server, tmp_path / "secrets", delete_username=DAV_DELETE_USER,
                       delete_password_file=str(
                           write_secret(creds, "elsewhere", "not this one")))
    write_secret(creds, "offsite.password", DAV_DELETE_PASSWORD)
    kb.write_daemon(extra=toml_table("offsite", table))
    docs_job(kb, tmp_path, "offsite")
    daemon_login = base64.b64encode(f"{DAV_USER}:{DAV_PASSWORD}".encode()).decode()
    dav_server.faults({"method": "DELETE", "auth": daemon_login, "status": 403})
    kb.start()
    ids = three_backups_wait(kb, "offsite")
    root = dav_server.root / table["url"].rsplit("/", 1)[-1]
    assert len(list(root.rglob("manifest.json"))) == 3
    assert dav_server.hits() == 0

    # --credentials-dir wins over the configured file (which holds a wrong password).
    pruned_by_hand(kb, "offsite", ids, "--credentials-dir", str(creds))
    assert [p.parent.name for p in root.rglob("manifest.json")] == [ids[2]]
    assert not (root / backup_prefix("docs", ids[0])).exists()
    assert dav_server.hits() == 0


def test_append_local_directory_kept_then_pruned_by_hand(kb: KbEnv, tmp_path: Path) -> None:
    kb.write_daemon(extra="append_only = true\n")
    docs_job(kb, tmp_path, "local")
    kb.start()
    ids = three_backups_wait(kb, "local")
    assert sorted(p.parent.name for p in kb.store.rglob("manifest.json")) == sorted(ids)
    # A failed run's leftovers stay too (nothing is deleted there), even at start.
    stray = kb.store / backup_prefix("docs", "20200101T000000Z-abcdef") / "x.zst.partial"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    os.utime(stray, (1e9, 1e9))  # a long-dead run's: cleanup would remove it at once
    kb.stop()
    # Without the daemon: retention over the manifests on the target decides.
    dry = kb.ctl("prune", "docs", "--target", "local", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "decided by retention over the manifests on the target" in dry.stdout
    assert f"would remove {ids[0]}" in dry.stdout and f"would remove {ids[1]}" in dry.stdout
    assert ids[2] not in dry.stdout and "dry run: nothing was removed" in dry.stdout
    assert len(list(kb.store.rglob("manifest.json"))) == 3
    wrong = one_line_failure(kb.ctl("prune", "docs", "--target", "elsewhere"))
    assert wrong.endswith("job docs has no target 'elsewhere' (its targets: local)"), wrong
    kb.start()
    assert stray.exists()
    pruned_by_hand(kb, "local", ids)
    assert sorted(p.parent.name for p in kb.store.rglob("manifest.json")) == [ids[2]]
    assert not stray.exists()  # `prune --target` cleans the leftovers the daemon left


def test_append_target_refusing_deletes_keeps_every_backup_whole(
    kb: KbEnv, s3_server: ServerProcess, tmp_path: Path,
) -> None:
    """Not declared append-only, but its key cannot delete: one line per backup, no storm,
    and the refused manifest delete (the first one) leaves the backup complete."""
    writer = s3_server.control("fill", {"user": "kb-writer-2", "policy": WRITE_ONLY})
    secrets = tmp_path / "secrets"
    table = s3_config(s3_server, secrets)
    table.update(
        access_key_id_file=str(write_secret(secrets, "w-id", writer["access_key"])),
        secret_access_key_file=str(write_secret(secrets, "w-secret", writer["secret_key"])))
    kb.write_daemon(extra=toml_table("offsite", table))
    docs_job(kb, tmp_path, "offsite")
    kb.start()
    ids = [kb.run_backup("docs")["id"] for _ in range(3)]
    assert kb.ctl("prune", "docs").returncode == 1
    report = json.loads(kb.ctl("--json", "prune", "docs").stdout)
    assert report["removed"] == []
    assert len(report["errors"]) == 2, report["errors"]
    for error, backup_id in zip(report["errors"], reversed(ids[:2]), strict=True):
        assert error.startswith(f"offsite: {backup_id}: ") and "\n" not in error
        assert "AccessDenied" in error or "403" in error, error
    errors = [line for line in kb.logs().splitlines() if "event=prune.error" in line]
    assert len(errors) == 1 + 2  # after the 2nd backup: one, after the 3rd: two
    assert "Traceback" not in kb.logs()
    client = s3_client(s3_server)
    for backup_id in ids:
        prefix = table["prefix"] + backup_prefix("docs", backup_id)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=table["bucket"],
                                                          Prefix=prefix)["Contents"]]
        assert prefix + "manifest.json" in keys and len(keys) >= 3
        assert kb.ctl_json("show", backup_id)["targets"] == {"offsite": "complete"}
