"""Alert state in the catalog's SQLite database, beside runs and backups.

Firing and resolved alerts (with what each channel was told and when), silences, the state of
each alert channel, disk free-space samples for the growth forecast, and when each job and
schedule was first seen. Persisting all of it is what lets a restarted daemon neither forget a
firing alert nor send it again. Also the few history reads health.py needs.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from kbackup.catalog import Catalog
from kbackup.config import Config
from kbackup.health_facts import ChannelState
from kbackup.times import iso, parse_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    job TEXT NOT NULL DEFAULT '',
    check_name TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    next_step TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    resolved_at TEXT,
    resolved_reason TEXT,
    deliveries TEXT NOT NULL DEFAULT '{}',
    last_error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_firing ON alerts(key) WHERE state = 'firing';
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, resolved_at);
CREATE TABLE IF NOT EXISTS alert_silences (
    match TEXT PRIMARY KEY,
    until TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_channels (
    name TEXT PRIMARY KEY,
    last_ok_at TEXT,
    last_error_at TEXT,
    last_error TEXT,
    failing_since TEXT,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS disk_samples (
    path TEXT NOT NULL,
    at TEXT NOT NULL,
    free INTEGER NOT NULL,
    PRIMARY KEY (path, at)
);
CREATE TABLE IF NOT EXISTS health_seen (
    job TEXT NOT NULL,
    item TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (job, item)
);
"""
GOOD = "status IN ('complete', 'partial')"
NOT_ABORTED = "COALESCE({col}, '') NOT LIKE 'aborted: daemon%'"  # a clean stop is no failure
SAMPLE_EVERY = timedelta(minutes=10)
SAMPLES_KEPT = timedelta(days=14)


