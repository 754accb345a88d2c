"""The report (kbackup.report): GET /v1/report?since=7d (read) answers it as JSON; POST
/v1/report/send {"channel", "since"} (admin) sends it through an alert channel now, as its
digest would (a way to try a channel's digest)."""

from __future__ import annotations

from aiohttp import web

from kbackup.api.common import services_of
from kbackup.api.models import ReportQuery, ReportSendBody, body_of, query_of
from kbackup.errors import Invalid
from kbackup.units import parse_duration

MAX_WINDOW = 3650 * 86400


def window(value: str | int) -> float:
    """Seconds of a `since`; Invalid naming the field."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise Invalid(f"since: {exc}") from None
    if seconds > MAX_WINDOW:
        raise Invalid("since: expected a duration of at most 3650d")
    return seconds


async def get_report(request: web.Request) -> web.Response:
    since = query_of(request, ReportQuery).since
    return web.json_response(services_of(request).reports.report(window(since)))


async def post_report_send(request: web.Request) -> web.Response:
    body = await body_of(request, ReportSendBody)
    return web.json_response(await services_of(request).reports.send(body.channel,
                                                                      window(body.since)))


def register(app: web.Application) -> None:
    app.router.add_get("/v1/report", get_report)
    app.router.add_post("/v1/report/send", post_report_send)
