"""A Report of a time window, from the catalog and the firing alerts: what `GET /v1/report`
answers, what `kbackupctl report` and the digests (alerts/digest.py) say.

Counts are of the window (runs started in it, verifications finished in it); the newest size,
the last good backup and the last restore-test are the newest known, whenever they were; the
trend compares the newest good backup with the last good one before the window (or the first
in it). Storage per target is what the catalog holds: the stored size of every backup whose
copy on that target is complete (the storage itself is not listed).
"""

from __future__ import annotations

import math
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from kbackup.times import iso, parse_iso

if TYPE_CHECKING:
    from kbackup.catalog import Catalog
    from kbackup.config import Config

MAX_POINTS = 60  # sparkline points: one per day up to 60 days, wider beyond
GOOD = "status IN ('complete', 'partial')"
NOT_ABORTED = "COALESCE({col}, '') NOT LIKE 'aborted: daemon%'"  # a clean stop is no failure


@dataclass
class JobReport:
    job: str
    made: int = 0  # backup runs that completed
    partial: int = 0
    failed: int = 0
    verified_ok: int = 0
    verified_failed: int = 0
    size_bytes: int | None = None  # the newest good backup's stored size
    trend_percent: float | None = None  # against the last good one before the window
    sizes: list[int | None] = field(default_factory=list)  # per point: the day's last size
    last_good_at: str | None = None
    last_good_age_seconds: float | None = None
    restore_seconds: float | None = None  # the last passed restore-test: time to recover
    restore_tested_at: str | None = None


@dataclass
class TargetReport:
    target: str
    type: str
    backups: int = 0
    stored_bytes: int = 0


@dataclass
class AlertReport:
    key: str
    job: str | None
    severity: str
    reason: str
    since: str | None


@dataclass
class Report:
    host: str
    since: str
    until: str
    point_seconds: float  # how much time one sparkline point covers
    jobs: list[JobReport]
    targets: list[TargetReport]
    alerts: list[AlertReport]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(config: Config, catalog: Catalog, firing: list[dict[str, Any]],
                 since: datetime, until: datetime) -> Report:
    """The report of [since, until]; `firing` is the alert store's firing alerts."""
    points = max(1, min(MAX_POINTS, math.ceil((until - since).total_seconds() / 86400)))
    step = (until - since) / points
    return Report(
        host=socket.gethostname(), since=iso(since) or "", until=iso(until) or "",
        point_seconds=step.total_seconds(),
        jobs=[job_report(catalog, name, since, until, step, points)
              for name in sorted(config.jobs)],
        targets=target_reports(config, catalog),
        alerts=[AlertReport(a["key"], a.get("job") or None, a["severity"], a["reason"],
                            a.get("first_seen")) for a in firing])


def job_report(catalog: Catalog, job: str, since: datetime, until: datetime,
               step: timedelta, points: int) -> JobReport:
    db, window = catalog.db, (job, iso(since), iso(until))
    found = JobReport(job)
    for row in db.execute(  # a partial backup's run failed: it counts as partial
            "SELECT r.status AS run, b.status AS backup FROM runs r LEFT JOIN backups b"
            " ON b.id = r.id WHERE r.job=? AND r.kind='backup' AND r.started_at >= ?"
            f" AND r.started_at <= ? AND {NOT_ABORTED.format(col='r.error')}", window):
        if row["backup"] == "partial":
            found.partial += 1
        elif row["run"] == "complete":
            found.made += 1
        elif row["run"] == "failed":
            found.failed += 1
    for row in db.execute(
            "SELECT ok, count(*) AS n FROM verifications WHERE job=? AND finished_at >= ?"
            " AND finished_at <= ? GROUP BY ok", window):
        setattr(found, "verified_ok" if row["ok"] else "verified_failed", row["n"])
    newest = db.execute(
        f"SELECT size_bytes, finished_at FROM backups WHERE job=? AND {GOOD}"
        " AND started_at <= ? ORDER BY started_at DESC, rowid DESC LIMIT 1",
        (job, iso(until))).fetchone()
    if newest is not None:
        found.size_bytes = newest["size_bytes"]
        found.last_good_at = newest["finished_at"]
        finished = parse_iso(newest["finished_at"])
        found.last_good_age_seconds = (until - finished).total_seconds() if finished else None
        found.trend_percent = _trend(catalog, job, since, until, newest["size_bytes"])
    found.sizes = _sizes(catalog, job, since, step, points)
    tested = catalog.last_restore_test(job)
    if tested is not None:
        found.restore_seconds = tested["restore_seconds"]
        found.restore_tested_at = tested["finished_at"]
    return found


def _trend(catalog: Catalog, job: str, since: datetime, until: datetime,
           newest: int) -> float | None:
    """The newest size against the last good backup before the window (or the first in it)
    in percent; None without two backups to compare."""
    before = catalog.db.execute(
        f"SELECT size_bytes FROM backups WHERE job=? AND {GOOD} AND started_at < ?"
        " ORDER BY started_at DESC, rowid DESC LIMIT 1", (job, iso(since))).fetchone()
    if before is None:
        rows = catalog.db.execute(
            f"SELECT size_bytes FROM backups WHERE job=? AND {GOOD} AND started_at >= ?"
            " AND started_at <= ? ORDER BY started_at, rowid LIMIT 2",
            (job, iso(since), iso(until))).fetchall()
        before = rows[0] if len(rows) == 2 else None
    if before is None or not before["size_bytes"]:
        return None
    return round((newest - before["size_bytes"]) * 100.0 / before["size_bytes"], 1)


def _sizes(catalog: Catalog, job: str, since: datetime, step: timedelta,
           points: int) -> list[int | None]:
    """The size of the last good backup started in each point's time (None: none then)."""
    sizes: list[int | None] = [None] * points
    rows = catalog.db.execute(
        f"SELECT started_at, size_bytes FROM backups WHERE job=? AND {GOOD}"
        " AND started_at >= ? AND started_at <= ? ORDER BY started_at, rowid",
        (job, iso(since), iso(since + step * points)))
    for row in rows:
        started = parse_iso(row["started_at"])
        if started is not None:
            index = min(points - 1, int((started - since) / step))
            sizes[index] = row["size_bytes"]
    return sizes


def target_reports(config: Config, catalog: Catalog) -> list[TargetReport]:
    """Per configured target: the good backups whose copy there is complete, and their bytes."""
    found = {name: TargetReport(name, cfg.type) for name, cfg in sorted(config.storage.items())}
    for row in catalog.db.execute(
            "SELECT t.key AS target, count(*) AS n, coalesce(sum(b.size_bytes), 0) AS bytes"
            " FROM backups AS b, json_each(b.targets) AS t"
            f" WHERE b.{GOOD} AND t.value = 'complete' GROUP BY t.key"):
        if row["target"] in found:
            found[row["target"]].backups = row["n"]
            found[row["target"]].stored_bytes = row["bytes"]
    return list(found.values())
