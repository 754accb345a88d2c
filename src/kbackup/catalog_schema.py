"""The catalog's SQLite layout: SCHEMA, the original tables (version 0), and MIGRATIONS, the
ordered steps after it (`PRAGMA user_version` counts those applied). Kept apart from the
queries in catalog.py so that a schema change is one reviewable place (stdlib only)."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    backup_id TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    targets TEXT NOT NULL DEFAULT '{}',
    manifest TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS backups_job ON backups(job, started_at);
CREATE INDEX IF NOT EXISTS backups_started ON backups(started_at);
CREATE INDEX IF NOT EXISTS backups_job_status ON backups(job, status, started_at);
CREATE INDEX IF NOT EXISTS backups_status ON backups(status, started_at);
CREATE TABLE IF NOT EXISTS verifications (
    id TEXT PRIMARY KEY,
    backup_id TEXT NOT NULL,
    job TEXT NOT NULL,
    level TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    problem TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS verifications_backup ON verifications(backup_id, finished_at);
CREATE TABLE IF NOT EXISTS restores (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    plan TEXT NOT NULL,
    safety_backup_id TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS restores_job ON restores(job, started_at);
CREATE INDEX IF NOT EXISTS restores_started ON restores(started_at);
CREATE TABLE IF NOT EXISTS schedule_state (
    job TEXT NOT NULL,
    schedule TEXT NOT NULL,
    last_fired_at TEXT NOT NULL,
    PRIMARY KEY (job, schedule)
);
"""

# Ordered: MIGRATIONS[i] takes a catalog from user_version i to i + 1. Only append.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: backup tags and labels (issue 13), paused jobs
        "ALTER TABLE backups ADD COLUMN tag TEXT",
        "ALTER TABLE backups ADD COLUMN label TEXT",
        "CREATE INDEX IF NOT EXISTS backups_tag ON backups(job, tag)",
        "CREATE TABLE IF NOT EXISTS job_pauses (job TEXT PRIMARY KEY, paused_at TEXT NOT NULL,"
        " paused_by TEXT NOT NULL, reason TEXT, until TEXT, resumed_by TEXT)",
    ),
    (  # 2: a summary of each backup's components, so listings need not decode manifests
        "ALTER TABLE backups ADD COLUMN components TEXT",
    ),
    (  # 3: a passed restore-test's duration, the measured time to recover (issue 16)
        "ALTER TABLE verifications ADD COLUMN restore_seconds REAL",
    ),
    ("ALTER TABLE runs ADD COLUMN hooks TEXT",),  # 4: hook results, JSON (kbackup.hooks)
    (  # 5: signed manifests (kbackup.signing): "trusted", "untrusted" (why), NULL unchecked
        "ALTER TABLE backups ADD COLUMN trust TEXT",
        "ALTER TABLE backups ADD COLUMN trust_reason TEXT",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)
