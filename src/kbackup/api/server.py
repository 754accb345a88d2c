"""The aiohttp application on the Unix socket: routes, authorization, JSON errors.

Reads (GET) need the socket group, everything that changes state needs the admin group; the
caller is identified per request with SO_PEERCRED, never by anything the client says.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kbackup.api.auth import ADMIN, Caller, identify, peer_credentials
from kbackup.api.models import (
    MAX_BODY_BYTES,
    BackupsQuery,
    EmptyBody,
    PageQuery,
    PruneBody,
    RestoreBody,
    RunBody,
    RunQuery,
    StorageCheckBody,
    VerifyBody,
    body_of,
    query_of,
)
from kbackup.api.openapi import OPENAPI
from kbackup.runner import RunnerBusy
from kbackup.views import backup_view

if TYPE_CHECKING:
    from kbackup.daemon import Daemon

log = logging.getLogger("kbackup.api")
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Requests are read by aiohttp's parser with room to spare (HANDLER_ARGS), so that the guard,
# not the parser, refuses what is too long, and answers in JSON like everything else. Past
# 64 KiB a line is refused by the parser itself (plain text: no request exists to answer).
MAX_PATH_BYTES = 8192  # the request target, query string included: longer is a 414
MAX_HEADER_BYTES = 8192  # one header's value: longer is a 431
MAX_PATH_PARAM = 200  # one path parameter ({id}, {job}): longer is a 400 naming it
HANDLER_ARGS = {"max_line_size": 65536, "max_field_size": 65536}


def daemon_of(request: web.Request) -> Daemon:
    return request.app[DAEMON]


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "status": status, **extra}, status=status)


def http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown route, wrong method, body too large) in our JSON."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path[:200]} (allowed: {allowed})"
    elif isinstance(exc, web.HTTPNotFound) and exc.text == "404: Not Found":
        message = (f"no such endpoint: {request.method} {request.path[:200]}"
                   " (see GET /v1/openapi.json)")
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = f"request body larger than {MAX_BODY_BYTES} bytes"
    else:
        message = exc.text or exc.reason
    response = error(exc.status, message)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response.headers["Allow"] = exc.headers.get("Allow", "")
    return response


def oversized(request: web.Request) -> web.Response | None:
    """A JSON refusal of a request line, header or path parameter that is too long."""
    if len(request.raw_path) > MAX_PATH_BYTES:
        return error(414, f"request path longer than {MAX_PATH_BYTES} bytes")
    for name, value in request.headers.items():
        if len(value) > MAX_HEADER_BYTES:
            return error(431, f"header {name[:100]} longer than {MAX_HEADER_BYTES} bytes")
    for name, value in request.match_info.items():
        if len(value) > MAX_PATH_PARAM or "\x00" in value:
            return error(400, f"{name}: expected a non-empty string of at most"
                              f" {MAX_PATH_PARAM} characters without NUL")
    return None


def caller_of(request: web.Request) -> Caller:
    daemon = request.app[DAEMON]
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        raise web.HTTPForbidden(text="cannot identify caller")
    pid, uid, gid = peer_credentials(sock)
    return identify(
        pid, uid, gid, daemon.config.daemon.socket_group, daemon.config.daemon.admin_group
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    try:
        refused = oversized(request)
        if refused is not None:
            return refused
        caller = caller_of(request)
    except web.HTTPException as exc:
        return http_error(request, exc)
    except Exception:
        return internal_error(request)
    request["caller"] = caller
    needs_admin = request.method not in ("GET", "HEAD")
    if caller.role is None:
        group = daemon.config.daemon.socket_group or "the daemon's"
        return error(
            403,
            f"user {caller.user} (uid {caller.uid}) is not in group {group}: read access denied",
        )
    if needs_admin and caller.role != ADMIN:
        group = daemon.config.daemon.admin_group or "admin"
        return error(
            403,
            f"user {caller.user} may only read: {request.method} {request.path}"
            f" needs membership in group {group} (or root)",
        )
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = http_error(request, exc)
        else:
            raise
    except Exception:
        response = internal_error(request)
    if needs_admin:
        log.info(
            "event=api.call method=%s path=%s user=%s uid=%d status=%d",
            request.method,
            request.rel_url.raw_path[:200],
            caller.user,
            caller.uid,
            response.status,
        )
    return response


def internal_error(request: web.Request) -> web.Response:
    """A 500 that tells the caller only an id; the daemon's log has that id and the traceback.

    Exception texts can hold internals (paths, SQL, values): they stay in the log."""
    error_id = secrets.token_hex(4)
    log.exception("event=api.error id=%s method=%s path=%s", error_id, request.method,
                  request.rel_url.raw_path[:200])  # as sent: percent-encoded, one line
    return error(500, f"internal error (id {error_id}); see the daemon log",
                 error_id=error_id)


def page(items: list[dict[str, Any]], total: int, query: BackupsQuery | PageQuery) -> Any:
    """A listing's answer: one page of items and how many there are in all."""
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[DAEMON].status())


