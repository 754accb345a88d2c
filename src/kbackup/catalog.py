"""The daemon's memory: runs, backups and scheduler state in SQLite under state_dir.

The storage is the source of truth for what backups exist (manifests); the catalog is a fast
index over it plus the history that storage cannot hold (failed runs, schedule bookkeeping).
`rescan` rebuilds the backup index from the manifests, so a new server sees old backups.

Schema versions (catalog_schema.py): SCHEMA is the original layout (version 0); MIGRATIONS
are applied in order at open, each in its own transaction, and `PRAGMA user_version` records
how many have run. A catalog written by a newer kbackupd (a higher user_version) is refused,
never guessed at.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from kbackup.catalog_schema import MIGRATIONS as MIGRATIONS
from kbackup.catalog_schema import SCHEMA as SCHEMA
from kbackup.catalog_schema import SCHEMA_VERSION as SCHEMA_VERSION
from kbackup.errors import CatalogError as CatalogError
from kbackup.times import iso, parse_iso, utcnow
from kbackup.views import BACKUP_LISTING_SQL, component_view

log = logging.getLogger("kbackup.catalog")


def _components(manifest: dict[str, Any] | None) -> str | None:
    """What a listing shows of a manifest's components, as JSON (None without a manifest)."""
    if manifest is None:
        return None
    return json.dumps([component_view(c) for c in manifest.get("components", [])])


