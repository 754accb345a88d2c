"""The SQLite catalog on its own: runs, backups, verifications, restores, schedule bookkeeping,
pauses, paged listings (limit, offset, total), the label filter, and schema migrations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kbackup import catalog as catalog_module
from kbackup.catalog import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    iso,
    parse_iso,
)
from kbackup.views import backup_view

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    found = Catalog(tmp_path / "state")
    yield found
    found.close()


def backup_id(index: int) -> str:
    return f"{T0 + timedelta(hours=index):%Y%m%dT%H%M%SZ}-{index:06x}"


def manifest(bid: str, job: str = "shop") -> dict[str, Any]:
    return {"id": bid, "job": job, "components": [
        {"name": "shop", "kind": "postgres", "file": "shop.dump.zst", "size_bytes": 10,
         "sha256": "a" * 64, "raw_bytes": 100, "encryption": {"mode": "none"},
         "compression": {"algorithm": "zstd"},
         "database": {"server_version": "16.4", "database_size": 5000,
                      "row_counts": {"orders": 3, "items": 4}}},
        {"name": "pdfs", "kind": "files", "file": "pdfs.tar.zst", "size_bytes": 20,
         "sha256": "b" * 64, "raw_bytes": 200, "compression": {"algorithm": "zstd"},
         "files": {"file_count": 2, "total_bytes": 200, "entries": ["x", "y"]}},
    ]}


def add_backup(catalog: Catalog, index: int, job: str = "shop", status: str = "complete",
               tag: str | None = None, label: str | None = None,
               with_manifest: bool = True) -> str:
    bid = backup_id(index)
    catalog.upsert_backup(bid, job, status, "scheduled" if tag else "manual",
                          iso(T0 + timedelta(hours=index)) or "", None, 30 + index,
                          {"local": status}, manifest(bid, job) if with_manifest else None,
                          tag=tag, label=label)
    return bid


# ------------------------------------------------------------------------------ runs


def test_runs_are_recorded_finished_and_listed_newest_first(catalog: Catalog) -> None:
    for index in range(5):
        catalog.add_run(f"r{index}", "shop" if index % 2 == 0 else "web", "backup",
                        "scheduled", T0 + timedelta(minutes=index))
    catalog.finish_run("r0", "complete", backup_id="b0")
    catalog.finish_run("r1", "failed", "pg_dump: error: connection refused")
    run = catalog.get_run("r1")
    assert run is not None
    assert (run["job"], run["kind"], run["trigger"]) == ("web", "backup", "scheduled")
    assert (run["status"], run["error"]) == ("failed", "pg_dump: error: connection refused")
    assert run["started_at"] == "2026-03-01T02:01:00Z"
    assert parse_iso(run["finished_at"]) is not None
    assert catalog.get_run("r0")["backup_id"] == "b0"  # type: ignore[index]
    assert catalog.get_run("missing") is None

    assert [r["id"] for r in catalog.runs()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r["id"] for r in catalog.runs("shop")] == ["r4", "r2", "r0"]
    assert (catalog.count_runs(), catalog.count_runs("shop"), catalog.count_runs("x")) == (5, 3, 0)
    assert sorted(r["id"] for r in catalog.interrupted_runs()) == ["r2", "r3", "r4"]
    # The last finished run of a kind, never one still running.
    assert catalog.last_run("shop")["id"] == "r0"  # type: ignore[index]
    assert catalog.last_run("web")["id"] == "r1"  # type: ignore[index]
    assert catalog.last_run("shop", "verify") is None


def test_finishing_a_run_twice_keeps_its_backup_id(catalog: Catalog) -> None:
    catalog.add_run("r", "shop", "verify", "manual", T0)
    catalog.finish_run("r", "running", backup_id="b1")
    catalog.finish_run("r", "complete")
    assert catalog.get_run("r")["backup_id"] == "b1"  # type: ignore[index]


def test_runs_are_paged(catalog: Catalog) -> None:
    for index in range(23):
        catalog.add_run(f"r{index:02d}", "shop", "backup", "manual",
                        T0 + timedelta(seconds=index))
    pages = [catalog.runs(limit=10, offset=offset) for offset in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 3, 0]
    ids = [r["id"] for page in pages for r in page]
    assert ids == [f"r{i:02d}" for i in reversed(range(23))]  # no gaps, no repeats
    assert catalog.count_runs() == 23


def test_runs_started_in_the_same_second_keep_insertion_order(catalog: Catalog) -> None:
    for name in ("first", "second", "third"):
        catalog.add_run(name, "shop", "backup", "manual", T0)
    assert [r["id"] for r in catalog.runs()] == ["third", "second", "first"]
    assert [r["id"] for r in catalog.runs(limit=1, offset=1)] == ["second"]


# ------------------------------------------------------------------------------ backups


def test_a_backup_is_stored_updated_and_read_back(catalog: Catalog) -> None:
    bid = backup_id(0)
    catalog.upsert_backup(bid, "shop", "running", "manual", iso(T0) or "", None, 0,
                          {"local": "running"}, None)
    row = catalog.get_backup(bid)
    assert row is not None and row["manifest"] is None and row["targets"] == {"local": "running"}

    catalog.upsert_backup(bid, "shop", "complete", "manual", iso(T0) or "", iso(T0), 30,
                          {"local": "complete"}, manifest(bid), tag="daily", label="keep")
    row = catalog.get_backup(bid)
    assert row is not None
    assert (row["status"], row["size_bytes"], row["tag"], row["label"]) == (
        "complete", 30, "daily", "keep")
    assert row["manifest"] == manifest(bid)
    assert "components" not in row  # the listing summary is not part of a backup's row

    # An update without a manifest keeps the one recorded.
    catalog.upsert_backup(bid, "shop", "partial", "manual", iso(T0) or "", iso(T0), 30,
                          {"local": "complete", "s3": "failed"}, None, error="s3 down")
    row = catalog.get_backup(bid)
    assert row is not None and row["manifest"] == manifest(bid)
    assert (row["status"], row["error"]) == ("partial", "s3 down")
    assert row["targets"] == {"local": "complete", "s3": "failed"}


def test_status_changes_and_forgetting(catalog: Catalog) -> None:
    bid = add_backup(catalog, 0, status="running", with_manifest=False)
    catalog.mark_backup_failed(bid, "timed out")
    row = catalog.get_backup(bid)
    assert row is not None and (row["status"], row["error"]) == ("failed", "timed out")
    finished = row["finished_at"]
    assert finished is not None
    catalog.mark_backup_failed(bid, "again")
    assert catalog.get_backup(bid)["finished_at"] == finished  # type: ignore[index]

    catalog.set_backup_targets(bid, {"local": "deleted"}, "pruned")
    row = catalog.get_backup(bid)
    assert row is not None and (row["status"], row["targets"]) == ("pruned", {"local": "deleted"})
    catalog.set_backup_status(bid, "corrupt", "sha256 differs")
    assert catalog.get_backup(bid)["error"] == "sha256 differs"  # type: ignore[index]
    catalog.forget_backup(bid)
    assert catalog.get_backup(bid) is None


def test_backups_are_filtered_paged_and_counted(catalog: Catalog) -> None:
    ids = [add_backup(catalog, i, job="shop" if i % 3 else "web",
                      status="failed" if i == 4 else "complete",
                      tag="daily" if i % 2 == 0 else None,
                      label="pre-upgrade" if i == 7 else None) for i in range(12)]
    newest_first = list(reversed(ids))
    assert [b["id"] for b in catalog.backups()] == newest_first
    assert catalog.count_backups() == 12
    shop = [b for b in newest_first if int(b[-6:], 16) % 3]
    assert [b["id"] for b in catalog.backups("shop")] == shop
    assert catalog.count_backups("shop") == len(shop) == 8
    assert [b["id"] for b in catalog.backups("shop", status="failed")] == [ids[4]]
    assert catalog.count_backups(status="complete") == 11

    pages = [catalog.backups("shop", limit=3, offset=o) for o in (0, 3, 6, 9)]
    assert [len(p) for p in pages] == [3, 3, 2, 0]
    assert [b["id"] for p in pages for b in p] == shop

    # label matches a schedule tag or a user label
    daily = [b for b in newest_first if int(b[-6:], 16) % 2 == 0]
    assert [b["id"] for b in catalog.backups(label="daily")] == daily
    assert catalog.count_backups(label="daily") == 6
    assert [b["id"] for b in catalog.backups(label="pre-upgrade")] == [ids[7]]
    assert [b["id"] for b in catalog.backups("web", label="daily")] == [
        b for b in daily if int(b[-6:], 16) % 3 == 0]
    assert catalog.backups(label="nope") == [] and catalog.count_backups(label="nope") == 0
    assert catalog.count_backups("shop", "complete", "daily") == len(
        [b for b in daily if int(b[-6:], 16) % 3 and b != ids[4]])


def test_a_label_that_looks_like_sql_is_only_a_value(catalog: Catalog) -> None:
    add_backup(catalog, 0, label="x' OR '1'='1")
    add_backup(catalog, 1, label="other")
    assert len(catalog.backups(label="x' OR '1'='1")) == 1
    assert catalog.count_backups(label="' OR 1=1 --") == 0


def test_the_listing_carries_a_components_summary_not_the_manifest(catalog: Catalog) -> None:
    ids = [add_backup(catalog, i, tag="daily") for i in range(5)]
    failed = add_backup(catalog, 5, status="failed", with_manifest=False)
    page = catalog.backup_listing(limit=2, offset=1)
    assert [row["id"] for row in page] == [ids[4], ids[3]]
    row = page[0]
    assert "manifest" not in row and row["targets"] == {"local": "complete"}
    assert (row["tag"], row["label"], row["size_bytes"]) == ("daily", None, 34)
    summary = json.loads(row["components"])
    assert summary[0]["database"] == {"server_version": "16.4", "database_size": 5000,
                                      "tables": 2, "rows": 7}
    assert summary[1]["files"] == {"file_count": 2, "total_bytes": 200}
    assert "entries" not in json.dumps(summary)
    assert summary[1]["encryption"] is None  # absent in this manifest: shown as null
    [no_manifest] = catalog.backup_listing(status="failed")
    assert no_manifest["id"] == failed and no_manifest["components"] == "[]"
    assert [r["id"] for r in catalog.backup_listing("shop", label="daily", limit=50)] == (
        list(reversed(ids)))


def test_last_complete_backup_and_forgetting_what_storage_lost(catalog: Catalog) -> None:
    ids = [add_backup(catalog, i) for i in range(4)]
    failed = add_backup(catalog, 4, status="failed")
    assert catalog.last_complete_backup("shop")["id"] == ids[3]  # type: ignore[index]
    assert catalog.last_complete_backup("web") is None
    # A rescan found only two manifests: the other complete backups are forgotten, failed
    # runs' rows (history) stay.
    assert catalog.delete_backups_not_in([ids[0], ids[2]]) == 2
    assert sorted(b["id"] for b in catalog.backups()) == sorted([ids[0], ids[2], failed])


# ------------------------------------------------------------------------------ verifications


def test_verifications_newest_first(catalog: Catalog) -> None:
    catalog.add_verification("v1", "b1", "shop", "checksum", T0, True, None, {"objects": 3})
    catalog.add_verification("v2", "b1", "shop", "restore-test", T0, False,
                             "table orders: 3 rows, expected 4", {"tables": {"orders": 3}})
    catalog.add_verification("v3", "b2", "shop", "checksum", T0, True, None, {})
    found = catalog.verifications("b1")
    assert [v["id"] for v in found] == ["v2", "v1"]
    assert found[0]["ok"] is False and found[0]["problem"].startswith("table orders")
    assert found[0]["details"] == {"tables": {"orders": 3}}
    assert found[1]["ok"] is True and found[1]["level"] == "checksum"
    assert catalog.last_verification("b1")["id"] == "v2"  # type: ignore[index]
    assert catalog.last_verification("b9") is None
    # Recording the same run again replaces its result.
    catalog.add_verification("v3", "b2", "shop", "checksum", T0, False, "sha256 differs", {})
    assert [v["ok"] for v in catalog.verifications("b2")] == [False]


def test_last_verifications_of_many_backups(catalog: Catalog) -> None:
    ids = [f"b{i:04d}" for i in range(1203)]  # more than two batches of 500 ids
    catalog.db.execute("BEGIN")
    for index, bid in enumerate(ids):
        if index % 2 == 0:
            catalog.add_verification(f"old-{bid}", bid, "shop", "checksum", T0, False, "x", {})
            catalog.add_verification(f"new-{bid}", bid, "shop", "checksum", T0, True, None, {})
    catalog.db.execute("COMMIT")
    found = catalog.last_verifications(ids)
    assert set(found) == set(ids[::2])
    assert found[ids[1202]]["id"] == f"new-{ids[1202]}" and found[ids[1202]]["ok"] is True
    assert found[ids[500]]["id"] == f"new-{ids[500]}"
    assert catalog.last_verifications([]) == {}


# ------------------------------------------------------------------------------ restores


def test_restores_recorded_finished_paged(catalog: Catalog) -> None:
    for index in range(7):
        catalog.add_restore(f"x{index}", "shop" if index < 5 else "web", f"b{index}", "alice",
                            1000, {"databases": [{"name": "shop", "mode": "replace"}]},
                            T0 + timedelta(minutes=index))
    catalog.finish_restore("x0", "complete", "safety-1", None)
    catalog.finish_restore("x1", "failed", None, "pg_restore: error: out of disk space")
    restores = catalog.restores()
    assert [r["id"] for r in restores] == ["x6", "x5", "x4", "x3", "x2", "x1", "x0"]
    by_id = {r["id"]: r for r in restores}
    assert by_id["x0"]["status"] == "complete" and by_id["x0"]["safety_backup_id"] == "safety-1"
    assert by_id["x1"]["error"] == "pg_restore: error: out of disk space"
    assert by_id["x2"]["status"] == "running" and by_id["x2"]["finished_at"] is None
    assert by_id["x3"]["plan"] == {"databases": [{"name": "shop", "mode": "replace"}]}
    assert (by_id["x3"]["user"], by_id["x3"]["uid"]) == ("alice", 1000)
    assert [r["id"] for r in catalog.restores("shop", limit=2, offset=2)] == ["x2", "x1"]
    assert (catalog.count_restores(), catalog.count_restores("web")) == (7, 2)


# ------------------------------------------------------------------------------ scheduler


def test_schedule_bookkeeping(catalog: Catalog) -> None:
    assert catalog.last_fired("shop", "0 2 * * *") is None
    catalog.set_last_fired("shop", "0 2 * * *", T0)
    catalog.set_last_fired("shop", "0 2 * * *", T0 + timedelta(days=1))
    catalog.set_last_fired("shop", "0 3 * * 0", T0)
    assert catalog.last_fired("shop", "0 2 * * *") == T0 + timedelta(days=1)
    assert catalog.last_fired("shop", "0 3 * * 0") == T0
    assert catalog.last_fired("web", "0 2 * * *") is None


# ------------------------------------------------------------------------------ pauses


def test_pause_resume_and_the_record_they_leave(catalog: Catalog) -> None:
    assert catalog.pause_record("shop") is None and catalog.active_pause("shop", T0) is None
    assert catalog.end_pause("shop", "bob", T0) is None  # nothing to resume

    pause = catalog.set_pause("shop", "alice", "disk swap", None, T0)
    assert (pause["paused_by"], pause["reason"], pause["until"]) == ("alice", "disk swap", None)
    assert pause["paused_at"] == iso(T0)
    assert catalog.active_pause("shop", T0 + timedelta(days=365)) is not None  # no end
    assert catalog.active_pause("web", T0) is None

    later = T0 + timedelta(hours=3)
    ended = catalog.end_pause("shop", "bob", later)
    assert ended is not None and ended["paused_by"] == "alice"
    assert catalog.active_pause("shop", later) is None
    record = catalog.pause_record("shop")  # the window stays known (health checks)
    assert record is not None
    assert (record["until"], record["resumed_by"]) == (iso(later), "bob")
    assert catalog.end_pause("shop", "bob", later) is None  # already resumed

    # Pausing again starts a fresh pause.
    again = catalog.set_pause("shop", "carol", None, None, later + timedelta(hours=1))
    assert (again["paused_by"], again["resumed_by"], again["until"]) == ("carol", None, None)


def test_a_pause_for_a_while_ends_by_itself(catalog: Catalog) -> None:
    until = T0 + timedelta(hours=2)
    catalog.set_pause("shop", "alice", None, until, T0)
    assert catalog.active_pause("shop", until - timedelta(seconds=1)) is not None
    assert catalog.active_pause("shop", until) is None
    assert catalog.end_pause("shop", "bob", until + timedelta(minutes=1)) is None
    assert catalog.pause_record("shop")["resumed_by"] is None  # type: ignore[index]


# ------------------------------------------------------------------------------ migrations


def columns(db_path: Path, table: str) -> set[str]:
    with closing(sqlite3.connect(db_path)) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def tables(db_path: Path) -> set[str]:
    with closing(sqlite3.connect(db_path)) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def user_version(db_path: Path) -> int:
    with closing(sqlite3.connect(db_path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def old_catalog(state: Path, applied: int) -> Path:
    """A catalog as an older kbackupd left it: the original layout plus `applied` migrations."""
    state.mkdir(parents=True)
    path = state / "catalog.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    for steps in MIGRATIONS[:applied]:
        for step in steps:
            db.execute(step)
    db.execute(f"PRAGMA user_version = {applied}")
    db.execute("INSERT INTO runs (id, job, kind, trigger, status, started_at) VALUES"
               " ('r1', 'shop', 'backup', 'scheduled', 'complete', '2026-01-01T02:00:00Z')")
    db.execute("INSERT INTO backups (id, job, status, trigger, started_at, targets, manifest)"
               " VALUES ('20260101T020000Z-aaaaaa', 'shop', 'complete', 'scheduled',"
               " '2026-01-01T02:00:00Z', '{\"local\": \"complete\"}', ?)",
               (json.dumps(manifest("20260101T020000Z-aaaaaa")),))
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("applied", range(SCHEMA_VERSION), ids=lambda n: f"from-version-{n}")
def test_an_older_catalog_is_migrated_and_keeps_its_rows(tmp_path: Path, applied: int) -> None:
    path = old_catalog(tmp_path / "state", applied)
    catalog = Catalog(tmp_path / "state")
    try:
        assert user_version(path) == SCHEMA_VERSION
        assert {"tag", "label", "components"} <= columns(path, "backups")
        assert "job_pauses" in tables(path)
        assert catalog.get_run("r1")["status"] == "complete"  # type: ignore[index]
        row = catalog.get_backup("20260101T020000Z-aaaaaa")
        assert row is not None and (row["tag"], row["label"]) == (None, None)
        assert row["manifest"]["components"][0]["name"] == "shop"
        # A row from before the summary column is summarized when first listed.
        [listed] = catalog.backup_listing()
        assert json.loads(listed["components"])[0]["database"]["rows"] == 7
        # The new columns and tables work.
        add_backup(catalog, 1, tag="daily", label="keep")
        assert [b["id"] for b in catalog.backups(label="keep")] == [backup_id(1)]
        catalog.set_pause("shop", "alice", None, None, T0)
        assert catalog.active_pause("shop", T0) is not None
    finally:
        catalog.close()
    # Opening a current catalog again changes nothing.
    again = Catalog(tmp_path / "state")
    assert user_version(path) == SCHEMA_VERSION
    assert again.count_backups() == 2
    again.close()


def test_a_new_catalog_starts_at_the_current_version(tmp_path: Path) -> None:
    Catalog(tmp_path / "new").close()
    path = tmp_path / "new" / "catalog.sqlite3"
    assert user_version(path) == SCHEMA_VERSION == len(MIGRATIONS)


def test_a_catalog_from_a_newer_kbackupd_is_refused_untouched(tmp_path: Path) -> None:
    Catalog(tmp_path / "state").close()
    path = tmp_path / "state" / "catalog.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.execute("CREATE TABLE from_the_future (x)")
        db.commit()
    with pytest.raises(CatalogError) as caught:
        Catalog(tmp_path / "state")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert (f"catalog schema version {SCHEMA_VERSION + 1} is newer than this kbackupd knows"
            f" ({SCHEMA_VERSION})") in message
    assert user_version(path) == SCHEMA_VERSION + 1
    assert "from_the_future" in tables(path)


def test_a_failing_migration_is_rolled_back_whole(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each migration runs in one transaction: a step that fails leaves none of its
    statements applied and user_version where it was."""
    path = old_catalog(tmp_path / "state", 0)
    broken = [(*MIGRATIONS[0], "ALTER TABLE no_such_table ADD COLUMN x TEXT"), *MIGRATIONS[1:]]
    monkeypatch.setattr(catalog_module, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError):
        Catalog(tmp_path / "state")
    assert user_version(path) == 0
    assert "tag" not in columns(path, "backups")
    monkeypatch.undo()
    catalog = Catalog(tmp_path / "state")
    assert user_version(path) == SCHEMA_VERSION
    catalog.close()