async def get_jobs(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    jobs = []
    for name, job in sorted(daemon.config.jobs.items()):
        jobs.append(
            {
                "name": name,
                "schedules": [s.model_dump() for s in job.schedules],
                "timezone": job.timezone or daemon.config.daemon.timezone,
                "targets": job.targets,
                "timeout_seconds": job.timeout,
                "sources": [s.describe() for s in job.sources],
                "next_run": daemon.job_status(name)["next_run"],
                "paused": daemon.pause_view(name),
            }
        )
    return web.json_response(jobs)


async def get_backups(request: web.Request) -> web.Response:
    query = query_of(request, BackupsQuery)
    return web.Response(text=daemon_of(request).backups_json(query.job, query.status,
                                                              query.label, query.limit,
                                                              query.offset),
                        content_type="application/json")


async def get_backup(request: web.Request) -> web.Response:
    row = daemon_of(request).catalog.get_backup(request.match_info["id"])
    if row is None:
        return error(
            404, f"no backup with id {request.match_info['id']!r} (see `kbackupctl backups`)"
        )
    view = backup_view(row, daemon_of(request).catalog.last_verification(row["id"]), full=True)
    view["verifications"] = daemon_of(request).catalog.verifications(row["id"])
    return web.json_response(view)


async def post_verify(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    level = (await body_of(request, VerifyBody)).level  # a bad body is a 400 before a 404
    backup_id = request.match_info["id"]
    row = daemon.catalog.get_backup(backup_id)
    if row is None:
        return error(404, f"no backup with id {backup_id!r} (see `kbackupctl backups`)")
    if row["status"] not in ("complete", "partial", "corrupt") or not row["manifest"]:
        return error(409, f"backup {backup_id} is {row['status']}: only complete backups can"
                          " be verified")
    if row["job"] not in daemon.config.jobs:
        return error(409, f"backup {backup_id} belongs to job {row['job']!r}, which is not"
                          " configured here")
    run, coalesced = daemon.submit_verify(row, level, "manual")
    return web.json_response({"run_id": run.id, "backup_id": backup_id, "level": level,
                              "coalesced": coalesced}, status=202)


async def post_run(request: web.Request) -> web.Response:
    from kbackup.api.pause_routes import paused_message, unknown_job

    daemon = request.app[DAEMON]
    name = request.match_info["job"]
    body = await body_of(request, RunBody)
    if name not in daemon.config.jobs:
        return unknown_job(daemon, name)
    pause = daemon.catalog.active_pause(name, daemon.clock.now())
    if pause is not None and not body.force:
        return error(409, paused_message(name, pause))
    try:
        run, coalesced = daemon.runner.submit_backup(name, "manual", label=body.label)
    except RunnerBusy as exc:
        return error(409, str(exc))
    return web.json_response(
        {"run_id": run.id, "backup_id": run.id, "coalesced": coalesced, "label": run.label},
        status=202
    )


async def post_restore(request: web.Request) -> web.Response:
    from kbackup.jobs.restore_plan import RestoreRefused, RestoreRequest, make_plan

    daemon = daemon_of(request)
    body = await body_of(request, RestoreBody)
    try:
        restore = RestoreRequest.from_json(body.model_dump())
        plan = await make_plan(daemon.config, daemon.catalog, restore)
    except ValueError as exc:
        return error(400, f"bad restore request: {exc}")
    except RestoreRefused as exc:
        return error(409, str(exc))
    if restore.dry_run:
        return web.json_response({"plan": plan.as_dict(), "dry_run": True})
    if plan.destructive and not restore.yes:
        return error(409, f"restore replaces {plan.confirm_word()!r}: confirm with yes=true"
                          " (kbackupctl asks you to type the name, or takes --yes)")
    caller: Caller = request["caller"]
    try:
        run, _ = daemon.submit_restore(plan, {"user": caller.user, "uid": caller.uid,
                                              "pid": caller.pid})
    except RunnerBusy as exc:
        return error(409, str(exc))
    return web.json_response({"run_id": run.id, "restore_id": run.id, "plan": plan.as_dict()},
                             status=202)


async def get_keys(request: web.Request) -> web.Response:
    """Per job: what encryption needs (passphrase source, recipients) and whether it is usable."""
    import asyncio

    from kbackup.crypto import KeyProblem, check_job_keys

    daemon = daemon_of(request)
    report = []
    for name, job in sorted(daemon.config.jobs.items()):
        try:
            item = await asyncio.to_thread(check_job_keys, daemon.config, job)
            item["ok"] = True
        except KeyProblem as exc:
            item = {"job": name, "mode": job.encryption.mode, "ok": False, "problem": str(exc)}
        report.append(item)
    return web.json_response(report)


async def get_restores(request: web.Request) -> web.Response:
    query = query_of(request, PageQuery)
    catalog = daemon_of(request).catalog
    return web.json_response(page(catalog.restores(query.job, query.limit, query.offset),
                                  catalog.count_restores(query.job), query))


async def post_prune(request: web.Request) -> web.Response:
    from kbackup.catalog import utcnow
    from kbackup.jobs.prune import prune_job

    daemon = daemon_of(request)
    name = request.match_info["job"]
    body = await body_of(request, PruneBody)
    job = daemon.config.jobs.get(name)
    if job is None:
        return error(404, f"no job named {name!r}")
    report = await prune_job(daemon.config, job, daemon.storages, daemon.catalog,
                             daemon.clock.now() if daemon.clock else utcnow(), body.dry_run)
    return web.json_response(report)


async def post_storage_check(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    target = (await body_of(request, StorageCheckBody)).target
    try:
        return web.json_response(await daemon.check_storage(target))
    except KeyError:
        known = ", ".join(sorted(daemon.storages)) or "none"
        return error(404, f"no storage target named {target!r} (targets: {known})")


async def get_runs(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    query = query_of(request, PageQuery)
    runs = daemon.catalog.runs(query.job, query.limit, query.offset)
    for run in runs:
        active = daemon.runner.find(run["id"])
        if active:
            run["progress"] = active.progress.as_dict()
    return web.json_response(page(runs, daemon.catalog.count_runs(query.job), query))


async def get_run(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    run_id = request.match_info["id"]
    wait = min(query_of(request, RunQuery).wait, 10.0)
    run = daemon.catalog.get_run(run_id)
    if run is None:
        return error(404, f"no run with id {run_id!r}")
    active = daemon.runner.find(run_id)
    if active:
        # ?wait=SECONDS: answer as soon as the run ends (or after SECONDS), so a waiting
        # client learns the end at once instead of at its next poll.
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await active.done.wait()
            run = daemon.catalog.get_run(run_id) or run
        if not active.done.is_set():
            run["progress"] = active.progress.as_dict()
    return web.json_response(run)


async def post_reload(request: web.Request) -> web.Response:
    await body_of(request, EmptyBody)
    problem = await request.app[DAEMON].reload()
    if problem:
        return error(422, "config rejected, the previous config keeps running:\n" + problem)
    return web.json_response({"reloaded": True})


async def post_rescan(request: web.Request) -> web.Response:
    await body_of(request, EmptyBody)
    return web.json_response(await request.app[DAEMON].rescan())


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES,
                          handler_args=HANDLER_ARGS)
    app[DAEMON] = daemon
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/jobs", get_jobs)
    app.router.add_post("/v1/jobs/{job}/run", post_run)
    app.router.add_post("/v1/jobs/{job}/prune", post_prune)
    app.router.add_get("/v1/backups", get_backups)
    app.router.add_get("/v1/backups/{id}", get_backup)
    app.router.add_post("/v1/backups/{id}/verify", post_verify)
    app.router.add_get("/v1/runs", get_runs)
    app.router.add_post("/v1/restores", post_restore)
    app.router.add_get("/v1/restores", get_restores)
    app.router.add_get("/v1/keys", get_keys)
    app.router.add_get("/v1/runs/{id}", get_run)
    app.router.add_post("/v1/reload", post_reload)
    app.router.add_post("/v1/catalog/rescan", post_rescan)
    app.router.add_post("/v1/storage/check", post_storage_check)
    app.router.add_get("/v1/openapi.json", get_openapi)
    from kbackup.api.alerts_routes import register  # /v1/health, /v1/alerts*, /metrics

    register(app)
    from kbackup.api.delete_routes import register as register_delete  # DELETE backup, audit

    register_delete(app)

    from kbackup.api import pause_routes  # /v1/jobs/{job}/pause, /resume

    pause_routes.register(app)
    return app


def bind_socket(path: Path, group: str | None) -> socket.socket:
    """A listening socket at path, mode 0660, group `group`; refuses to steal a live one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a daemon that died
        else:
            raise OSError(f"another kbackupd is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
            if os.stat(path).st_gid != gid:  # skip the syscall when the group already fits
                os.chown(path, -1, gid)
        except KeyError:
            log.warning("event=socket.group_missing group=%s socket=%s", group, path)
        except PermissionError as exc:
            log.warning("event=socket.chown_failed group=%s error=%r", group, str(exc))
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def start_api(daemon: Daemon) -> web.AppRunner:
    app = build_app(daemon)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = bind_socket(daemon.config.daemon.socket, daemon.config.daemon.socket_group)
    site = web.SockSite(runner, sock)
    await site.start()
    return runner
