"""The OpenAPI 3.1 description of API v1, served at /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from kbackup import __version__


def _op(
    summary: str, role: str, params: list[dict[str, Any]] | None = None, ok: str = "200"
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Requires the {role} role (socket group for read, admin group to change).",
        "responses": {
            ok: {"description": "OK", "content": {"application/json": {}}},
            "403": {"$ref": "#/components/responses/Forbidden"},
        },
    }
    if params:
        op["parameters"] = params
        op["responses"]["404"] = {"$ref": "#/components/responses/NotFound"}
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "kbackupd API",
        "version": __version__,
        "description": "HTTP/JSON over the Unix socket /run/kbackup/kbackupd.sock.",
    },
    "paths": {
        "/v1/status": {
            "get": _op("Daemon and per-job state: last run, last backup, next run", "read")
        },
        "/v1/health": {"get": _op("Health checks (OK/WARNING/CRITICAL with reasons) and the"
                                  " overall status; ?job=NAME for one job", "read",
                                  [_query_param("job")])},
        "/v1/alerts": {"get": _op("Firing and recently resolved alerts, silences, channels"
                                  " (Prometheus metrics: GET /metrics, text format)", "read")},
        "/v1/alerts/silence": {"post": _op(
            "Silence a job, 'daemon' or an alert key: body {\"match\", \"for\": \"2h\","
            " \"reason\"}", "admin")},
        "/v1/alerts/unsilence": {"post": _op("Lift a silence: body {\"match\"}", "admin")},
        "/v1/alerts/test": {"post": _op(
            "Send a test message through each channel (body {\"channel\": NAME} for one);"
            " per channel ok or the exact error", "admin")},
        "/v1/jobs": {"get": _op("Configured jobs", "read")},
        "/v1/jobs/{job}/run": {
            "post": _op("Start a backup of a job now; body {\"label\": NAME} labels it,"
                        " {\"force\": true} runs a paused job (409 without)", "admin",
                        [_path_param("job")], ok="202")
        },
        "/v1/jobs/{job}/pause": {"post": _op(
            "Pause a job's scheduled runs: body {\"reason\", \"for\": \"2h\" (or"
            " \"for_seconds\")}, both optional", "admin", [_path_param("job")])},
        "/v1/jobs/{job}/resume": {"post": _op("End a job's pause", "admin",
                                              [_path_param("job")])},
        "/v1/jobs/{job}/prune": {"post": _op(
            "Apply the job's retention on every target; body {\"dry_run\": true} only reports",
            "admin", [_path_param("job")])},
        "/v1/backups": {"get": _op("Backups, newest first; ?label= matches a schedule tag or"
                                   " a user label", "read",
                                   [_query_param("job"), _query_param("label")])},
        "/v1/backups/{id}": {
            "get": _op("One backup with its manifest", "read", [_path_param("id")]),
            "delete": _op(
                "Delete a backup (manifest first, then its objects) from every target or"
                " one; query or body {\"target\", \"force\", \"dry_run\", \"reason\"};"
                " 409 for the newest complete backup or below min_keep (force overrides) and"
                " for a backup a run uses (never overridden); recorded in the audit trail",
                "admin", [_path_param("id")]),
        },
        "/v1/audit": {"get": _op("Restores and deletions, newest first (who, when, which"
                                 " backup, result)", "read", [_query_param("job")])},
        "/v1/backups/{id}/verify": {"post": _op(
            "Verify a backup: body {\"level\": \"checksum\"|\"structure\"|\"restore-test\"}",
            "admin", [_path_param("id")], ok="202")},
        "/v1/restores": {
            "post": _op("Plan (dry_run) or start a restore; destructive plans need yes=true",
                        "admin", ok="202"),
            "get": _op("Restore history (audit trail)", "read", [_query_param("job")]),
        },
        "/v1/keys": {"get": _op("Encryption keys each job needs, and whether they are usable",
                                "read")},
        "/v1/runs": {"get": _op("Runs, newest first", "read", [_query_param("job")])},
        "/v1/runs/{id}": {"get": _op("One run with live progress", "read", [_path_param("id")])},
        "/v1/reload": {"post": _op("Reload the configuration (like SIGHUP)", "admin")},
        "/v1/catalog/rescan": {
            "post": _op("Rebuild the catalog from manifests in storage", "admin")
        },
        "/v1/storage/check": {"post": _op(
            "Write, read back, list and delete a probe object; body {\"target\": NAME} or {}",
            "admin")},
        "/v1/openapi.json": {"get": _op("This document", "read")},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "status"],
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
            },
        },
        "responses": {
            "Forbidden": {
                "description": "Caller lacks the required group",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "NotFound": {
                "description": "No such object",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    },
}