def test_the_listing_sqlite_builds_equals_backup_view(catalog: Catalog) -> None:
    """views.BACKUP_LISTING_SQL is backup_view(row, last verification) built in SQL: held
    equal for verified (ok and failed, twice), unverified, tagged, labelled, failed (no
    manifest, an error with quotes) and pre-column rows (components summarized on the way)."""
    ids = [add_backup(catalog, 0), add_backup(catalog, 1, tag="daily"),
           add_backup(catalog, 2, label="pre-upgrade"),
           add_backup(catalog, 3, status="failed", with_manifest=False),
           add_backup(catalog, 4, job="web")]
    catalog.set_backup_status(ids[3], "failed", 'pg_dump: error: "shop" \\ gone\nline 2')
    catalog.add_verification("v1", ids[0], "shop", "checksum", T0, True, None, {})
    catalog.add_verification("v2", ids[0], "shop", "restore-test", T0, False,
                             "table orders: 3 rows in manifest, 2 restored", {"x": 1})
    catalog.add_verification("v3", ids[1], "shop", "structure", T0, True, None, {})
    catalog.db.execute("UPDATE backups SET components = NULL WHERE id = ?", (ids[2],))
    expected = [backup_view(catalog.get_backup(i) or {}, catalog.last_verification(i))
                for i in reversed(ids)]
    assert json.loads(catalog.backup_listing_json(limit=50)) == expected
    assert json.loads(catalog.backup_listing_json("shop", limit=2, offset=1)) == expected[2:4]
    assert json.loads(catalog.backup_listing_json(label="daily")) == [expected[3]]
    assert json.loads(catalog.backup_listing_json(status="failed")) == [expected[1]]
    assert json.loads(catalog.backup_listing_json(job="nobody")) == []


