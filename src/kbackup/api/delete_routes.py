"""`DELETE /v1/backups/{id}` (admin: the guard middleware requires it for every non-GET) and
`GET /v1/audit` (restores and deletions, newest first), registered by `server.build_app`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kbackup.api.auth import Caller
from kbackup.api.server import DAEMON, daemon_of, error
from kbackup.audit import AuditLog

AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"{name} must be true or false, not {value!r}")


def _text(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise ValueError(f"{name} must be a non-empty string, not {value!r}")


async def delete_options(request: web.Request) -> dict[str, Any]:
    """target, force, dry_run, reason: from the query string, a JSON body overriding it."""
    given: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        given.update(body)
    unknown = sorted(set(given) - {"target", "force", "dry_run", "reason"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}; expected target, force, dry_run,"
                         " reason")
    return {"target": _text("target", given.get("target")),
            "reason": _text("reason", given.get("reason")),
            "force": _flag("force", given.get("force", False)),
            "dry_run": _flag("dry_run", given.get("dry_run", False))}


async def delete_backup(request: web.Request) -> web.Response:
    from kbackup.catalog import utcnow
    from kbackup.jobs.delete import DeleteRefused, execute_delete, measure, plan_delete

    daemon = daemon_of(request)
    backup_id = request.match_info["id"]
    try:
        options = await delete_options(request)
    except ValueError as exc:
        return error(400, f"bad delete request: {exc}")
    try:
        plan = plan_delete(daemon.config, daemon.catalog, daemon.storages,
                           daemon.runner.using(backup_id), backup_id, options["target"],
                           options["force"])
        if options["dry_run"]:
            await measure(plan, daemon.storages)
            return web.json_response({"dry_run": True, "plan": plan})
        caller: Caller = request["caller"]
        now = daemon.clock.now() if daemon.clock else utcnow()
        result = await execute_delete(daemon.config, daemon.catalog, request.app[AUDIT],
                                      daemon.storages, plan,
                                      {"user": caller.user, "uid": caller.uid}, options["reason"],
                                      now)
    except DeleteRefused as exc:
        return error(exc.status, str(exc))
    return web.json_response(result)


async def get_audit(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", 100))
    except ValueError:
        return error(400, f"limit must be a number, not {request.query['limit']!r}")
    return web.json_response(request.app[AUDIT].history(request.query.get("job") or None,
                                                        max(1, limit)))


def register(app: web.Application) -> None:
    app[AUDIT] = AuditLog(app[DAEMON].catalog)
    app.router.add_delete("/v1/backups/{id}", delete_backup)
    app.router.add_get("/v1/audit", get_audit)