def _where(table: str = "", **equal: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause matching each given (non-None) column of `table` (an alias, or "");
    the names are ours, never input."""
    given = {name: value for name, value in equal.items() if value is not None}
    if not given:
        return "", []
    prefix = f"{table}." if table else ""
    return (" WHERE " + " AND ".join(f"{prefix}{name}=?" for name in given),
            list(given.values()))


def _backup_filter(job: str | None, status: str | None, label: str | None,
                   table: str = "") -> tuple[str, list[Any]]:
    """_where for backups, plus `label`: a schedule tag or a user label."""
    where, args = _where(table, job=job, status=status)
    if label is None:
        return where, args
    prefix = f"{table}." if table else ""
    return (where + (" AND" if where else " WHERE") + f" ({prefix}tag=? OR {prefix}label=?)",
            [*args, label, label])


# Newest first, in the order of the started_at indexes (rowid included): no sort.
NEWEST_FIRST = " ORDER BY started_at DESC, rowid DESC"


class Catalog:
    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "catalog.sqlite3"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            self.migrate()
        except BaseException:  # refused or failed: no connection left open on the file
            self.db.close()
            raise

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION; refuse a catalog from a newer kbackupd."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"{self.path}: catalog schema version {version} is newer than this kbackupd"
                f" knows ({SCHEMA_VERSION}): it was written by a newer kbackupd; upgrade, or"
                " move the file away and run `kbackupctl catalog rescan`")
        self.db.executescript(SCHEMA)
        for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for step in steps:
                    self.db.execute(step)
                self.db.execute(f"PRAGMA user_version = {number:d}")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            log.info("event=catalog.migrated path=%s version=%d", self.path, number)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ runs

    def add_run(self, run_id: str, job: str, kind: str, trigger: str, started_at: datetime) -> None:
        self.db.execute(
            "INSERT INTO runs (id, job, kind, trigger, status, started_at) VALUES (?,?,?,?,?,?)",
            (run_id, job, kind, trigger, "running", iso(started_at)),
        )

    def finish_run(
        self, run_id: str, status: str, error: str | None = None, backup_id: str | None = None
    ) -> None:
        self.db.execute(
            "UPDATE runs SET status=?, error=?, finished_at=?, backup_id=COALESCE(?, backup_id)"
            " WHERE id=?",
            (status, error, iso(utcnow()), backup_id, run_id),
        )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, job: str | None = None, limit: int = 50,
             offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; one page of `limit` after `offset`."""
        where, args = _where(job=job)
        query = f"SELECT * FROM runs{where}{NEWEST_FIRST} LIMIT ? OFFSET ?"
        return [dict(r) for r in self.db.execute(query, (*args, limit, offset))]

    def count_runs(self, job: str | None = None) -> int:
        where, args = _where(job=job)
        return int(self.db.execute(f"SELECT count(*) FROM runs{where}", args).fetchone()[0])

    def last_run(self, job: str, kind: str = "backup") -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM runs WHERE job=? AND kind=? AND status != 'running'"
            " ORDER BY started_at DESC, rowid DESC LIMIT 1",
            (job, kind),
        ).fetchone()
        return dict(row) if row else None

    def interrupted_runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs WHERE status='running'")]

    # ------------------------------------------------------------------ backups

    def upsert_backup(
        self,
        backup_id: str,
        job: str,
        status: str,
        trigger: str,
        started_at: str,
        finished_at: str | None,
        size_bytes: int,
        targets: dict[str, Any],
        manifest: dict[str, Any] | None,
        error: str | None = None,
        tag: str | None = None,
        label: str | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO backups (id, job, status, trigger, started_at, finished_at, size_bytes,"
            " targets, manifest, error, tag, label, components)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET job=excluded.job, status=excluded.status,"
            " trigger=excluded.trigger, started_at=excluded.started_at,"
            " finished_at=excluded.finished_at, size_bytes=excluded.size_bytes,"
            " targets=excluded.targets, manifest=COALESCE(excluded.manifest, backups.manifest),"
            " error=excluded.error, tag=excluded.tag, label=excluded.label,"
            " components=COALESCE(excluded.components, backups.components)",
            (
                backup_id,
                job,
                status,
                trigger,
                started_at,
                finished_at,
                size_bytes,
                json.dumps(targets),
                json.dumps(manifest) if manifest is not None else None,
                error,
                tag,
                label,
                _components(manifest),
            ),
        )

    def set_backup_trust(self, backup_id: str, trust: str, reason: str | None) -> None:
        """Whether the backup's manifest is signed by a trusted key (kbackup.signing)."""
        self.db.execute("UPDATE backups SET trust=?, trust_reason=? WHERE id=?",
                        (trust, reason, backup_id))

    def mark_backup_failed(self, backup_id: str, error: str) -> None:
        self.db.execute(
            "UPDATE backups SET status='failed', error=?, finished_at=COALESCE(finished_at, ?)"
            " WHERE id=?",
            (error, iso(utcnow()), backup_id),
        )

    @staticmethod
    def _backup_row(row: sqlite3.Row) -> dict[str, Any]:
        item = dict(row)
        item["targets"] = json.loads(item["targets"] or "{}")
        item["manifest"] = json.loads(item["manifest"]) if item["manifest"] else None
        item.pop("components", None)
        return item

    def get_backup(self, backup_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM backups WHERE id=?", (backup_id,)).fetchone()
        return self._backup_row(row) if row else None

    def backups(self, job: str | None = None, status: str | None = None,
                label: str | None = None, limit: int | None = None,
                offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; all of them, or one page of `limit` after `offset`; `label` matches a
        schedule tag or a user label."""
        where, args = _backup_filter(job, status, label)
        query = f"SELECT * FROM backups{where}{NEWEST_FIRST}"
        if limit is not None:
            query += " LIMIT ? OFFSET ?"
            args = [*args, limit, offset]
        return [self._backup_row(r) for r in self.db.execute(query, args)]

    def backup_listing(self, job: str | None = None, status: str | None = None,
                       label: str | None = None, limit: int = 50,
                       offset: int = 0) -> list[dict[str, Any]]:
        """One page of backups, newest first, with the summary of their components
        (views.component_view) as stored JSON text instead of the manifest, 10-100x larger."""
        self._summarize_page(job, status, label, limit, offset)
        where, args = _backup_filter(job, status, label)
        rows = self.db.execute(
            "SELECT id, job, status, trigger, started_at, finished_at, size_bytes, targets,"
            f" error, tag, label, coalesce(components, '[]') AS components FROM backups{where}"
            f"{NEWEST_FIRST} LIMIT ? OFFSET ?", [*args, limit, offset])
        return [{**dict(row), "targets": json.loads(row["targets"] or "{}")} for row in rows]

    def backup_listing_json(self, job: str | None = None, status: str | None = None,
                            label: str | None = None, limit: int = 50, offset: int = 0) -> str:
        """One page of backups as the JSON array of their views (views.BACKUP_LISTING_SQL),
        newest first, each with its last verification: built by SQLite in one query."""
        self._summarize_page(job, status, label, limit, offset)
        return "[" + ", ".join(row[0] for row in self.db.execute(
            *self.backup_listing_sql(job, status, label, limit, offset))) + "]"

    @staticmethod
    def backup_listing_sql(job: str | None, status: str | None, label: str | None,
                           limit: int, offset: int) -> tuple[str, list[Any]]:
        """The listing query: walks a started_at index newest first, joins each backup's
        last verification by its index, and stops after the page (no temporary sort)."""
        where, args = _backup_filter(job, status, label, "b")
        return (f"SELECT {BACKUP_LISTING_SQL} FROM backups AS b"
                " LEFT JOIN verifications AS v ON v.rowid = (SELECT rowid FROM verifications"
                " WHERE backup_id = b.id ORDER BY finished_at DESC, rowid DESC LIMIT 1)"
                f"{where} ORDER BY b.started_at DESC, b.rowid DESC LIMIT ? OFFSET ?",
                [*args, limit, offset])

    def _summarize_page(self, job: str | None, status: str | None, label: str | None,
                        limit: int, offset: int) -> None:
        """Fill the components summary of this page's rows recorded before the column
        existed (only theirs: a listing never walks the whole table)."""
        where, args = _backup_filter(job, status, label)
        missing = self.db.execute(
            "SELECT id, manifest FROM backups WHERE rowid IN (SELECT rowid FROM"
            f" backups{where}{NEWEST_FIRST} LIMIT ? OFFSET ?)"
            " AND components IS NULL AND manifest IS NOT NULL", [*args, limit, offset])
        for row in missing.fetchall():
            self.db.execute("UPDATE backups SET components=? WHERE id=?",
                            (_components(json.loads(row["manifest"])), row["id"]))

    def count_backups(self, job: str | None = None, status: str | None = None,
                      label: str | None = None) -> int:
        where, args = _backup_filter(job, status, label)
        return int(self.db.execute(f"SELECT count(*) FROM backups{where}", args).fetchone()[0])

    def last_complete_backup(self, job: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM backups WHERE job=? AND status='complete'"
            " ORDER BY started_at DESC, id DESC LIMIT 1",  # same time: the higher id
            (job,),
        ).fetchone()
        return self._backup_row(row) if row else None

    def job_history(self, job: str, since: datetime) -> list[dict[str, Any]]:
        """The job's backups started since `since`, oldest first, without their manifests,
        with their durations in seconds: what the dashboard draws (size and duration)."""
        rows = self.db.execute(
            "SELECT id, status, trigger, started_at, finished_at, size_bytes,"
            " (julianday(finished_at) - julianday(started_at)) * 86400 AS seconds FROM backups"
            " WHERE job=? AND started_at >= ? ORDER BY started_at, rowid", (job, iso(since)))
        return [dict(r) for r in rows]

    def restore_tests(self, job: str, since: datetime) -> list[dict[str, Any]]:
        """The job's passed restore-tests finished since `since` with their durations, oldest
        first."""
        rows = self.db.execute(
            "SELECT backup_id, finished_at, restore_seconds FROM verifications WHERE job=?"
            " AND restore_seconds IS NOT NULL AND finished_at >= ? ORDER BY finished_at",
            (job, iso(since)))
        return [dict(r) for r in rows]

    def delete_backups_not_in(self, keep_ids: Iterable[str]) -> int:
        """Forget complete backups whose manifests are gone from storage (after a rescan)."""
        keep = set(keep_ids)
        gone = [
            r["id"]
            for r in self.db.execute("SELECT id FROM backups WHERE status='complete'")
            if r["id"] not in keep
        ]
        self.db.executemany("DELETE FROM backups WHERE id=?", [(i,) for i in gone])
        return len(gone)

    def set_backup_targets(self, backup_id: str, targets: dict[str, Any], status: str) -> None:
        self.db.execute("UPDATE backups SET targets=?, status=? WHERE id=?",
                        (json.dumps(targets), status, backup_id))

    def set_backup_status(self, backup_id: str, status: str, error: str | None) -> None:
        self.db.execute("UPDATE backups SET status=?, error=? WHERE id=?",
                        (status, error, backup_id))

    def forget_backup(self, backup_id: str) -> None:
        """Drop a backup that no target holds any more (deleted); its history stays."""
        self.db.execute("DELETE FROM backups WHERE id=?", (backup_id,))

    # ------------------------------------------------------------------ verifications

    def add_verification(self, run_id: str, backup_id: str, job: str, level: str,
                         started_at: datetime, ok: bool, problem: str | None,
                         details: dict[str, Any], restore_seconds: float | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO verifications (id, backup_id, job, level, started_at,"
            " finished_at, ok, problem, details, restore_seconds) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, backup_id, job, level, iso(started_at), iso(utcnow()), int(ok), problem,
             json.dumps(details), restore_seconds),
        )

    def last_restore_test(self, job: str) -> dict[str, Any] | None:
        """The newest passed restore-test of the job with its duration (the measured time to
        recover), or None."""
        row = self.db.execute(
            "SELECT backup_id, finished_at, restore_seconds FROM verifications WHERE job=?"
            " AND restore_seconds IS NOT NULL ORDER BY finished_at DESC, rowid DESC LIMIT 1",
            (job,)).fetchone()
        return dict(row) if row else None

    def verifications(self, backup_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM verifications WHERE backup_id=? ORDER BY finished_at DESC, rowid DESC",
            (backup_id,))
        return [{**dict(r), "ok": bool(r["ok"]), "details": json.loads(r["details"])}
                for r in rows]

    def last_verification(self, backup_id: str) -> dict[str, Any] | None:
        found = self.verifications(backup_id)
        return found[0] if found else None

    def last_verifications(self, backup_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The newest verification of each of these backups (those verified at all), in one
        query per 500 ids rather than one per backup."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(backup_ids), 500):
            chunk = backup_ids[start:start + 500]
            rows = self.db.execute(
                "SELECT * FROM verifications WHERE backup_id IN"
                f" ({','.join('?' * len(chunk))}) ORDER BY finished_at DESC, rowid DESC", chunk)
            for r in rows:
                if r["backup_id"] not in found:
                    found[r["backup_id"]] = {**dict(r), "ok": bool(r["ok"]),
                                             "details": json.loads(r["details"])}
        return found

    # ------------------------------------------------------------------ restores

    def add_restore(self, restore_id: str, job: str, backup_id: str, user: str, uid: int,
                    plan: dict[str, Any], started_at: datetime) -> None:
        self.db.execute(
            "INSERT INTO restores (id, job, backup_id, started_at, status, user, uid, plan)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (restore_id, job, backup_id, iso(started_at), "running", user, uid,
             json.dumps(plan)),
        )

    def finish_restore(self, restore_id: str, status: str, safety_backup_id: str | None,
                       error: str | None) -> None:
        self.db.execute(
            "UPDATE restores SET status=?, safety_backup_id=?, error=?, finished_at=?"
            " WHERE id=?",
            (status, safety_backup_id, error, iso(utcnow()), restore_id),
        )

    def restores(self, job: str | None = None, limit: int = 50,
                 offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; one page of `limit` after `offset`."""
        where, args = _where(job=job)
        query = (f"SELECT * FROM restores{where} ORDER BY started_at DESC, rowid DESC"
                 " LIMIT ? OFFSET ?")
        rows = self.db.execute(query, (*args, limit, offset))
        return [{**dict(r), "plan": json.loads(r["plan"])} for r in rows]

    def count_restores(self, job: str | None = None) -> int:
        where, args = _where(job=job)
        return int(self.db.execute(f"SELECT count(*) FROM restores{where}", args).fetchone()[0])

    # ------------------------------------------------------------------ scheduler

    def last_fired(self, job: str, schedule: str) -> datetime | None:
        row = self.db.execute(
            "SELECT last_fired_at FROM schedule_state WHERE job=? AND schedule=?", (job, schedule)
        ).fetchone()
        return parse_iso(row["last_fired_at"]) if row else None

    def set_last_fired(self, job: str, schedule: str, when: datetime) -> None:
        self.db.execute(
            "INSERT INTO schedule_state (job, schedule, last_fired_at) VALUES (?,?,?)"
            " ON CONFLICT(job, schedule) DO UPDATE SET last_fired_at=excluded.last_fired_at",
            (job, schedule, iso(when)),
        )

    # ------------------------------------------------------------------ paused jobs

    def pause_record(self, job: str) -> dict[str, Any] | None:
        """The job's last pause, active or not (its window explains skipped schedules)."""
        row = self.db.execute("SELECT * FROM job_pauses WHERE job=?", (job,)).fetchone()
        return dict(row) if row else None

    def active_pause(self, job: str, now: datetime) -> dict[str, Any] | None:
        """The job's pause if it is in force at `now` (a --for pause expires by itself)."""
        pause = self.pause_record(job)
        if pause is None:
            return None
        until = parse_iso(pause["until"])
        return pause if until is None or until > now else None

    def set_pause(self, job: str, by: str, reason: str | None, until: datetime | None,
                  now: datetime) -> dict[str, Any]:
        self.db.execute(
            "INSERT INTO job_pauses (job, paused_at, paused_by, reason, until, resumed_by)"
            " VALUES (?,?,?,?,?,NULL) ON CONFLICT(job) DO UPDATE SET"
            " paused_at=excluded.paused_at, paused_by=excluded.paused_by,"
            " reason=excluded.reason, until=excluded.until, resumed_by=NULL",
            (job, iso(now), by, reason, iso(until)))
        record = self.pause_record(job)
        assert record is not None
        return record

    def end_pause(self, job: str, by: str, now: datetime) -> dict[str, Any] | None:
        """Resume: the pause ends now (kept as a record); None if it was not in force."""
        pause = self.active_pause(job, now)
        if pause is None:
            return None
        self.db.execute("UPDATE job_pauses SET until=?, resumed_by=? WHERE job=?",
                        (iso(now), by, job))
        return pause
