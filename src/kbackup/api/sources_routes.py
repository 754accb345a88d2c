"""The reachability probe of the sources: GET /v1/sources/check[?job=J] (read access: it
changes nothing). Each source's driver answers for itself (its `check` verb)."""

from __future__ import annotations

from aiohttp import web

from kbackup.api.common import services_of
from kbackup.api.models import JobQuery, query_of


async def get_sources_check(request: web.Request) -> web.Response:
    job = query_of(request, JobQuery).job
    return web.json_response(await services_of(request).sources.check(job))


def register(app: web.Application) -> None:
    app.router.add_get("/v1/sources/check", get_sources_check)
