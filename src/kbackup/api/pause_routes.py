"""Pausing a job: POST /v1/jobs/{job}/pause and /resume (admin, like every POST).

A pause is kept in the catalog (who, when, why, until when), so it survives restarts and
reloads. While it is in force the scheduler skips the job's backups and verifications and a
manual run needs {"force": true}; a pause with "for" ends by itself.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from aiohttp import web

from kbackup.api.models import EmptyBody, PauseBody, body_of
from kbackup.api.server import DAEMON, error
from kbackup.units import parse_duration

log = logging.getLogger("kbackup.api")
MAX_REASON = 500


def unknown_job(daemon: Any, name: str) -> web.Response:
    known = ", ".join(sorted(daemon.config.jobs)) or "none configured"
    return error(404, f"no job named {name!r} (jobs: {known})")


def pause_view(pause: dict[str, Any] | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {k: pause[k] for k in ("paused_at", "paused_by", "reason", "until")}


def paused_message(job: str, pause: dict[str, Any]) -> str:
    """One line: why a manual run of a paused job is refused, and what to do."""
    until = f", until {pause['until']}" if pause["until"] else ""
    return (f"job {job} is paused since {pause['paused_at']} by {pause['paused_by']}"
            f" ({pause['reason'] or 'no reason given'}{until}): run it anyway with --force,"
            f" or `kbackupctl resume {job}`")


async def post_pause(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    name = request.match_info["job"]
    body = await body_of(request, PauseBody)
    if name not in daemon.config.jobs:
        return unknown_job(daemon, name)
    reason = " ".join((body.reason or "").split())[:MAX_REASON] or None  # one line
    duration = body.for_ if body.for_ is not None else body.for_seconds
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            return error(400, f"for: {exc}")
    now = daemon.clock.now()
    until = now + timedelta(seconds=seconds) if seconds else None
    user = request["caller"].user
    record = daemon.catalog.set_pause(name, user, reason, until, now)
    log.info("event=job.paused job=%s by=%s reason=%r until=%s", name, user, reason or "",
             record["until"] or "-")
    daemon.monitor.request_evaluation()
    return web.json_response({"job": name, "paused": pause_view(record)})


async def post_resume(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    name = request.match_info["job"]
    await body_of(request, EmptyBody)
    if name not in daemon.config.jobs:
        return unknown_job(daemon, name)
    user = request["caller"].user
    was = daemon.catalog.end_pause(name, user, daemon.clock.now())
    if was is not None:
        log.info("event=job.resumed job=%s by=%s", name, user)
        daemon.monitor.request_evaluation()
    return web.json_response({"job": name, "resumed": was is not None, "was": pause_view(was)})


def register(app: web.Application) -> None:
    app.router.add_post("/v1/jobs/{job}/pause", post_pause)
    app.router.add_post("/v1/jobs/{job}/resume", post_resume)
