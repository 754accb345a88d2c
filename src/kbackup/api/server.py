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
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from kbackup.api.auth import ADMIN, Caller, identify, peer_credentials
from kbackup.api.openapi import OPENAPI
from kbackup.runner import RunnerBusy
from kbackup.views import backup_view

if TYPE_CHECKING:
    from kbackup.daemon import Daemon

log = logging.getLogger("kbackup.api")
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def daemon_of(request: web.Request) -> Daemon:
    return request.app[DAEMON]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


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
    caller = caller_of(request)
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
            return error(exc.status, exc.text or exc.reason)
        raise
    except Exception as exc:
        log.exception("event=api.error path=%s", request.path)
        return error(500, f"internal error: {exc}")
    if needs_admin:
        log.info(
            "event=api.call method=%s path=%s user=%s uid=%d status=%d",
            request.method,
            request.path,
            caller.user,
            caller.uid,
            response.status,
        )
    return response


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
                "sources": [{"name": s.name, "kind": "postgres"} for s in job.postgres]
                + [{"name": s.name, "kind": "files", "path": str(s.path)} for s in job.files],
                "next_run": daemon.job_status(name)["next_run"],
                "paused": daemon.pause_view(name),
            }
        )
    return web.json_response(jobs)


async def get_backups(request: web.Request) -> web.Response:
    job = request.query.get("job")
    label = request.query.get("label")  # a schedule tag or a user label
    return web.json_response(request.app[DAEMON].backups(job, label=label))


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
    backup_id = request.match_info["id"]
    row = daemon.catalog.get_backup(backup_id)
    if row is None:
        return error(404, f"no backup with id {backup_id!r} (see `kbackupctl backups`)")
    if row["status"] not in ("complete", "partial", "corrupt") or not row["manifest"]:
        return error(409, f"backup {backup_id} is {row['status']}: only complete backups can"
                          " be verified")
    body = await request.json() if request.can_read_body else {}
    level = body.get("level", "checksum")
    if level not in ("checksum", "structure", "restore-test"):
        return error(400, f"unknown level {level!r}; expected checksum, structure or"
                          " restore-test")
    if row["job"] not in daemon.config.jobs:
        return error(409, f"backup {backup_id} belongs to job {row['job']!r}, which is not"
                          " configured here")
    run, coalesced = daemon.submit_verify(row, level, "manual")
    return web.json_response({"run_id": run.id, "backup_id": backup_id, "level": level,
                              "coalesced": coalesced}, status=202)


async def post_run(request: web.Request) -> web.Response:
    from kbackup.api.pause_routes import json_body, paused_message
    from kbackup.labels import check_label

    daemon = request.app[DAEMON]
    name = request.match_info["job"]
    if name not in daemon.config.jobs:
        known = ", ".join(sorted(daemon.config.jobs)) or "none configured"
        return error(404, f"no job named {name!r} (jobs: {known})")
    body = await json_body(request)  # {"label": NAME, "force": true}, both optional
    label = body.get("label")
    if label is not None:
        try:
            check_label(label)
        except ValueError as exc:
            return error(400, str(exc))
    pause = daemon.catalog.active_pause(name, daemon.clock.now())
    if pause is not None and body.get("force") is not True:
        return error(409, paused_message(name, pause))
    try:
        run, coalesced = daemon.runner.submit_backup(name, "manual", label=label)
    except RunnerBusy as exc:
        return error(409, str(exc))
    return web.json_response(
        {"run_id": run.id, "backup_id": run.id, "coalesced": coalesced, "label": run.label},
        status=202
    )


async def post_restore(request: web.Request) -> web.Response:
    from kbackup.jobs.restore_plan import RestoreRefused, RestoreRequest, make_plan

    daemon = daemon_of(request)
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        restore = RestoreRequest.from_json(body)
        plan = await make_plan(daemon.config, daemon.catalog, restore)
    except ValueError as exc:
        return error(400, f"bad restore request: {exc}")
    except (RestoreRefused, TypeError) as exc:
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
    return web.json_response(daemon_of(request).catalog.restores(request.query.get("job")))


async def post_prune(request: web.Request) -> web.Response:
    from kbackup.catalog import utcnow
    from kbackup.jobs.prune import prune_job

    daemon = daemon_of(request)
    name = request.match_info["job"]
    job = daemon.config.jobs.get(name)
    if job is None:
        return error(404, f"no job named {name!r}")
    body = await request.json() if request.can_read_body else {}
    report = await prune_job(daemon.config, job, daemon.storages, daemon.catalog,
                             daemon.clock.now() if daemon.clock else utcnow(),
                             bool(body.get("dry_run", False)))
    return web.json_response(report)


async def post_storage_check(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    body = await request.json() if request.can_read_body else {}
    target = body.get("target")
    try:
        return web.json_response(await daemon.check_storage(target))
    except KeyError:
        known = ", ".join(sorted(daemon.storages)) or "none"
        return error(404, f"no storage target named {target!r} (targets: {known})")


async def get_runs(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    runs = daemon.catalog.runs(request.query.get("job"), int(request.query.get("limit", 50)))
    for run in runs:
        active = daemon.runner.find(run["id"])
        if active:
            run["progress"] = active.progress.as_dict()
    return web.json_response(runs)


async def get_run(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    run_id = request.match_info["id"]
    run = daemon.catalog.get_run(run_id)
    if run is None:
        return error(404, f"no run with id {run_id!r}")
    active = daemon.runner.find(run_id)
    if active:
        # ?wait=SECONDS: answer as soon as the run ends (or after SECONDS), so a waiting
        # client learns the end at once instead of at its next poll.
        wait = min(float(request.query.get("wait", 0) or 0), 10.0)
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await active.done.wait()
            run = daemon.catalog.get_run(run_id) or run
        if not active.done.is_set():
            run["progress"] = active.progress.as_dict()
    return web.json_response(run)


async def post_reload(request: web.Request) -> web.Response:
    problem = await request.app[DAEMON].reload()
    if problem:
        return error(422, "config rejected, the previous config keeps running:\n" + problem)
    return web.json_response({"reloaded": True})


async def post_rescan(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DAEMON].rescan())


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[guard])
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
