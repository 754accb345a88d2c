"""Health, alert and metrics routes, registered into the API app by `register(app)`.

GET routes need the read role, POST routes the admin role: the app's guard middleware decides
by method, so these handlers only do their job.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kbackup import metrics
from kbackup.api.models import (
    AlertTestBody,
    JobQuery,
    SilenceBody,
    UnsilenceBody,
    body_of,
    query_of,
)
from kbackup.api.server import DAEMON, error
from kbackup.units import parse_duration

MAX_SILENCE_SECONDS = 3650 * 86400


def _monitor(request: web.Request) -> Any:
    return request.app[DAEMON].monitor


async def get_health(request: web.Request) -> web.Response:
    """Overall and per-check health; ?job=NAME narrows to one job (and its targets)."""
    monitor = _monitor(request)
    job = query_of(request, JobQuery).job
    if job and job not in request.app[DAEMON].config.jobs:
        return error(404, f"no job named {job!r}")
    return web.json_response({"job": job, **monitor.health(job)})


async def get_alerts(request: web.Request) -> web.Response:
    return web.json_response(_monitor(request).manager.listing())


async def post_silence(request: web.Request) -> web.Response:
    body = await body_of(request, SilenceBody)
    match, reason = body.match, body.reason.strip()
    try:
        seconds = parse_duration(body.for_)
    except ValueError as exc:
        return error(400, f"for: {exc}")
    if seconds > MAX_SILENCE_SECONDS:  # "9999999999w" would overflow a datetime
        return error(400, "for: expected a duration of at most 3650d")
    if not reason:
        return error(400, "reason: say why (it is shown with the silence)")
    try:
        silence = _monitor(request).manager.silence(match, seconds, reason,
                                                    request["caller"].user)
    except ValueError as exc:
        return error(404, str(exc))
    return web.json_response(silence)


async def post_unsilence(request: web.Request) -> web.Response:
    match = (await body_of(request, UnsilenceBody)).match
    if not _monitor(request).manager.unsilence(match):
        return error(404, f"no active silence for {match!r} (see kbackupctl alerts)")
    return web.json_response({"match": match, "unsilenced": True})


async def post_test(request: web.Request) -> web.Response:
    channel = (await body_of(request, AlertTestBody)).channel
    try:
        results = await _monitor(request).manager.test(channel or None)
    except KeyError as exc:
        return error(404, str(exc.args[0]))
    return web.json_response({"results": results})


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(body=_monitor(request).metrics_text().encode(),
                        headers={"Content-Type": metrics.CONTENT_TYPE})


def register(app: web.Application) -> None:
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/alerts", get_alerts)
    app.router.add_post("/v1/alerts/silence", post_silence)
    app.router.add_post("/v1/alerts/unsilence", post_unsilence)
    app.router.add_post("/v1/alerts/test", post_test)
    app.router.add_get("/metrics", get_metrics)
