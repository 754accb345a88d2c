"""`DELETE /v1/backups/{id}` (admin: the guard middleware requires it for every non-GET) and
`GET /v1/audit` (restores and deletions, newest first), registered by `server.build_app`."""

from __future__ import annotations

from aiohttp import web

from kbackup.api.auth import Caller
from kbackup.api.common import services_of
from kbackup.api.models import (
    AuditQuery,
    DeleteBody,
    DeleteOptions,
    DeleteQuery,
    body_of,
    query_of,
)


async def delete_options(request: web.Request) -> DeleteOptions:
    """target, force, dry_run, reason: from the query string, or a JSON body."""
    query = query_of(request, DeleteQuery)
    if request.can_read_body:
        body = await body_of(request, DeleteBody)
        return query.model_copy(update=body.model_dump(exclude_unset=True))
    return query


async def delete_backup(request: web.Request) -> web.Response:
    options = await delete_options(request)
    caller: Caller = request["caller"]
    return web.json_response(await services_of(request).backups.delete(
        request.match_info["id"], options.target, options.force, options.dry_run,
        options.reason, {"user": caller.user, "uid": caller.uid}))


async def get_audit(request: web.Request) -> web.Response:
    query = query_of(request, AuditQuery)
    return web.json_response(services_of(request).backups.audit(query.job, query.limit,
                                                                query.offset))


def register(app: web.Application) -> None:
    app.router.add_delete("/v1/backups/{id}", delete_backup)
    app.router.add_get("/v1/audit", get_audit)
