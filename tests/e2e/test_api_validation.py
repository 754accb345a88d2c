"""Junk in, a JSON 4xx out: every malformed request the API was found to crash on, each with
its exact status and the field its error names; size limits; 500s that reveal nothing but an
id. One daemon (a files-only job, no PostgreSQL needed) serves the whole module.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import KbEnv, files_daemon, request


def json_error(kb: KbEnv, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status and error text of a request that must be answered with a JSON error."""
    status, fields, payload = request(kb, method, path, body, headers)
    assert fields.get("content-type", "").startswith("application/json"), (status, payload)
    answer = json.loads(payload)
    assert answer["status"] == status, answer
    return status, answer["error"]


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


LIMIT = "limit: expected an integer between 1 and 10000"
ID = "20990101T000000Z-abcdef"
SILENCE = {"match": "docs", "reason": "maintenance"}
NAME_RULE = "expected a non-empty string of at most 200 characters without NUL"

# (method, path, body, status, the error's start) - the requests found to crash first.
MALFORMED: list[tuple[str, str, bytes | None, int, str]] = [
    ("POST", f"/v1/backups/{ID}/verify", b"{bad", 400, "body: not valid JSON"),
    ("POST", f"/v1/backups/{ID}/verify", b"[]", 400, "body: expected a JSON object, not a list"),
    ("POST", f"/v1/backups/{ID}/verify", b'{"level": "deep"}', 400,
     'level: expected one of "checksum", "structure", "restore-test"'),
    ("POST", f"/v1/backups/{ID}/verify", b'{"level": ["checksum"]}', 400, "level: expected"),
    ("POST", "/v1/jobs/docs/prune", b"[true]", 400, "body: expected a JSON object, not a list"),
    ("POST", "/v1/jobs/docs/prune", b'"dry"', 400, "body: expected a JSON object, not a string"),
    ("POST", "/v1/jobs/docs/prune", b"7", 400, "body: expected a JSON object, not a number"),
    ("POST", "/v1/jobs/docs/prune", b"null", 400, "body: expected a JSON object, not null"),
    ("POST", "/v1/jobs/docs/prune", b'{"dry_run": "yes"}', 400,
     "dry_run: expected true or false"),
    ("POST", "/v1/jobs/docs/prune", b'{"dry_run": 1}', 400, "dry_run: expected true or false"),
    ("POST", "/v1/jobs/docs/prune", b'{"dryrun": true}', 400,
     "dryrun: unknown field (known: dry_run)"),
    ("POST", "/v1/storage/check", b'{"target": ["local"]}', 400, f"target: {NAME_RULE}"),
    ("POST", "/v1/storage/check", b'{"target": 5}', 400, f"target: {NAME_RULE}"),
    ("POST", "/v1/alerts/silence", json.dumps({**SILENCE, "for": [1]}).encode(), 400,
     "for: expected a non-empty string"),
    ("POST", "/v1/alerts/silence", b'{"match": "docs", "reason": "x", "for": 1e999}', 400,
     "for: expected a non-empty string"),
    ("POST", "/v1/alerts/silence", b'{"match": "docs", "reason": "x", "for": NaN}', 400,
     "body: not valid JSON (NaN is not JSON)"),
    ("POST", "/v1/alerts/silence", json.dumps({"for": "2h"}).encode(), 400,
     "match: required, a non-empty string of at most 200 characters without NUL;"
     " reason: required"),
    ("POST", "/v1/alerts/silence", json.dumps({**SILENCE, "for": "soon"}).encode(), 400,
     "for: 'soon' is not a duration"),
    ("POST", "/v1/alerts/unsilence", b'{"match": null}', 400, f"match: {NAME_RULE}"),
    ("POST", "/v1/alerts/test", b'{"channel": {}}', 400, f"channel: {NAME_RULE}"),
    ("GET", "/v1/runs?limit=abc", None, 400, LIMIT),
    ("GET", "/v1/runs?limit=" + "9" * 30, None, 400, LIMIT),
    ("GET", "/v1/runs?limit=0", None, 400, LIMIT),
    ("GET", "/v1/runs?limit=1.5", None, 400, LIMIT),
    ("GET", "/v1/runs?limit=1&limit=2", None, 400, "limit: given 2 times; give it once"),
    ("GET", "/v1/runs?offset=-1", None, 400,
     "offset: expected an integer between 0 and 1000000000"),
    ("GET", "/v1/runs?jobs=docs", None, 400, "jobs: unknown parameter (known: job, limit,"
     " offset)"),
    ("GET", "/v1/backups?status=fine", None, 400,
     'status: expected one of "running", "complete", "partial", "failed", "corrupt"'),
    ("GET", "/v1/backups?job=" + "j" * 201, None, 400, f"job: {NAME_RULE}"),
    ("GET", "/v1/backups?job=a%00b", None, 400, "'job': NUL in the query string"),
    ("GET", "/v1/restores?limit=10001", None, 400, LIMIT),
    ("GET", "/v1/health?job=", None, 400, f"job: {NAME_RULE}"),
    ("GET", "/v1/runs/x?wait=inf", None, 400, "wait: expected a number between 0 and 3600"),
    ("GET", "/v1/runs/x?wait=nan", None, 400, "wait: expected a number between 0 and 3600"),
    ("POST", "/v1/restores", json.dumps({"backup": "latest", "job": "docs",
                                         "to_database": 5}).encode(), 400,
     f"to_database: {NAME_RULE}"),
    ("POST", "/v1/restores", json.dumps({"backup": "latest", "job": "docs",
                                         "to_database": "sh\x00p"}).encode(), 400,
     f"to_database: {NAME_RULE}"),
    ("POST", "/v1/restores", json.dumps({"backup": "latest", "tables": ["a", 2]}).encode(),
     400, f"tables[1]: {NAME_RULE}"),
    ("POST", "/v1/restores", json.dumps({"backup": "latest", "yes": "true"}).encode(), 400,
     "yes: expected true or false"),
    ("POST", "/v1/restores", b"{}", 400, "backup: required"),
    ("POST", "/v1/restores", json.dumps({"backup": "latest", "wipe": True}).encode(), 400,
     "wipe: unknown field (known: all_databases, backup, clean,"),
    ("POST", "/v1/restores", deep(100_000), 400, "body: JSON nested deeper than 32 levels"),
    ("POST", "/v1/restores", b'{"backup": ' + deep(40) + b"}", 400,
     "body: JSON nested deeper than 32 levels"),
    ("POST", "/v1/restores", b'{"backup": "\xff"}', 400, "body: expected JSON in UTF-8"),
    ("POST", "/v1/restores", b'{"backup": "a\x00"}', 400, "body: not valid JSON"),
    ("POST", "/v1/jobs/docs/run", b'{"now": true}', 400,
     "now: unknown field (known: force, label)"),
    ("POST", "/v1/reload", b"[]", 400, "body: expected a JSON object, not a list"),
    ("GET", "/v1/backups/" + "x" * 10_000, None, 414, "request path longer than 8192 bytes"),
    ("POST", "/v1/backups/" + "x" * 10_000 + "/verify", b"{}", 414,
     "request path longer than 8192 bytes"),
    ("GET", "/v1/backups/" + "x" * 201, None, 400, f"id: {NAME_RULE}"),
    ("GET", "/v1/runs/a%00b", None, 400, f"id: {NAME_RULE}"),
    ("POST", "/v1/jobs/" + "j" * 300 + "/prune", b"{}", 400, f"job: {NAME_RULE}"),
    ("POST", "/v1/restores", b"{" + b" " * (1024 * 1024) + b"}", 413,
     "request body larger than 1048576 bytes"),
    ("GET", "/v1/nope", None, 404, "no such endpoint: GET /v1/nope (see GET /v1/openapi.json)"),
    ("DELETE", "/v1/status", None, 405, "DELETE is not allowed on /v1/status (allowed: GET,"
     " HEAD)"),
    ("POST", "/v1/runs", b"{}", 405, "POST is not allowed on /v1/runs (allowed: GET, HEAD)"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), MALFORMED,
                         ids=[f"{m} {p[:40]} {(b or b'')[:24]!r}" for m, p, b, *_ in MALFORMED])