def _with_targets(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {**dict(row), "targets": json.loads(row["targets"]) if row["targets"] else {}}


def _alert_row(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["details"] = json.loads(item["details"] or "[]")
    item["deliveries"] = json.loads(item["deliveries"] or "{}")
    item["check"] = item.pop("check_name")
    return item


class AlertStore:
    def __init__(self, catalog: Catalog):
        self.db = catalog.db
        self.last_restore_test = catalog.last_restore_test  # health's History
        self.db.executescript(SCHEMA)

    # ------------------------------------------------------------------ alerts

    def firing(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM alerts WHERE state='firing' ORDER BY first_seen")
        return [_alert_row(r) for r in rows]

    def recently_resolved(self, since: datetime) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM alerts WHERE state='resolved' AND resolved_at >= ?"
            " ORDER BY resolved_at DESC, id DESC", (iso(since),))
        return [_alert_row(r) for r in rows]

    def open_alert(self, key: str, job: str | None, check: str, target: str | None,
                   severity: str, reason: str, next_step: str, details: list[str],
                   now: datetime) -> dict[str, Any]:
        self.db.execute(
            "INSERT INTO alerts (key, job, check_name, target, severity, reason, next_step,"
            " details, state, first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,'firing',?,?)",
            (key, job or "", check, target or "", severity, reason, next_step,
             json.dumps(details), iso(now), iso(now)))
        row = self.db.execute("SELECT * FROM alerts WHERE key=? AND state='firing'",
                              (key,)).fetchone()
        return _alert_row(row)

    def touch_alert(self, alert_id: int, severity: str, reason: str, next_step: str,
                    details: list[str], now: datetime) -> None:
        self.db.execute(
            "UPDATE alerts SET severity=?, reason=?, next_step=?, details=?, last_seen=?"
            " WHERE id=?", (severity, reason, next_step, json.dumps(details), iso(now), alert_id))

    def resolve_alert(self, alert_id: int, reason: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE alerts SET state='resolved', resolved_at=?, resolved_reason=? WHERE id=?",
            (iso(now), reason, alert_id))

    def forget_resolved(self, before: datetime) -> None:
        self.db.execute("DELETE FROM alerts WHERE state='resolved' AND resolved_at < ?",
                        (iso(before),))

    def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return _alert_row(row) if row else None

    def set_delivery(self, alert_id: int, channel: str, state: dict[str, Any],
                     error: str | None) -> None:
        """Record what `channel` was told about an alert (read-modify-write, one loop)."""
        alert = self.get_alert(alert_id)
        if alert is None:
            return
        deliveries = alert["deliveries"]
        deliveries[channel] = state
        self.db.execute("UPDATE alerts SET deliveries=?, last_error=COALESCE(?, last_error)"
                        " WHERE id=?", (json.dumps(deliveries), error, alert_id))

    # ------------------------------------------------------------------ silences

    def silences(self, now: datetime) -> list[dict[str, Any]]:
        self.db.execute("DELETE FROM alert_silences WHERE until <= ?", (iso(now),))
        return [dict(r) for r in self.db.execute("SELECT * FROM alert_silences ORDER BY until")]

    def silence(self, match: str, until: datetime, reason: str, by: str, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO alert_silences (match, until, reason, created_by, created_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(match) DO UPDATE SET until=excluded.until,"
            " reason=excluded.reason, created_by=excluded.created_by,"
            " created_at=excluded.created_at", (match, iso(until), reason, by, iso(now)))

    def unsilence(self, match: str) -> bool:
        return self.db.execute("DELETE FROM alert_silences WHERE match=?",
                               (match,)).rowcount > 0

    # ------------------------------------------------------------------ channels

    def channel_states(self) -> dict[str, ChannelState]:
        return {r["name"]: ChannelState(r["name"], r["failures"], parse_iso(r["failing_since"]),
                                        r["last_error"])
                for r in self.db.execute("SELECT * FROM alert_channels")}

    def channel_result(self, name: str, error: str | None, now: datetime) -> None:
        if error is None:
            self.db.execute(
                "INSERT INTO alert_channels (name, last_ok_at, failures) VALUES (?,?,0)"
                " ON CONFLICT(name) DO UPDATE SET last_ok_at=excluded.last_ok_at, failures=0,"
                " failing_since=NULL", (name, iso(now)))
            return
        self.db.execute(
            "INSERT INTO alert_channels (name, last_error_at, last_error, failing_since,"
            " failures) VALUES (?,?,?,?,1) ON CONFLICT(name) DO UPDATE SET"
            " last_error_at=excluded.last_error_at, last_error=excluded.last_error,"
            " failing_since=COALESCE(alert_channels.failing_since, excluded.failing_since),"
            " failures=alert_channels.failures + 1", (name, iso(now), error, iso(now)))

    def channels(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM alert_channels ORDER BY name")]

    # ------------------------------------------------------------------ disks, first seen

    def disk_samples(self, path: str, free: int | None, now: datetime
                     ) -> list[tuple[datetime, int]]:
        """Earlier samples of `path`; keeps one sample per 10 minutes for two weeks."""
        rows = self.db.execute("SELECT at, free FROM disk_samples WHERE path=? ORDER BY at",
                               (path,)).fetchall()
        samples = [(parse_iso(r["at"]), int(r["free"])) for r in rows]
        found = [(at, f) for at, f in samples if at is not None]
        if free is not None and (not found or now - found[-1][0] >= SAMPLE_EVERY):
            self.db.execute("INSERT OR REPLACE INTO disk_samples (path, at, free) VALUES (?,?,?)",
                            (path, iso(now), free))
        self.db.execute("DELETE FROM disk_samples WHERE path=? AND at < ?",
                        (path, iso(now - SAMPLES_KEPT)))
        return found

    def seen_since(self, config: Config, now: datetime) -> dict[tuple[str, str], datetime]:
        """When each job, target of a job and schedule was first seen (recorded on first call)."""
        wanted = []
        for job in config.jobs.values():
            wanted.append((job.name, "job"))
            wanted += [(job.name, f"target:{t}") for t in job.targets]
            wanted += [(job.name, f"schedule:{s.tag}:{s.cron}") for s in job.schedules]
        self.db.executemany("INSERT OR IGNORE INTO health_seen (job, item, first_seen)"
                            " VALUES (?,?,?)", [(j, i, iso(now)) for j, i in wanted])
        seen = {}
        for row in self.db.execute("SELECT * FROM health_seen"):
            when = parse_iso(row["first_seen"])
            if when is not None:
                seen[(row["job"], row["item"])] = when
        return seen

    # ------------------------------------------------------------------ history (health.History)

    def last_good_backup(self, job: str, target: str | None = None) -> dict[str, Any] | None:
        query = f"SELECT id, status, finished_at, targets FROM backups WHERE job=? AND {GOOD}"
        args: tuple[Any, ...] = (job,)
        if target is not None:
            query += " AND json_extract(targets, '$.\"' || ? || '\"') = 'complete'"
            args += (target,)
        row = self.db.execute(query + " ORDER BY started_at DESC LIMIT 1", args).fetchone()
        return _with_targets(row)

    def oldest_good_backup(self, job: str) -> dict[str, Any] | None:
        row = self.db.execute(
            f"SELECT id, status, finished_at, targets FROM backups WHERE job=? AND {GOOD}"
            " ORDER BY started_at LIMIT 1", (job,)).fetchone()
        return _with_targets(row)

    def last_backup_runs(self, job: str, limit: int) -> list[dict[str, Any]]:
        """The newest finished backup runs, newest first, with the status and targets of the
        backup each wrote (None: none recorded); runs a daemon stop aborted are left out."""
        rows = self.db.execute(
            "SELECT r.id, r.status, r.started_at, r.finished_at, r.error,"
            " b.status AS backup_status, b.targets AS backup_targets"
            " FROM runs r LEFT JOIN backups b ON b.id = r.id"
            " WHERE r.job=? AND r.kind='backup' AND r.status != 'running'"
            f" AND {NOT_ABORTED.format(col='r.error')}"
            " ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?", (job, limit))
        return [{**dict(r), "backup_targets": json.loads(r["backup_targets"])
                 if r["backup_targets"] else {}} for r in rows]

    def good_backups(self, job: str, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            f"SELECT id, started_at, finished_at, manifest FROM backups WHERE job=? AND {GOOD}"
            " ORDER BY started_at DESC LIMIT ?", (job, limit))
        return [{**dict(r), "manifest": json.loads(r["manifest"]) if r["manifest"] else None}
                for r in rows]

    def backup_runs_since(self, job: str, since: datetime) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, status, started_at, finished_at, error FROM runs WHERE job=?"
            " AND kind='backup' AND started_at >= ? ORDER BY started_at", (job, iso(since)))
        return [dict(r) for r in rows]

    def last_finished_backup_run(self, job: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM runs WHERE job=? AND kind='backup' AND status != 'running'"
            " ORDER BY started_at DESC, rowid DESC LIMIT 1", (job,)).fetchone()
        return dict(row) if row else None

    def run_covers(self, job: str, when: datetime) -> bool:
        """A backup run started at or after `when`, or was running then (the trigger joined it)."""
        at = iso(when)
        row = self.db.execute(
            "SELECT 1 FROM runs WHERE job=? AND kind='backup' AND (started_at >= ?"
            " OR status='running' OR finished_at >= ?) LIMIT 1", (job, at, at)).fetchone()
        return row is not None

    def last_job_verification(self, job: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM verifications WHERE job=? ORDER BY finished_at DESC, rowid DESC"
            " LIMIT 1", (job,)).fetchone()
        return {**dict(row), "ok": bool(row["ok"])} if row else None

    def recent_errors(self, job: str, limit: int = 3) -> list[str]:
        rows = self.db.execute(
            "SELECT id, kind, started_at, error FROM runs WHERE job=? AND status='failed'"
            " ORDER BY started_at DESC, rowid DESC LIMIT ?", (job, limit))
        return [f"{r['started_at']} {r['kind']} {r['id']}: {r['error']}" for r in rows]

    def job_pause(self, job: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM job_pauses WHERE job=?", (job,)).fetchone()
        return dict(row) if row else None

    # ------------------------------------------------------------------ notifications, metrics

    def previous_backup_status(self, job: str, run_id: str) -> str | None:
        """The status of the backup run before `run_id` (clean daemon stops do not count)."""
        row = self.db.execute(
            "SELECT status FROM runs WHERE job=? AND kind='backup' AND status != 'running'"
            " AND id != ? AND COALESCE(error, '') NOT LIKE 'aborted: daemon%'"
            " ORDER BY started_at DESC, rowid DESC LIMIT 1", (job, run_id)).fetchone()
        return row["status"] if row else None

    def backup_summary(self, backup_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT size_bytes, started_at, finished_at FROM backups"
                              " WHERE id=?", (backup_id,)).fetchone()
        return dict(row) if row else None

    def run_counts(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT job, kind, status, count(*) AS n FROM runs"
                               " WHERE status != 'running' GROUP BY job, kind, status")
        return [dict(r) for r in rows]
