PRAGMA user_version = 2;
BEGIN TRANSACTION;
CREATE TABLE alert_channels (
    name TEXT PRIMARY KEY,
    last_ok_at TEXT,
    last_error_at TEXT,
    last_error TEXT,
    failing_since TEXT,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE alert_silences (
    match TEXT PRIMARY KEY,
    until TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE alerts (
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
CREATE TABLE backups (
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
, tag TEXT, label TEXT, components TEXT);
INSERT INTO "backups" VALUES('20261203T103502Z-32fabb','shop','complete','manual','2026-12-03T10:35:02Z','2026-12-03T10:35:03Z',293177,'{"local": "complete"}','{"format": 1, "id": "20261203T103502Z-32fabb", "job": "shop", "trigger": "manual", "tag": null, "label": "before-upgrade", "host": "vm", "kbackup_version": "0.1.0", "started_at": "2026-12-03T10:35:02Z", "finished_at": "2026-12-03T10:35:03Z", "components": [{"name": "shop", "kind": "postgres", "file": "db-shop.dump.zst", "size_bytes": 71051, "sha256": "400930ab6e5c19257200e7c5231dda0277a599a6a81e89282efb03f13e2156d8", "raw_bytes": 195384, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": {"database": "shop", "server_version": "15.20 (Debian 15.20-0+deb12u1)", "server_version_num": 150020, "database_size": 8281447, "row_counts": {"public.Line Items": 3000, "public.customers": 50, "public.invoices": 2000}, "format": "pg_dump custom (-Fc -Z0)"}, "files": null, "index": null}, {"name": "shop.globals", "kind": "globals", "file": "globals-shop.sql.zst", "size_bytes": 365, "sha256": "4f12dc42e428ab57a13a3cf073f9d7177938e60fada26a9f9456c0d416ed4ba5", "raw_bytes": 640, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": null, "files": null, "index": null}, {"name": "pdfs", "kind": "files", "file": "files-pdfs.tar.zst", "size_bytes": 220227, "sha256": "6742e4e881554c4ee3e448b0a6b3b1fe1128e9b7b8915e52ed4b1a4059bc6097", "raw_bytes": 245760, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": null, "files": {"path": "/srv/kb/pdfs", "file_count": 8, "total_bytes": 219018, "entries": 12}, "index": {"file": "files-pdfs.index.json.zst", "size_bytes": 512, "sha256": "c6bc1e6c6cc08fc0a8ea000d3c613080355ef709a48da8cf0cef8acc2703bceb"}}, {"name": "config", "kind": "config", "file": "config.json.zst", "size_bytes": 1022, "sha256": "00a480dc9c89610a21463363fc849471cda9cf0abaaf9248157e2ec54f4b991c", "raw_bytes": 2643, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": null, "files": null, "index": null}]}',NULL,NULL,'before-upgrade','[{"name": "shop", "kind": "postgres", "file": "db-shop.dump.zst", "size_bytes": 71051, "sha256": "400930ab6e5c19257200e7c5231dda0277a599a6a81e89282efb03f13e2156d8", "raw_bytes": 195384, "encryption": {"mode": "none"}, "database": {"server_version": "15.20 (Debian 15.20-0+deb12u1)", "database_size": 8281447, "tables": 3, "rows": 5050}}, {"name": "shop.globals", "kind": "globals", "file": "globals-shop.sql.zst", "size_bytes": 365, "sha256": "4f12dc42e428ab57a13a3cf073f9d7177938e60fada26a9f9456c0d416ed4ba5", "raw_bytes": 640, "encryption": {"mode": "none"}}, {"name": "pdfs", "kind": "files", "file": "files-pdfs.tar.zst", "size_bytes": 220227, "sha256": "6742e4e881554c4ee3e448b0a6b3b1fe1128e9b7b8915e52ed4b1a4059bc6097", "raw_bytes": 245760, "encryption": {"mode": "none"}, "files": {"file_count": 8, "total_bytes": 219018}}, {"name": "config", "kind": "config", "file": "config.json.zst", "size_bytes": 1022, "sha256": "00a480dc9c89610a21463363fc849471cda9cf0abaaf9248157e2ec54f4b991c", "raw_bytes": 2643, "encryption": {"mode": "none"}}]');
INSERT INTO "backups" VALUES('20261203T103505Z-3fdabe','shop','complete','manual','2026-12-03T10:35:05Z','2026-12-03T10:35:05Z',293178,'{"local": "complete"}','{"format": 1, "id": "20261203T103505Z-3fdabe", "job": "shop", "trigger": "manual", "tag": null, "label": null, "host": "vm", "kbackup_version": "0.1.0", "started_at": "2026-12-03T10:35:05Z", "finished_at": "2026-12-03T10:35:05Z", "components": [{"name": "shop", "kind": "postgres", "file": "db-shop.dump.zst", "size_bytes": 71051, "sha256": "0cd9bc029021995278ef4e28a4ae142e6a617a0374338358a43d4940295f9e35", "raw_bytes": 195384, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": {"database": "shop", "server_version": "15.20 (Debian 15.20-0+deb12u1)", "server_version_num": 150020, "database_size": 8281447, "row_counts": {"public.Line Items": 3000, "public.customers": 50, "public.invoices": 2000}, "format": "pg_dump custom (-Fc -Z0)"}, "files": null, "index": null}, {"name": "shop.globals", "kind": "globals", "file": "globals-shop.sql.zst", "size_bytes": 366, "sha256": "7ec0338c9078f98fc2ac2939c03fded939892a35202566e9a977e0dd9a44bbc3", "raw_bytes": 640, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": null, "files": null, "index": null}, {"name": "pdfs", "kind": "files", "file": "files-pdfs.tar.zst", "size_bytes": 220227, "sha256": "6742e4e881554c4ee3e448b0a6b3b1fe1128e9b7b8915e52ed4b1a4059bc6097", "raw_bytes": 245760, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": null, "files": {"path": "/srv/kb/pdfs", "file_count": 8, "total_bytes": 219018, "entries": 12}, "index": {"file": "files-pdfs.index.json.zst", "size_bytes": 512, "sha256": "c6bc1e6c6cc08fc0a8ea000d3c613080355ef709a48da8cf0cef8acc2703bceb"}}, {"name": "config", "kind": "config", "file": "config.json.zst", "size_bytes": 1022, "sha256": "8652b9034efd928e0cf79f47a6355071cf65110d19fe4958ef674f9beb71aded", "raw_bytes": 2643, "compression": {"algorithm": "zstd", "level": 1}, "encryption": {"mode": "none"}, "database": null, "files": null, "index": null}]}',NULL,NULL,NULL,'[{"name": "shop", "kind": "postgres", "file": "db-shop.dump.zst", "size_bytes": 71051, "sha256": "0cd9bc029021995278ef4e28a4ae142e6a617a0374338358a43d4940295f9e35", "raw_bytes": 195384, "encryption": {"mode": "none"}, "database": {"server_version": "15.20 (Debian 15.20-0+deb12u1)", "database_size": 8281447, "tables": 3, "rows": 5050}}, {"name": "shop.globals", "kind": "globals", "file": "globals-shop.sql.zst", "size_bytes": 366, "sha256": "7ec0338c9078f98fc2ac2939c03fded939892a35202566e9a977e0dd9a44bbc3", "raw_bytes": 640, "encryption": {"mode": "none"}}, {"name": "pdfs", "kind": "files", "file": "files-pdfs.tar.zst", "size_bytes": 220227, "sha256": "6742e4e881554c4ee3e448b0a6b3b1fe1128e9b7b8915e52ed4b1a4059bc6097", "raw_bytes": 245760, "encryption": {"mode": "none"}, "files": {"file_count": 8, "total_bytes": 219018}}, {"name": "config", "kind": "config", "file": "config.json.zst", "size_bytes": 1022, "sha256": "8652b9034efd928e0cf79f47a6355071cf65110d19fe4958ef674f9beb71aded", "raw_bytes": 2643, "encryption": {"mode": "none"}}]');
CREATE TABLE deletions (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    deleted_at TEXT NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    targets TEXT NOT NULL,
    remaining TEXT NOT NULL DEFAULT '[]',
    forced INTEGER NOT NULL,
    overridden TEXT NOT NULL DEFAULT '[]',
    reason TEXT,
    errors TEXT NOT NULL DEFAULT '{}',
    backup TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO "deletions" VALUES('20261203T103505Z-8c93da','shop','20261203T103501Z-662332','2026-12-03T10:35:05Z','root',0,'["local"]','[]',1,'[]','test','{}','{"status": "complete", "trigger": "manual", "started_at": "2026-12-03T10:35:01Z", "finished_at": "2026-12-03T10:35:02Z", "size_bytes": 293175}');
CREATE TABLE disk_samples (
    path TEXT NOT NULL,
    at TEXT NOT NULL,
    free INTEGER NOT NULL,
    PRIMARY KEY (path, at)
);
INSERT INTO "disk_samples" VALUES('local','2026-12-03T10:35:00Z',77316067328);
CREATE TABLE health_seen (
    job TEXT NOT NULL,
    item TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (job, item)
);
INSERT INTO "health_seen" VALUES('shop','job','2026-12-03T10:35:00Z');
INSERT INTO "health_seen" VALUES('shop','target:local','2026-12-03T10:35:00Z');
INSERT INTO "health_seen" VALUES('shop','schedule:daily:0 2 * * *','2026-12-03T10:35:00Z');
CREATE TABLE job_pauses (job TEXT PRIMARY KEY, paused_at TEXT NOT NULL, paused_by TEXT NOT NULL, reason TEXT, until TEXT, resumed_by TEXT);
INSERT INTO "job_pauses" VALUES('shop','2026-12-03T10:35:04Z','root','disk swap','2026-12-03T10:35:04Z','root');
CREATE TABLE restores (
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
INSERT INTO "restores" VALUES('20261203T103503Z-c8599f','shop','20261203T103501Z-662332','2026-12-03T10:35:03Z','2026-12-03T10:35:04Z','complete','root',0,'{"backup_id": "20261203T103501Z-662332", "job": "shop", "destructive": false, "confirm_word": "", "safety_backup": [], "steps": [{"component": "shop", "kind": "database-new", "target": "shop_r", "detail": "restore schema and data into new database ''shop_r''; shop is not touched", "destructive": false, "size_bytes": 195384}], "request": {"backup": "20261203T103501Z-662332", "job": null, "component": "shop", "to_database": "shop_r", "tables": [], "schema_only": false, "data_only": false, "no_owner": false, "with_globals": false, "clean": false, "files_to": null, "in_place": false, "no_safety_backup": false, "force": false, "gpg_homedir": null, "passphrase_file": null, "dry_run": false, "yes": true}}',NULL,NULL);
CREATE TABLE runs (
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
INSERT INTO "runs" VALUES('20261203T103501Z-662332','shop','backup','manual','complete','2026-12-03T10:35:01Z','2026-12-03T10:35:02Z','20261203T103501Z-662332',NULL);
INSERT INTO "runs" VALUES('20261203T103502Z-32fabb','shop','backup','manual','complete','2026-12-03T10:35:02Z','2026-12-03T10:35:03Z','20261203T103502Z-32fabb',NULL);
INSERT INTO "runs" VALUES('20261203T103503Z-eacf7d','shop','verify','manual','complete','2026-12-03T10:35:03Z','2026-12-03T10:35:03Z','20261203T103501Z-662332',NULL);
INSERT INTO "runs" VALUES('20261203T103503Z-c8599f','shop','restore','manual','complete','2026-12-03T10:35:03Z','2026-12-03T10:35:04Z','20261203T103501Z-662332',NULL);
INSERT INTO "runs" VALUES('20261203T103505Z-3fdabe','shop','backup','manual','complete','2026-12-03T10:35:05Z','2026-12-03T10:35:05Z','20261203T103505Z-3fdabe',NULL);
CREATE TABLE schedule_state (
    job TEXT NOT NULL,
    schedule TEXT NOT NULL,
    last_fired_at TEXT NOT NULL,
    PRIMARY KEY (job, schedule)
);
INSERT INTO "schedule_state" VALUES('shop','daily:0 2 * * *','2026-12-03T10:35:00Z');
CREATE TABLE verifications (
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
INSERT INTO "verifications" VALUES('20261203T103501Z-662332','20261203T103501Z-662332','shop','checksum','2026-12-03T10:35:02Z','2026-12-03T10:35:02Z',1,NULL,'{"targets": ["local"]}');
INSERT INTO "verifications" VALUES('20261203T103502Z-32fabb','20261203T103502Z-32fabb','shop','checksum','2026-12-03T10:35:03Z','2026-12-03T10:35:03Z',1,NULL,'{"targets": ["local"]}');
INSERT INTO "verifications" VALUES('20261203T103503Z-eacf7d','20261203T103501Z-662332','shop','structure','2026-12-03T10:35:03Z','2026-12-03T10:35:03Z',1,NULL,'{"targets": ["local"]}');
INSERT INTO "verifications" VALUES('20261203T103505Z-3fdabe','20261203T103505Z-3fdabe','shop','checksum','2026-12-03T10:35:05Z','2026-12-03T10:35:05Z',1,NULL,'{"targets": ["local"]}');
CREATE INDEX runs_job ON runs(job, started_at);
CREATE INDEX runs_started ON runs(started_at);
CREATE INDEX backups_job ON backups(job, started_at);
CREATE INDEX backups_started ON backups(started_at);
CREATE INDEX backups_job_status ON backups(job, status, started_at);
CREATE INDEX backups_status ON backups(status, started_at);
CREATE INDEX verifications_backup ON verifications(backup_id, finished_at);
CREATE INDEX restores_job ON restores(job, started_at);
CREATE INDEX restores_started ON restores(started_at);
CREATE INDEX backups_tag ON backups(job, tag);
CREATE UNIQUE INDEX alerts_one_firing ON alerts(key) WHERE state = 'firing';
CREATE INDEX alerts_state ON alerts(state, resolved_at);
CREATE INDEX deletions_job ON deletions(job, deleted_at);
DELETE FROM "sqlite_sequence";
COMMIT;