def test_malformed_request_is_a_json_error_naming_the_field(
    api: KbEnv, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    got, error = json_error(api, method, path, body)
    assert (got, error[:len(message)]) == (status, message), error


def test_oversized_header_is_a_json_431(api: KbEnv) -> None:
    got, error = json_error(api, "GET", "/v1/status", headers={"X-Junk": "j" * 10_000})
    assert (got, error) == (431, "header X-Junk longer than 8192 bytes")


def test_valid_requests_still_pass(api: KbEnv) -> None:
    """The models accept what kbackupctl and documented clients send."""
    status, _, payload = request(api, "GET", "/v1/runs?limit=10000&offset=0&job=docs")
    assert status == 200
    assert json.loads(payload) == {"items": [], "total": 0, "limit": 10000, "offset": 0}
    status, _, payload = request(api, "POST", "/v1/jobs/docs/prune", b'{"dry_run": true}')
    assert status == 200, payload
    status, _, payload = request(api, "POST", "/v1/storage/check", b"")
    assert status == 200, payload
    status, _, payload = request(api, "POST", "/v1/alerts/silence",
                                 json.dumps({**SILENCE, "for": 3600}).encode())
    assert status == 200, payload
    status, _, payload = request(api, "POST", "/v1/alerts/unsilence", b'{"match": "docs"}')
    assert status == 200, payload
    status, _, payload = request(api, "POST", "/v1/restores",
                                 b'{"backup": "latest", "job": "docs", "dry_run": true}')
    assert status == 409, payload  # valid, but there is no backup to restore
    assert json.loads(payload)["error"].startswith("job docs has no complete backup")
    assert api.proc is not None and api.proc.poll() is None


def test_unexpected_exception_answers_only_an_error_id(tmp_path: Path) -> None:
    """A 500 names an id the daemon's log carries with the traceback; no SQL, no exception
    text in the answer."""
    kb, sockdir = files_daemon(tmp_path)
    try:
        with sqlite3.connect(kb.state / "catalog.sqlite3") as db:
            db.execute("DROP TABLE restores")  # behind the daemon's back: its query fails
        status, fields, payload = request(kb, "GET", "/v1/restores")
        assert status == 500
        assert fields["content-type"].startswith("application/json")
        answer: dict[str, Any] = json.loads(payload)
        error_id = answer["error_id"]
        assert re.fullmatch(r"[0-9a-f]{8}", error_id)
        assert answer == {"error": f"internal error (id {error_id}); see the daemon log",
                          "status": 500, "error_id": error_id}
        logs = kb.logs()
        assert f"event=api.error id={error_id} method=GET path=/v1/restores" in logs
        assert "no such table: restores" in logs  # the traceback is in the log only
        assert kb.ctl("status").returncode == 0  # and the daemon goes on
    finally:
        kb.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
