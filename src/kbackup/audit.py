"""The audit trail: who restored or deleted which backup, when, and with what result.

Restores are recorded by jobs/restore.py in the catalog's `restores` table; deletions in the
`deletions` table kept here (beside the catalog's tables, in its SQLite database). Both are
also written as JSON to the storage (`_audit/restores/`, `_audit/deletions/`, see
repository.write_audit), so the trail survives a lost server. `history` is the one list of
both that `GET /v1/audit` and `kbackupctl audit` show, newest first.
"""

from __future__ import annotations

import json
from typing import Any

from kbackup.catalog import Catalog

SCHEMA = """
CREATE TABLE IF NOT EXISTS deletions (
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
CREATE INDEX IF NOT EXISTS deletions_job ON deletions(job, deleted_at);
"""
_JSON = ("targets", "remaining", "overridden", "errors", "backup")


class AuditLog:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        catalog.db.executescript(SCHEMA)

    def add_deletion(self, record: dict[str, Any]) -> None:
        """record: the same dict that is stored as JSON in `_audit/deletions/`."""
        self.catalog.db.execute(
            "INSERT INTO deletions (id, job, backup_id, deleted_at, user, uid, targets,"
            " remaining, forced, overridden, reason, errors, backup)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (record["deletion_id"], record["job"], record["backup_id"], record["deleted_at"],
             record["user"], record["uid"], json.dumps(record["targets"]),
             json.dumps(record["remaining_targets"]), int(record["forced"]),
             json.dumps(record["overridden"]), record["reason"], json.dumps(record["errors"]),
             json.dumps(record["backup"])))

    def deletions(self, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT * FROM deletions" + (" WHERE job=?" if job else "")
        query += " ORDER BY deleted_at DESC, rowid DESC LIMIT ?"
        rows = self.catalog.db.execute(query, ((job, limit) if job else (limit,)))
        out = []
        for row in rows:
            item = dict(row)
            for key in _JSON:
                item[key] = json.loads(item[key])
            item["forced"] = bool(item["forced"])
            out.append(item)
        return out

    def count_deletions(self, job: str | None = None) -> int:
        query = "SELECT count(*) FROM deletions" + (" WHERE job=?" if job else "")
        return int(self.catalog.db.execute(query, (job,) if job else ()).fetchone()[0])

    def history(self, job: str | None = None, limit: int = 100,
                offset: int = 0) -> dict[str, Any]:
        """Restores and deletions in one list, newest first, in one shape (kind, id, at, job,
        backup_id, user, uid, result, targets, plus the kind's details), one page of it:
        {items, total, limit, offset} like the other listings."""
        entries: list[dict[str, Any]] = []
        for r in self.catalog.restores(job, limit + offset):
            entries.append({
                "kind": "restore", "id": r["id"], "at": r["started_at"], "job": r["job"],
                "backup_id": r["backup_id"], "user": r["user"], "uid": r["uid"],
                "result": r["status"], "targets": None, "finished_at": r["finished_at"],
                "safety_backup_id": r["safety_backup_id"], "error": r["error"],
            })
        for d in self.deletions(job, limit + offset):
            entries.append({
                "kind": "deletion", "id": d["id"], "at": d["deleted_at"], "job": d["job"],
                "backup_id": d["backup_id"], "user": d["user"], "uid": d["uid"],
                "result": "failed" if d["errors"] and not d["targets"] else
                          ("partial" if d["errors"] else "deleted"),
                "targets": d["targets"], "remaining_targets": d["remaining"],
                "forced": d["forced"], "overridden": d["overridden"], "reason": d["reason"],
                "errors": d["errors"],
            })
        entries.sort(key=lambda e: e["at"] or "", reverse=True)
        total = self.catalog.count_restores(job) + self.count_deletions(job)
        return {"items": entries[offset:offset + limit], "total": total, "limit": limit,
                "offset": offset}
