"""`DELETE /v1/backups/{id}` (admin: the guard middleware requires it for every non-GET) and
`GET /v1/audit` (restores and deletions, newest first), registered by `server.build_app`."""

from __future__ import annotations

from aiohttp import web

from kbackup.api.auth import Caller
from kbackup.api.models import (
    AuditQuery,
    DeleteBody,
    DeleteOptions,
    DeleteQuery,
    body_of,
    query_of,
)
from kbackup.api.server import DAEMON, daemon_of, error
from kbackup.audit import AuditLog

AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")


async def delete_options(request: web.Request) -> DeleteOptions:
    """target, force, dry_run, reason: from the query string, or a JSON body."""
    query = query_of(request, DeleteQuery)
    if request.can_read_body:
        body = await body_of(request, DeleteBody)
        return query.model_copy(update=body.model_dump(exclude_unset=True))
    return query


async def delete_backup(request: web.Request) -> web.Response:
    from kbackup.catalog import utcnow
    from kbackup.jobs.delete import DeleteRefused, execute_delete, measure, plan_delete

    daemon = daemon_of(request)
    backup_id = request.match_info["id"]
    options = await delete_options(request)
    try:
        plan = plan_delete(daemon.config, daemon.catalog, daemon.storages,
                           daemon.runner.using(backup_id), backup_id, options.target,
                           options.force)
        if options.dry_run:
            await measure(plan, daemon.storages)
            return web.json_response({"dry_run": True, "plan": plan})
        caller: Caller = request["caller"]
        now = daemon.clock.now() if daemon.clock else utcnow()
        result = await execute_delete(daemon.config, daemon.catalog, request.app[AUDIT],
                                      daemon.storages, plan,
                                      {"user": caller.user, "uid": caller.uid}, options.reason,
                                      now)
    except DeleteRefused as exc:
        return error(exc.status, str(exc))
    return web.json_response(result)


async def get_audit(request: web.Request) -> web.Response:
    query = query_of(request, AuditQuery)
    return web.json_response(request.app[AUDIT].history(query.job, query.limit,
                                                                  query.offset))


def register(app: web.Application) -> None:
    app[AUDIT] = AuditLog(app[DAEMON].catalog)
    app.router.add_delete("/v1/backups/{id}", delete_backup)
    app.router.add_get("/v1/audit", get_audit)
