"""kbackupctl delete and kbackupctl audit, end to end: the real daemon, the real CLI, real
PostgreSQL, the local store checked file by file; plus the guards at the unit level.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pty
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_api_auth import ADMIN_GROUP, grouped_daemon  # noqa: F401 - fixture (test_users: kb_users)

from conftest import KBACKUPCTL, KbEnv, PgServer

# ---------------------------------------------------------------------- helpers


def ctl(kb: KbEnv, *args: str, stdin: Any = subprocess.DEVNULL,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """kbackupctl with no terminal on stdin (unless one is given)."""
    return subprocess.run([KBACKUPCTL, "--socket", str(kb.socket), *args], env=kb.env,
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str], kb: KbEnv) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}" \
        f"\n--- daemon log ---\n{kb.logs()[-4000:]}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def next_second() -> None:
    """Backup ids and started_at have one-second resolution: start the next one later."""
    now = time.time()
    time.sleep(math.ceil(now) - now + 0.05)


def backups(kb: KbEnv) -> dict[str, dict[str, Any]]:
    return {b["id"]: b for b in kb.ctl_items("backups")}


def take_backups(kb: KbEnv, count: int) -> list[dict[str, Any]]:
    """count backups of job shop, oldest first."""
    taken = []
    for _ in range(count):
        if taken:
            next_second()
        taken.append(kb.run_backup())
    return taken


def audit_files(store: Path) -> dict[str, dict[str, Any]]:
    """deletion id -> the JSON record under _audit/deletions/YYYY/MM/ of this store."""
    found = {}
    for path in (store / "_audit" / "deletions").glob("*/*/*.json"):
        assert re.fullmatch(r"\d{4}/\d{2}", f"{path.parent.parent.name}/{path.parent.name}")
        found[path.stem] = json.loads(path.read_text())
    return found


def run_on_pty(kb: KbEnv, args: list[str], typed: str) -> subprocess.CompletedProcess[str]:
    """kbackupctl with a pseudo-terminal on stdin, on which `typed` is typed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([KBACKUPCTL, "--socket", str(kb.socket), *args], env=kb.env,
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        os.close(slave)
        slave = -1
        os.write(master, typed.encode() + b"\n")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def two_targets(kb: KbEnv, pg: PgServer, shop_db: str) -> Path:
    """Job shop on the targets local and second (both local directories)."""
    second = kb.base / "store2"
    kb.write_daemon(extra=f'\n[storage.second]\ntype = "local"\npath = "{second}"\n')
    path = kb.shop_job(pg, shop_db, None)
    path.write_text(path.read_text().replace('targets = ["local"]',
                                             'targets = ["local", "second"]'))
    return second


def copy_dir(store: Path, backup: dict[str, Any]) -> Path:
    backup_id = backup["id"]
    return store / backup["job"] / backup_id[:4] / backup_id[4:6] / backup_id


# ---------------------------------------------------------------------- deleting


def test_delete_an_older_backup_with_yes(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    older, newer = take_backups(kb, 2)
    older_dir = kb.backup_dir(older)
    stored = sorted(p.name for p in older_dir.iterdir())
    assert "manifest.json" in stored and len(stored) >= 3

    # --dry-run shows what would go and deletes nothing.
    plan = json.loads(ok(ctl(kb, "--json", "delete", older["id"], "--dry-run"), kb))
    assert plan["backup_id"] == older["id"] and plan["job"] == "shop"
    assert plan["started_at"] == older["started_at"]
    [target] = plan["targets"]
    assert target["target"] == "local" and target["objects"] == len(stored)
    assert target["size_bytes"] == sum(p.stat().st_size for p in older_dir.iterdir())
    assert plan["removes_backup"] and plan["remaining_targets"] == []
    text = ok(ctl(kb, "delete", older["id"], "--dry-run"), kb)
    assert f"delete backup {older['id']} of job shop" in text
    assert f"{len(stored)} objects" in text and "dry run: nothing was deleted" in text
    assert older_dir.is_dir()

    result = ctl(kb, "delete", older["id"], "--yes", "--reason", "GDPR request 17")
    out = ok(result, kb)
    assert f"deleted backup {older['id']} from local" in out
    assert "the catalog no longer lists it" in out
    # Manifest and objects are gone from the store, the newer backup is untouched.
    assert not older_dir.exists()
    assert not older_dir.parent.exists() or older["id"] not in os.listdir(older_dir.parent)
    assert (kb.backup_dir(newer) / "manifest.json").is_file()
    assert list(backups(kb)) == [newer["id"]]
    assert ctl(kb, "show", older["id"]).returncode == 1

    # The audit trail: in the catalog (kbackupctl audit) and in the storage.
    [entry] = kb.ctl_items("audit")
    assert entry["kind"] == "deletion" and entry["backup_id"] == older["id"]
    assert entry["job"] == "shop" and entry["user"] == "root" and entry["uid"] == 0
    assert entry["targets"] == ["local"] and entry["result"] == "deleted"
    assert entry["forced"] is False and entry["reason"] == "GDPR request 17"
    assert kb.ctl_items("audit", "shop") == [entry]
    assert kb.ctl_items("audit", "other") == []
    files = audit_files(kb.store)
    assert list(files) == [entry["id"]]
    record = files[entry["id"]]
    assert record["backup_id"] == older["id"] and record["user"] == "root"
    assert record["uid"] == 0 and record["targets"] == ["local"]
    assert record["reason"] == "GDPR request 17" and record["forced"] is False
    assert record["backup"]["started_at"] == older["started_at"]
    month = datetime.fromisoformat(record["deleted_at"].replace("Z", "+00:00"))
    assert (kb.store / "_audit" / "deletions" / f"{month:%Y}" / f"{month:%m}"
            / f"{entry['id']}.json").is_file()
    table = ok(ctl(kb, "audit"), kb)
    assert "deletion" in table and older["id"] in table and "GDPR request 17" in table

    # A rescan and a prune neither bring the backup back nor touch the audit records.
    assert kb.ctl_json("catalog", "rescan")["found"] == 1
    ok(ctl(kb, "prune", "shop"), kb)
    assert list(backups(kb)) == [newer["id"]]
    assert list(audit_files(kb.store)) == [entry["id"]]


def test_delete_json_is_one_document(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    older, newer = take_backups(kb, 2)
    result = json.loads(ok(ctl(kb, "delete", older["id"], "--yes", "--json"), kb))
    assert result["backup_id"] == older["id"] and result["targets"] == ["local"]
    assert result["catalog"] == "removed" and result["errors"] == {}
    assert result["deletion_id"] in audit_files(kb.store)
    assert not kb.backup_dir(older).exists()


def test_confirmation_without_a_terminal_and_typed_on_one(kb: KbEnv, pg: PgServer,
                                                          shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    older, _newer = take_backups(kb, 2)
    older_dir = kb.backup_dir(older)

    # No terminal, no --yes: exit 2, one line saying to add --yes, nothing deleted.
    result = ctl(kb, "delete", older["id"])
    assert result.returncode == 2
    assert one_line_error(result) == (f"kbackupctl: deleting backup {older['id']} needs"
                                      " confirmation and there is no terminal: add --yes to go"
                                      " ahead")
    assert f"delete backup {older['id']}" in result.stdout  # what would have gone
    result = ctl(kb, "--json", "delete", older["id"])
    assert result.returncode == 2
    assert json.loads(result.stdout)["exit_code"] == 2
    assert one_line_error(result).endswith("add --yes to go ahead")
    assert (older_dir / "manifest.json").is_file()

    # A terminal, the wrong id typed: not confirmed, nothing deleted.
    result = run_on_pty(kb, ["delete", older["id"]], older["id"][:-1] + "x")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().endswith("kbackupctl: not confirmed: nothing was deleted")
    assert (older_dir / "manifest.json").is_file()
    assert older["id"] in backups(kb)
    assert kb.ctl_items("audit") == []

    # The right id typed: deleted.
    result = run_on_pty(kb, ["delete", older["id"]], older["id"])
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Type its id to continue" in result.stdout
    assert not older_dir.exists()
    assert older["id"] not in backups(kb)
    [entry] = kb.ctl_items("audit")
    assert entry["backup_id"] == older["id"]


# ---------------------------------------------------------------------- guards


def test_guards_newest_min_keep_and_a_running_verification(kb: KbEnv, pg: PgServer,
                                                           shop_db: str) -> None:
    # A restore-test verification that takes a while: its SQL check sleeps.
    kb.shop_job(pg, shop_db, None, extra="""
[retention]
min_keep = 3

[verify]
sql_checks = ["SELECT x FROM (SELECT pg_sleep(4)::text AS x) s WHERE x = 'never'"]
""")
    kb.start()
    first, second, third = take_backups(kb, 3)

    # The newest complete backup of the job.
    result = ctl(kb, "delete", third["id"], "--yes")
    assert result.returncode == 1
    assert one_line_error(result) == (f"kbackupctl: backup {third['id']} is the newest complete"
                                      " backup of job shop; --force to delete it anyway")
    assert (kb.backup_dir(third) / "manifest.json").is_file()
    # Fewer than min_keep complete backups would be left.
    result = ctl(kb, "delete", first["id"], "--yes")
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"kbackupctl: deleting backup {first['id']} would leave 2 complete backups of job"
        " shop, fewer than its [retention] min_keep = 3; --force to delete it anyway")
    assert len(backups(kb)) == 3 and kb.ctl_items("audit") == []

    # A backup being verified: refused even with --force.
    started = kb.ctl_json("verify", second["id"], "--level", "restore-test")
    result = ctl(kb, "delete", second["id"], "--yes", "--force")
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"kbackupctl: backup {second['id']} is in use by a running verify (run"
        f" {started['run_id']}); it cannot be deleted, not even with --force, until that run"
        " has ended")
    assert (kb.backup_dir(second) / "manifest.json").is_file()
    deadline = time.monotonic() + 120
    while kb.ctl_items("runs")[0]["status"] == "running":
        assert time.monotonic() < deadline, kb.logs()
        time.sleep(0.3)
    run = next(r for r in kb.ctl_items("runs") if r["id"] == started["run_id"])
    assert run["status"] == "complete", run  # the verification read a whole backup

    # With --force: gone, and the audit trail says it was forced and what was overridden.
    result = json.loads(ok(ctl(kb, "--json", "delete", third["id"], "--yes", "--force",
                                "--reason", "bad data"), kb))
    assert not kb.backup_dir(third).exists()
    assert set(backups(kb)) == {first["id"], second["id"]}
    [entry] = kb.ctl_items("audit")
    assert entry["id"] == result["deletion_id"] and entry["forced"] is True
    assert entry["overridden"][0] == f"backup {third['id']} is the newest complete backup of" \
        " job shop"
    assert "min_keep = 3" in entry["overridden"][1]
    assert audit_files(kb.store)[entry["id"]]["forced"] is True
    assert "(forced): bad data" in ok(ctl(kb, "audit"), kb)


def test_a_failed_backup_can_be_deleted(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    path = kb.shop_job(pg, "kbt_no_such_database", None, name="broken")
    assert "kbt_no_such_database" in path.read_text()
    kb.start()
    good = kb.run_backup()
    assert ctl(kb, "run", "broken", "--wait").returncode == 1
    [failed] = [b for b in backups(kb).values() if b["job"] == "broken"]
    assert failed["status"] == "failed"
    # Not complete: no guard applies, though it is the job's only backup.
    out = ok(ctl(kb, "delete", failed["id"], "--yes"), kb)
    assert "the catalog no longer lists it" in out
    assert list(backups(kb)) == [good["id"]]
    [entry] = kb.ctl_items("audit", "broken")
    assert entry["backup_id"] == failed["id"] and entry["forced"] is False


def test_delete_one_target_keeps_the_other_copy(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    second_store = two_targets(kb, pg, shop_db)
    kb.start()
    older, newer = take_backups(kb, 2)
    assert older["targets"] == {"local": "complete", "second": "complete"}
    on_local, on_second = copy_dir(kb.store, older), copy_dir(second_store, older)
    assert (on_local / "manifest.json").is_file() and (on_second / "manifest.json").is_file()

    plan = json.loads(ok(ctl(kb, "--json", "delete", older["id"], "--target", "second",
                             "--dry-run"), kb))
    assert [t["target"] for t in plan["targets"]] == ["second"]
    assert plan["remaining_targets"] == ["local"] and plan["removes_backup"] is False

    out = ok(ctl(kb, "delete", older["id"], "--target", "second", "--yes"), kb)
    assert f"deleted backup {older['id']} from second" in out and "still on: local" in out
    assert not on_second.exists()
    assert (on_local / "manifest.json").is_file()
    assert sorted(p.name for p in on_local.iterdir()) == sorted(
        [c["file"] for c in older["components"]] + ["manifest.json", "manifest.json.sig"])
    listed = backups(kb)
    assert set(listed) == {older["id"], newer["id"]}
    assert listed[older["id"]]["targets"] == {"local": "complete"}
    assert listed[older["id"]]["status"] == "complete"
    # The record is on both targets the job uses.
    [entry] = kb.ctl_items("audit")
    assert entry["targets"] == ["second"] and entry["remaining_targets"] == ["local"]
    assert list(audit_files(kb.store)) == list(audit_files(second_store)) == [entry["id"]]
    # It still restores from the copy left: a checksum verification reads it.
    assert ok(ctl(kb, "verify", older["id"], "--wait"), kb)
    # A copy that is not there any more.
    result = ctl(kb, "delete", older["id"], "--target", "second", "--yes")
    assert one_line_error(result) == (f"kbackupctl: backup {older['id']} has no copy on target"
                                      " 'second' (its targets: local)")
    # Deleting the last copy deletes the backup.
    ok(ctl(kb, "delete", older["id"], "--yes"), kb)
    assert not on_local.exists()
    assert list(backups(kb)) == [newer["id"]]
    # Taking one copy of the newest backup leaves it on the other: no guard stands in the way.
    ok(ctl(kb, "delete", newer["id"], "--target", "local", "--yes"), kb)
    assert backups(kb)[newer["id"]]["targets"] == {"second": "complete"}
    assert len(kb.ctl_items("audit")) == 3


# ---------------------------------------------------------------------- bad input, rights


def http_delete(kb: KbEnv, path: str) -> tuple[int, dict[str, Any]]:
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(kb.socket))

    conn = Conn("localhost", timeout=30)
    try:
        conn.request("DELETE", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_unknown_id_and_bad_requests(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    result = ctl(kb, "delete", "20990101T000000Z-abcdef", "--yes")
    assert result.returncode == 1 and result.stdout == ""
    assert one_line_error(result) == ("kbackupctl: no backup with id '20990101T000000Z-abcdef'"
                                      " (see `kbackupctl backups`)")
    status, body = http_delete(kb, "/v1/backups/20990101T000000Z-abcdef")
    assert status == 404 and body["status"] == 404
    status, body = http_delete(kb, "/v1/backups/20990101T000000Z-abcdef?force=maybe")
    assert status == 400 and body["error"].startswith("force: expected true or false")
    status, body = http_delete(kb, "/v1/backups/x?dry_run=1&colour=red")
    assert status == 400 and body["error"].startswith("colour: unknown parameter")
    result = ctl(kb, "--json", "delete", "nope", "--yes")
    assert json.loads(result.stdout)["error"].startswith("no backup with id 'nope'")


def test_only_admins_delete(kb: KbEnv, pg: PgServer, shop_db: str,
                            test_users: dict[str, int]) -> None:  # noqa: F811
    grouped_daemon(kb)
    kb.shop_job(pg, shop_db, None)
    kb.start()
    older, newer = take_backups(kb, 2)
    result = kb.ctl("delete", older["id"], "--yes", user="kbt-reader")
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"kbackupctl: user kbt-reader may only read: DELETE /v1/backups/{older['id']} needs"
        f" membership in group {ADMIN_GROUP} (or root)")
    assert (kb.backup_dir(older) / "manifest.json").is_file()
    assert older["id"] in backups(kb)
    # An operator (admin group) may; the audit trail names them.
    ok(kb.ctl("delete", older["id"], "--yes", user="kbt-operator"), kb)
    assert not kb.backup_dir(older).exists()
    listing = kb.ctl("--json", "audit", user="kbt-reader")  # reading the trail is a read
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)["items"]
    assert entry["user"] == "kbt-operator" and entry["uid"] == test_users["kbt-operator"]
    assert audit_files(kb.store)[entry["id"]]["user"] == "kbt-operator"


# ---------------------------------------------------------------------- unit level


def test_a_run_using_the_backup_is_refused_even_with_force(tmp_path: Path) -> None:
    from kbackup.api.server import status_of
    from kbackup.catalog import Catalog
    from kbackup.jobs.delete import DeleteRefused, plan_delete
    from kbackup.progress import Progress
    from kbackup.runner import ActiveRun

    catalog = Catalog(tmp_path)
    for backup_id in ("20260101T020000Z-aaaaaa", "20260102T020000Z-bbbbbb"):
        catalog.upsert_backup(backup_id, "shop", "complete", "daily", backup_id[:8], None, 10,
                              {"local": "complete"}, {"components": []})
    config = SimpleNamespace(jobs={})
    storages: dict[str, Any] = {"local": object()}
    older = "20260101T020000Z-aaaaaa"
    assert plan_delete(config, catalog, storages, [], older, None, False)["removes_backup"]
    run = ActiveRun("20260301T000000Z-cccccc", "shop", "restore", "manual",
                    datetime.now(UTC), Progress(), backup_id=older)
    with pytest.raises(DeleteRefused) as refused:
        plan_delete(config, catalog, storages, [run], older, None, True)
    assert status_of(refused.value) == 409
    assert str(refused.value).startswith(f"backup {older} is in use by a running restore (run"
                                         " 20260301T000000Z-cccccc)")
    with pytest.raises(DeleteRefused) as refused:
        plan_delete(config, catalog, storages, [], "20260102T020000Z-bbbbbb", None, False)
    assert "newest complete backup of job shop" in str(refused.value)


def test_runner_tracks_the_backup_a_run_uses(tmp_path: Path) -> None:
    from kbackup.catalog import Catalog
    from kbackup.runner import Runner

    async def main() -> None:
        config = SimpleNamespace(jobs={"shop": SimpleNamespace(timeout=60.0)},
                                 daemon=SimpleNamespace(max_concurrent_jobs=1))
        runner = Runner(config, Catalog(tmp_path), {})  # type: ignore[arg-type]
        gate = asyncio.Event()

        async def work(run: Any, config: Any) -> None:
            await gate.wait()

        run, _ = runner.submit("shop", "verify", "manual", work, key="verify:x",
                               target_id="20260101T020000Z-aaaaaa")
        assert runner.using("20260101T020000Z-aaaaaa") == [run]
        assert runner.using("20260102T020000Z-bbbbbb") == []
        gate.set()
        await run.done.wait()
        assert runner.using("20260101T020000Z-aaaaaa") == []

    asyncio.run(main())


def test_audit_objects_are_no_backups_and_no_leftovers(tmp_path: Path) -> None:
    from kbackup.repository import clean_incomplete, list_manifests, write_audit
    from kbackup.storage.local import LocalStorage

    async def main() -> None:
        storage = LocalStorage("local", tmp_path / "store")
        when = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
        failed = await write_audit([storage], "deletions", "20260305T120000Z-abcdef",
                                   {"backup_id": "20260101T020000Z-aaaaaa"}, when)
        assert failed == {}
        await write_audit([storage], "restores", "20260305T120000Z-fedcba", {}, when)
        path = tmp_path / "store/_audit/deletions/2026/03/20260305T120000Z-abcdef.json"
        assert json.loads(path.read_text()) == {"backup_id": "20260101T020000Z-aaaaaa"}
        old = time.time() - 10 * 86400
        for item in (tmp_path / "store/_audit").rglob("*.json"):
            os.utime(item, (old, old))
        assert await list_manifests(storage) == []
        removed = await clean_incomplete(storage, {"20260305T120000Z-abcdef"},
                                         datetime.now(UTC), timedelta(seconds=0))
        assert removed == []
        assert path.is_file()
        assert len(list((tmp_path / "store/_audit").rglob("*.json"))) == 2

    asyncio.run(main())
