"""The dashboard's actions (POST, the admin role: the guard middleware refuses anyone else).

Each one checks the form's CSRF token, calls the service the /v1 API calls, and redirects
(POST-redirect-GET) to a page that shows the outcome in one line. Who did it is recorded as
for the API: the guard logs every POST with the caller's user, deletions and restores keep
the caller in their audit records, a silence its author."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kbackup.api.alerts_routes import silence_terms
from kbackup.api.auth import Caller
from kbackup.api.common import services_of
from kbackup.api.models import RestoreBody, SilenceBody, UnsilenceBody, VerifyBody, checked
from kbackup.errors import KbackupError, Refused
from kbackup.web.csrf import FIELD, check_form
from kbackup.web.render import flash


def see_other(request: web.Request, path: str, **message: str) -> web.Response:
    """303 to `path`; the notice or error (one line) rides in a cookie the next page shows
    once (not in the URL, where a link from anywhere could put words in the page's mouth)."""
    response = web.Response(status=303, headers={"Location": path})
    flash(request, response, message)
    return response


def who(request: web.Request) -> dict[str, Any]:
    caller: Caller = request["caller"]
    return {"user": caller.user, "uid": caller.uid, "pid": caller.pid}


def fields_of(form: dict[str, str], *names: str) -> dict[str, str]:
    """The named fields of a form (the CSRF field and the submit button left out)."""
    return {name: form[name] for name in names if name in form and name != FIELD}


async def run_now(request: web.Request) -> web.Response:
    await check_form(request)
    job = request.match_info["job"]
    try:
        started = services_of(request).jobs.run(job, None, False)
    except KbackupError as exc:
        return see_other(request, "/", error=str(exc))
    what = "joined the running backup" if started["coalesced"] else "started backup"
    return see_other(request, "/", notice=f"{job}: {what} {started['backup_id']}")


async def verify(request: web.Request) -> web.Response:
    form, backup_id = await check_form(request), request.match_info["id"]
    back = f"/backups/{backup_id}"
    try:
        level = checked(VerifyBody, fields_of(form, "level"), "form").level
        started = services_of(request).backups.verify(backup_id, level)
    except KbackupError as exc:
        return see_other(request, back, error=str(exc))
    return see_other(request, back,
                     notice=f"{level} verification started (run {started['run_id']})")


async def delete(request: web.Request) -> web.Response:
    form, backup_id = await check_form(request), request.match_info["id"]
    back = f"/backups/{backup_id}"
    if form.get("confirm", "").strip() != backup_id:
        return see_other(request, back,
                         error=f"not deleted: type the backup id {backup_id} to confirm")
    try:
        await services_of(request).backups.delete(
            backup_id, None, False, False, "deleted from the dashboard", who(request))
    except KbackupError as exc:
        return see_other(request, back, error=str(exc))
    return see_other(request, "/backups", notice=f"backup {backup_id} deleted")


async def restore(request: web.Request) -> web.Response:
    """Into a NEW database only (a destructive plan is refused: in place stays on the CLI)."""
    from kbackup.jobs.restore_plan import RestoreRequest

    form, backup_id = await check_form(request), request.match_info["id"]
    back = f"/backups/{backup_id}"
    target = form.get("to_database", "").strip()
    if not target or form.get("confirm", "").strip() != target:
        return see_other(request, back, error="not restored: type the new database's name twice"
                                     " (the name, then again to confirm)")
    restores = services_of(request).restores
    try:
        body = checked(RestoreBody, {"backup": backup_id, "to_database": target,
                                     **fields_of(form, "component")}, "form")
        plan = await restores.plan(RestoreRequest.from_json(body.model_dump()))
        if plan.destructive:
            raise Refused(f"restore would replace {plan.confirm_word()!r}: the dashboard only"
                          " restores into a new database (use kbackupctl restore)")
        started = restores.start(plan, False, who(request))
    except (KbackupError, ValueError) as exc:  # ValueError: options that do not combine
        return see_other(request, back, error=str(exc))
    return see_other(request, "/audit", notice=f"restore {started['restore_id']} of {backup_id}"
                                      f" into database {target} started")


async def silence(request: web.Request) -> web.Response:
    form = await check_form(request)
    try:
        body = checked(SilenceBody, fields_of(form, "match", "for", "reason"), "form")
        seconds, reason = silence_terms(body)
        services_of(request).health.silence(body.match, seconds, reason,
                                            request["caller"].user)
    except KbackupError as exc:
        return see_other(request, "/alerts", error=str(exc))
    return see_other(request, "/alerts", notice=f"{body.match} silenced for {body.for_}")


async def unsilence(request: web.Request) -> web.Response:
    form = await check_form(request)
    try:
        match = checked(UnsilenceBody, fields_of(form, "match"), "form").match
        services_of(request).health.unsilence(match)
    except KbackupError as exc:
        return see_other(request, "/alerts", error=str(exc))
    return see_other(request, "/alerts", notice=f"{match} unsilenced")


def register(app: web.Application) -> None:
    app.router.add_post("/jobs/{job}/run", run_now)
    app.router.add_post("/backups/{id}/verify", verify)
    app.router.add_post("/backups/{id}/delete", delete)
    app.router.add_post("/backups/{id}/restore", restore)
    app.router.add_post("/alerts/silence", silence)
    app.router.add_post("/alerts/unsilence", unsilence)
