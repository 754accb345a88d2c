"""The OpenAPI 3.1 description of API v1, served at /v1/openapi.json.

Request bodies and query parameters are generated from the pydantic models the handlers
validate with (api/models.py), so the document cannot drift from what the daemon accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kbackup import __version__
from kbackup.api import models

SCHEMAS: dict[str, Any] = {}  # components/schemas, filled by the models _op refers to


def _schema_ref(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True,
                                     ref_template="#/components/schemas/{model}")
    SCHEMAS.update(schema.pop("$defs", {}))
    SCHEMAS[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "description")}
        variants = [v for v in prop.get("anyOf", []) if v.get("type") != "null"]
        if len(variants) == 1:  # optional: absent means none, a query value is never null
            prop = {**variants[0], **{k: v for k, v in prop.items()
                                      if k not in ("anyOf", "default") or v is not None}}
            prop.pop("anyOf", None)
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if model.model_fields[name].description:
            param["description"] = model.model_fields[name].description
        params.append(param)
    return params


def _op(
    summary: str, role: str, params: list[dict[str, Any]] | None = None, ok: str = "200",
    query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
) -> dict[str, Any]:
    """One operation; `query` and `body` are the models its handler validates with."""
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Requires the {role} role (socket group for read, admin group to change;"
                       " on TCP a viewer token or user reads, an admin one may change).",
        "responses": {
            ok: {"description": "OK", "content": {"application/json": {}}},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": {"$ref": "#/components/responses/Forbidden"},
        },
    }
    params = list(params or [])
    if any(p["in"] == "path" for p in params):
        op["responses"]["404"] = {"$ref": "#/components/responses/NotFound"}
    if query is not None:
        params += _query_params(query)
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _schema_ref(body)}},
        }
    if params or body is not None:
        op["responses"]["400"] = {"$ref": "#/components/responses/BadRequest"}
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 200}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "kbackupd API",
        "version": __version__,
        "description": "HTTP/JSON over the Unix socket /run/kbackup/kbackupd.sock (the caller"
                       " is known by its peer credentials: no security scheme applies), and"
                       " over the [web] listen TCP address with an API token"
                       " (`Authorization: Bearer`, kbackupctl token create) or a web login's"
                       " session cookie.",
    },
    "security": [{}, {"bearerAuth": []}, {"sessionCookie": []}],
    "paths": {
        "/v1/status": {
            "get": _op("Daemon and per-job state: last run, last backup, next run", "read")
        },
        "/v1/health": {"get": _op("Health checks (OK/WARNING/CRITICAL with reasons) and the"
                                  " overall status; ?job=NAME for one job", "read",
                                  query=models.JobQuery)},
        "/v1/alerts": {"get": _op("Firing and recently resolved alerts, silences, channels"
                                  " (Prometheus metrics: GET /metrics, text format)", "read")},
        "/v1/alerts/silence": {"post": _op(
            "Silence a job, 'daemon' or an alert key: body {\"match\", \"for\": \"2h\","
            " \"reason\"}", "admin", body=models.SilenceBody)},
        "/v1/alerts/unsilence": {"post": _op("Lift a silence: body {\"match\"}", "admin",
                                             body=models.UnsilenceBody)},
        "/v1/alerts/test": {"post": _op(
            "Send a test message through each channel (body {\"channel\": NAME} for one);"
            " per channel ok or the exact error", "admin", body=models.AlertTestBody)},
        "/v1/jobs": {"get": _op("Configured jobs", "read")},
        "/v1/jobs/{job}/run": {
            "post": _op("Start a backup of a job now; body {\"label\": NAME} labels it,"
                        " {\"force\": true} runs a paused job (409 without)", "admin",
                        [_path_param("job")], ok="202", body=models.RunBody)
        },
        "/v1/jobs/{job}/pause": {"post": _op(
            "Pause a job's scheduled runs: body {\"reason\", \"for\": \"2h\" (or"
            " \"for_seconds\")}, both optional", "admin", [_path_param("job")],
            body=models.PauseBody)},
        "/v1/jobs/{job}/resume": {"post": _op("End a job's pause", "admin",
                                              [_path_param("job")], body=models.EmptyBody)},
        "/v1/jobs/{job}/prune": {"post": _op(
            "Apply the job's retention on every target; body {\"dry_run\": true} only reports",
            "admin", [_path_param("job")], body=models.PruneBody)},
        "/v1/backups": {"get": _op(
            "Backups, newest first, one page: {items, total, limit, offset}; filter by job,"
            " status and label (a schedule tag or a user label)", "read",
            query=models.BackupsQuery)},
        "/v1/backups/{id}": {
            "get": _op("One backup with its manifest", "read", [_path_param("id")]),
            "delete": _op(
                "Delete a backup (manifest first, then its objects) from every target or"
                " one; query or body {\"target\", \"force\", \"dry_run\", \"reason\"};"
                " 409 for the newest complete backup or below min_keep (force overrides) and"
                " for a backup a run uses (never overridden); recorded in the audit trail",
                "admin", [_path_param("id")], query=models.DeleteQuery, body=models.DeleteBody),
        },
        "/v1/audit": {"get": _op("Restores and deletions, newest first (who, when, which"
                                 " backup, result), one page: {items, total, limit, offset}",
                                 "read", query=models.AuditQuery)},
        "/v1/backups/{id}/verify": {"post": _op(
            "Verify a backup: body {\"level\": \"checksum\"|\"structure\"|\"restore-test\"}",
            "admin", [_path_param("id")], ok="202", body=models.VerifyBody)},
        "/v1/restores": {
            "post": _op("Plan (dry_run) or start a restore; destructive plans need yes=true",
                        "admin", ok="202", body=models.RestoreBody),
            "get": _op("Restore history (audit trail), newest first, one page: {items, total,"
                       " limit, offset}", "read", query=models.PageQuery),
        },
        "/v1/keys": {"get": _op("Encryption keys each job needs, and whether they are usable",
                                "read")},
        "/v1/keys/signing": {"get": _op(
            "The manifest signing key: algorithm, fingerprint, public key (PEM), and the"
            " fingerprints of the other trusted public keys", "read")},
        "/v1/keys/signing/import": {"post": _op(
            "Trust another (or an older) Ed25519 public key for manifest signatures", "admin",
            body=models.SigningKeyBody)},
        "/v1/keys/signing/rotate": {"post": _op(
            "A new signing key; the old public key stays trusted", "admin",
            body=models.EmptyBody)},
        "/v1/runs": {"get": _op("Runs, newest first, one page: {items, total, limit, offset}",
                                "read", query=models.PageQuery)},
        "/v1/runs/{id}": {"get": _op("One run with live progress", "read", [_path_param("id")],
                                     query=models.RunQuery)},
        "/v1/reload": {"post": _op("Reload the configuration (like SIGHUP)", "admin",
                                   body=models.EmptyBody)},
        "/v1/catalog/rescan": {
            "post": _op("Rebuild the catalog from manifests in storage; all_hosts: also other"
                        " hosts' backups in a shared bucket, as HOST:JOB on TARGET@HOST",
                        "admin", body=models.RescanBody)
        },
        "/v1/storage/check": {"post": _op(
            "Write, read back, list and delete a probe object; body {\"target\": NAME} or {}",
            "admin", body=models.StorageCheckBody)},
        "/v1/sources/check": {"get": _op(
            "Can each source (of one job) be reached and read: one result per source with"
            " ok, reason, server version, databases and sizes", "read",
            query=models.JobQuery)},
        "/v1/report": {"get": _op(
            "The report of a window up to now (?since=7d): per job backups made, failed,"
            " partial, verified, the newest size and its trend, sizes per day, the last good"
            " backup, the last restore-test's duration; stored bytes per target; open alerts",
            "read", query=models.ReportQuery)},
        "/v1/report/send": {"post": _op(
            "Send the report through an alert channel now, as its digest: body {\"channel\","
            " \"since\": \"7d\"}; ok or the exact error", "admin",
            body=models.ReportSendBody)},
        "/v1/openapi.json": {"get": _op("This document", "read")},
        "/v1/tokens": {
            "get": _op("API tokens: name, role, created, expires, last_used, revoked, state"
                       " (never the token); Unix socket only", "admin"),
            "post": _op("Create an API token; the answer's `token` is shown this once (only"
                        " its SHA-256 is kept); Unix socket only", "admin", ok="201",
                        body=models.TokenBody),
        },
        "/v1/tokens/{name}/revoke": {"post": _op(
            "Revoke a token: it is refused (401) from then on; Unix socket only", "admin",
            [_path_param("name")], body=models.EmptyBody)},
        "/v1/web/users": {
            "get": _op("Web users of the TCP listener: name, role, created; Unix socket only",
                       "admin"),
            "post": _op("Add a web user (the password is stored as an argon2id hash); Unix"
                        " socket only", "admin", ok="201", body=models.WebUserBody),
        },
        "/v1/web/users/{name}": {"delete": _op(
            "Remove a web user and end their sessions; Unix socket only", "admin",
            [_path_param("name")])},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "status"],
                "properties": {
                    "error": {"type": "string"},
                    "status": {"type": "integer"},
                    "error_id": {"type": "string",
                                 "description": "500 only: the id of the daemon's log line"},
                },
            },
            **SCHEMAS,
        },
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description":
                           "An API token (kbackupctl token create NAME --role viewer|admin)"
                           " on the TCP listener"},
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "kb_session",
                              "description": "The session of a web login (POST /login)"},
        },
        "responses": {
            "Unauthorized": {
                "description": "TCP only: no credentials, or a token that is unknown, revoked"
                               " or expired (the error says which); header WWW-Authenticate:"
                               " Bearer. 429 when too many invalid tokens came from the"
                               " address (header Retry-After)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "Forbidden": {
                "description": "Caller lacks the required group",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "BadRequest": {
                "description": "A parameter or the body is not what the endpoint accepts; the"
                               " error names the field",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "NotFound": {
                "description": "No such object",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    },
}