@pytest.mark.parametrize("failure", ["failing-migration", "newer-catalog"])
def test_a_catalog_that_cannot_be_opened_leaves_no_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """The connection is closed whether the migration fails or the catalog is refused: the
    last connection's close removes the WAL file, and the handle is unusable."""
    path = old_catalog(tmp_path / "state", 0)
    if failure == "newer-catalog":
        with closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        broken = [(*MIGRATIONS[0], "ALTER TABLE no_such_table ADD COLUMN x TEXT")]
        monkeypatch.setattr(catalog_module, "MIGRATIONS", broken)
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(catalog_module.sqlite3, "connect", recording_connect)
    with pytest.raises((sqlite3.OperationalError, CatalogError)):
        Catalog(tmp_path / "state")
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")
    assert not path.with_name("catalog.sqlite3-wal").exists()


def test_the_newest_of_backups_started_in_the_same_second_is_the_higher_id(
        catalog: Catalog) -> None:
    started = iso(T0) or ""
    for suffix in ("bbbbbb", "ffffff", "aaaaaa"):  # inserted out of order
        bid = f"{T0:%Y%m%dT%H%M%SZ}-{suffix}"
        catalog.upsert_backup(bid, "shop", "complete", "manual", started, started, 1,
                              {"local": "complete"}, manifest(bid))
    newest = catalog.last_complete_backup("shop")
    assert newest is not None and newest["id"].endswith("-ffffff")


