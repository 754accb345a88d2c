"""Health, alert and metrics routes, registered into the API app by `register(app)`.

GET routes need the read role, POST routes the admin role: the app's guard middleware decides
by method, so these handlers only do their job.
"""

from __future__ import annotations

from aiohttp import web

from kbackup import metrics
from kbackup.api.common import services_of
from kbackup.api.models import (
    AlertTestBody,
    JobQuery,
    SilenceBody,
    UnsilenceBody,
    body_of,
    query_of,
)
from kbackup.errors import Invalid
from kbackup.units import parse_duration

MAX_SILENCE_SECONDS = 3650 * 86400


async def get_health(request: web.Request) -> web.Response:
    """Overall and per-check health; ?job=NAME narrows to one job (and its targets)."""
    job = query_of(request, JobQuery).job
    return web.json_response(services_of(request).health.health(job))


async def get_alerts(request: web.Request) -> web.Response:
    return web.json_response(services_of(request).health.alerts())


async def post_silence(request: web.Request) -> web.Response:
    body = await body_of(request, SilenceBody)
    seconds, reason = silence_terms(body)
    return web.json_response(services_of(request).health.silence(body.match, seconds, reason,
                                                                  request["caller"].user))


def silence_terms(body: SilenceBody) -> tuple[float, str]:
    """How long (seconds) and why: Invalid naming the field (API and dashboard share it)."""
    reason = body.reason.strip()
    try:
        seconds = parse_duration(body.for_)
    except ValueError as exc:
        raise Invalid(f"for: {exc}") from None
    if seconds > MAX_SILENCE_SECONDS:  # "9999999999w" would overflow a datetime
        raise Invalid("for: expected a duration of at most 3650d")
    if not reason:
        raise Invalid("reason: say why (it is shown with the silence)")
    return seconds, reason


async def post_unsilence(request: web.Request) -> web.Response:
    match = (await body_of(request, UnsilenceBody)).match
    return web.json_response(services_of(request).health.unsilence(match))


async def post_test(request: web.Request) -> web.Response:
    channel = (await body_of(request, AlertTestBody)).channel
    return web.json_response(await services_of(request).health.test(channel or None))


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(body=services_of(request).health.metrics_text().encode(),
                        headers={"Content-Type": metrics.CONTENT_TYPE})


def register(app: web.Application) -> None:
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/alerts", get_alerts)
    app.router.add_post("/v1/alerts/silence", post_silence)
    app.router.add_post("/v1/alerts/unsilence", post_unsilence)
    app.router.add_post("/v1/alerts/test", post_test)
    app.router.add_get("/metrics", get_metrics)
