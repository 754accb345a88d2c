"""Pausing a job: POST /v1/jobs/{job}/pause and /resume (admin, like every POST).

A pause is kept in the catalog (who, when, why, until when), so it survives restarts and
reloads. While it is in force the scheduler skips the job's backups and verifications and a
manual run needs {"force": true}; a pause with "for" ends by itself.
"""

from __future__ import annotations

from aiohttp import web

from kbackup.api.common import services_of
from kbackup.api.models import EmptyBody, PauseBody, body_of
from kbackup.errors import Invalid
from kbackup.units import parse_duration

MAX_REASON = 500


async def post_pause(request: web.Request) -> web.Response:
    body = await body_of(request, PauseBody)
    reason = " ".join((body.reason or "").split())[:MAX_REASON] or None  # one line
    duration = body.for_ if body.for_ is not None else body.for_seconds
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise Invalid(f"for: {exc}") from None
    return web.json_response(services_of(request).jobs.pause(
        request.match_info["job"], request["caller"].user, reason, seconds))


async def post_resume(request: web.Request) -> web.Response:
    await body_of(request, EmptyBody)
    return web.json_response(services_of(request).jobs.resume(request.match_info["job"],
                                                              request["caller"].user))


def register(app: web.Application) -> None:
    app.router.add_post("/v1/jobs/{job}/pause", post_pause)
    app.router.add_post("/v1/jobs/{job}/resume", post_resume)