def test_a_listing_summarizes_only_the_rows_of_its_page(catalog: Catalog) -> None:
    ids = [add_backup(catalog, i) for i in range(5)]
    catalog.db.execute("UPDATE backups SET components = NULL")
    page = json.loads(catalog.backup_listing_json(limit=2, offset=1))
    assert [b["id"] for b in page] == [ids[3], ids[2]]
    assert page[0]["components"][0]["database"]["rows"] == 7
    summarized = {r[0] for r in catalog.db.execute(
        "SELECT id FROM backups WHERE components IS NOT NULL")}
    assert summarized == {ids[3], ids[2]}
    [listed] = catalog.backup_listing(limit=1)
    assert json.loads(listed["components"])[1]["files"]["file_count"] == 2


@pytest.mark.parametrize(("job", "status", "label"), [
    (None, None, None), ("shop", None, None), (None, "complete", None),
    ("shop", "complete", None), (None, None, "daily"), ("shop", "failed", "daily")])
def test_the_listing_query_walks_an_index_without_a_temporary_sort(
        catalog: Catalog, job: str | None, status: str | None, label: str | None) -> None:
    for i in range(30):
        add_backup(catalog, i, job="shop" if i % 3 else "web", tag="daily" if i % 2 else None)
        catalog.add_verification(f"v{i}", backup_id(i), "shop", "checksum", T0, True, None, {})
    catalog.db.execute("ANALYZE")
    query, args = catalog.backup_listing_sql(job, status, label, 10, 5)
    plan = [row[3] for row in catalog.db.execute("EXPLAIN QUERY PLAN " + query, args)]
    assert not [step for step in plan if "TEMP B-TREE" in step], plan
    assert any("USING INDEX backups_" in step for step in plan), plan
    listed = json.loads(catalog.backup_listing_json(job, status, label, 10, 5))
    assert [b["id"] for b in listed] == [b["id"] for b in
                                         catalog.backups(job, status, label, 10, 5)]
