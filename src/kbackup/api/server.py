"""The aiohttp application on the Unix socket (and the [web] TCP listener): routes,
authorization, JSON errors.

Reads (GET) need the socket group, everything that changes state needs the admin group; the
caller is identified per request with SO_PEERCRED, never by anything the client says. On TCP
the caller is a bearer token or a web session with its role (api/auth.py); the browser
safeguards (Host, Origin, security headers: web/guard.py) apply on both.
"""

from __future__ import annotations

import grp
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from kbackup.api import (
    access_routes,
    alerts_routes,
    delete_routes,
    pause_routes,
    report_routes,
    signing_routes,
    sources_routes,
)
from kbackup.api.auth import (
    ADMIN,
    Caller,
    identify,
    is_unix,
    peer_credentials,
    remote_caller,
)
from kbackup.api.common import SERVICES, error, page, services_of
from kbackup.api.listener import TcpListener
from kbackup.api.models import (
    MAX_BODY_BYTES,
    BackupsQuery,
    EmptyBody,
    PageQuery,
    PruneBody,
    RescanBody,
    RestoreBody,
    RunBody,
    RunQuery,
    StorageCheckBody,
    VerifyBody,
    body_of,
    query_of,
)
from kbackup.api.openapi import OPENAPI
from kbackup.errors import (
    ConfigError,
    Invalid,
    KbackupError,
    NotFound,
    Refused,
    StorageError,
    Throttled,
    Unauthenticated,
)
from kbackup.storage.remote import TransientError
from kbackup.web import login
from kbackup.web.app import add_dashboard
from kbackup.web.guard import safeguard, security_headers

if TYPE_CHECKING:
    from kbackup.services import Services

log = logging.getLogger("kbackup.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Requests are read by aiohttp's parser with room to spare (HANDLER_ARGS), so that the guard,
# not the parser, refuses what is too long, and answers in JSON like everything else. Past
# 64 KiB a line is refused by the parser itself (plain text: no request exists to answer).
MAX_PATH_BYTES = 8192  # the request target, query string included: longer is a 414
MAX_HEADER_BYTES = 8192  # one header's value: longer is a 431
MAX_PATH_PARAM = 200  # one path parameter ({id}, {job}): longer is a 400 naming it
HANDLER_ARGS = {"max_line_size": 65536, "max_field_size": 65536}


# The one place that gives an error class its HTTP status: the first class of the exception's
# MRO found here wins (RestoreRefused is a Refused: 409). Another KbackupError, or any other
# exception, is unexpected: a 500 naming an error id (internal_error).
STATUS: dict[type[KbackupError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    NotFound: 404,
    Refused: 409,
    ConfigError: 422,
    TransientError: 503,
    StorageError: 502,
    Throttled: 429,
}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an expected error, else None (a 500)."""
    return next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), None)


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


PUBLIC = ("/login", "/logout")  # answered without a caller: the login page logs one in
PUBLIC_PREFIX = "/static/"


def caller_of(request: web.Request) -> Caller:
    """Who is calling: peer credentials on the Unix socket, a token or a session on TCP."""
    if not is_unix(request):
        return remote_caller(request, services_of(request).access)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        raise web.HTTPForbidden(text="cannot identify caller")
    pid, uid, gid = peer_credentials(sock)
    return identify(pid, uid, gid, *services_of(request).admin.access())


def refusal(request: web.Request, caller: Caller) -> web.Response | None:
    """The 403 of a caller without the role the request needs, else None."""
    socket_group, admin_group = services_of(request).admin.access()
    if caller.role is None:
        group = socket_group or "the daemon's"
        return error(
            403,
            f"user {caller.user} (uid {caller.uid}) is not in group {group}: read access denied",
        )
    if request.method in ("GET", "HEAD") or caller.role == ADMIN:
        return None
    if caller.via != "socket":
        return error(403, f"{caller.user} has the viewer role: {request.method}"
                          f" {request.path[:200]} needs the admin role")
    return error(
        403,
        f"user {caller.user} may only read: {request.method} {request.path}"
        f" needs membership in group {admin_group or 'admin'} (or root)",
    )


def unidentified(request: web.Request, exc: KbackupError) -> web.Response:
    """401 (with WWW-Authenticate), a page's redirect to the login, or 429 (Retry-After)."""
    if isinstance(exc, Throttled):
        response = error(429, str(exc))
        response.headers["Retry-After"] = str(ceil(exc.retry_after))
        return response
    if request.method == "GET" and not request.path.startswith(("/v1/", "/metrics")):
        return web.Response(status=303, headers={
            "Location": f"/login?next={quote(request.path_qs, safe='')}"})
    response = error(401, str(exc))
    response.headers["WWW-Authenticate"] = 'Bearer realm="kbackupd"'
    return response


async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer; its errors as JSON answers with their status (STATUS)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return http_error(request, exc)
        raise
    except KbackupError as exc:
        status = status_of(exc)
        return internal_error(request) if status is None else error(status, str(exc))
    except Exception:
        return internal_error(request)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    caller: Caller | None = None
    try:
        refused = oversized(request)
        if refused is not None:
            return refused
        if request.path not in PUBLIC and not request.path.startswith(PUBLIC_PREFIX):
            caller = caller_of(request)
    except (Unauthenticated, Throttled) as exc:
        return unidentified(request, exc)
    except web.HTTPException as exc:
        return http_error(request, exc)
    except Exception:
        return internal_error(request)
    if caller is None:
        return await answer(request, handler)
    request["caller"] = caller
    refused = refusal(request, caller)
    if refused is not None:
        return refused
    response = await answer(request, handler)
    if request.method not in ("GET", "HEAD"):
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


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(services_of(request).health.status())


async def get_jobs(request: web.Request) -> web.Response:
    return web.json_response(services_of(request).jobs.listing())


async def get_backups(request: web.Request) -> web.Response:
    query = query_of(request, BackupsQuery)
    text = services_of(request).backups.listing_json(query.job, query.status, query.label,
                                                     query.limit, query.offset)
    return web.Response(text=text, content_type="application/json")


async def get_backup(request: web.Request) -> web.Response:
    return web.json_response(services_of(request).backups.show(request.match_info["id"]))


async def post_verify(request: web.Request) -> web.Response:
    level = (await body_of(request, VerifyBody)).level  # a bad body is a 400 before a 404
    return web.json_response(
        services_of(request).backups.verify(request.match_info["id"], level), status=202)


async def post_run(request: web.Request) -> web.Response:
    body = await body_of(request, RunBody)
    return web.json_response(
        services_of(request).jobs.run(request.match_info["job"], body.label, body.force),
        status=202)


async def post_restore(request: web.Request) -> web.Response:
    from kbackup.jobs.restore_plan import RestoreRequest

    restores = services_of(request).restores
    body = await body_of(request, RestoreBody)
    try:
        restore = RestoreRequest.from_json(body.model_dump())
        plan = await restores.plan(restore)
    except ValueError as exc:
        raise Invalid(f"bad restore request: {exc}") from None
    if restore.dry_run:
        return web.json_response({"plan": plan.as_dict(), "dry_run": True})
    caller: Caller = request["caller"]
    started = restores.start(plan, restore.yes, {"user": caller.user, "uid": caller.uid,
                                                 "pid": caller.pid})
    return web.json_response(started, status=202)


async def get_keys(request: web.Request) -> web.Response:
    """Per job: what encryption needs (passphrase source, recipients) and whether it is usable."""
    return web.json_response(await services_of(request).jobs.keys())


async def get_restores(request: web.Request) -> web.Response:
    query = query_of(request, PageQuery)
    items, total = services_of(request).restores.listing(query.job, query.limit, query.offset)
    return web.json_response(page(items, total, query.limit, query.offset))


async def post_prune(request: web.Request) -> web.Response:
    body = await body_of(request, PruneBody)
    return web.json_response(
        await services_of(request).jobs.prune(request.match_info["job"], body.dry_run))


async def post_storage_check(request: web.Request) -> web.Response:
    target = (await body_of(request, StorageCheckBody)).target
    return web.json_response(await services_of(request).storage.check(target))


async def get_runs(request: web.Request) -> web.Response:
    query = query_of(request, PageQuery)
    items, total = services_of(request).runs.listing(query.job, query.limit, query.offset)
    return web.json_response(page(items, total, query.limit, query.offset))


async def get_run(request: web.Request) -> web.Response:
    wait = min(query_of(request, RunQuery).wait, 10.0)
    return web.json_response(await services_of(request).runs.get(request.match_info["id"],
                                                                 wait))


async def post_reload(request: web.Request) -> web.Response:
    await body_of(request, EmptyBody)
    await services_of(request).admin.reload()
    return web.json_response({"reloaded": True})


async def post_rescan(request: web.Request) -> web.Response:
    body = await body_of(request, RescanBody)
    return web.json_response(await services_of(request).backups.rescan(body.all_hosts))


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def build_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[safeguard, guard],
                          client_max_size=MAX_BODY_BYTES, handler_args=HANDLER_ARGS)
    app[SERVICES] = services
    app.on_response_prepare.append(security_headers)
    login.register(app)  # /login, /logout
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
    alerts_routes.register(app)  # /v1/health, /v1/alerts*, /metrics
    delete_routes.register(app)  # DELETE /v1/backups/{id}, /v1/audit
    pause_routes.register(app)  # /v1/jobs/{job}/pause, /resume
    sources_routes.register(app)  # /v1/sources/check
    report_routes.register(app)  # /v1/report, /v1/report/send
    signing_routes.register(app)  # /v1/keys/signing, /import, /rotate
    access_routes.register(app)  # /v1/tokens, /v1/web/users
    add_dashboard(app)  # the pages at /, /jobs, /backups...: kbackup/web (+ the CSRF cookie)
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


async def start_api(services: Services, path: Path) -> tuple[web.AppRunner, TcpListener]:
    """Serve the API for `services` on a Unix socket at path (group: the socket group) and,
    when [web] listen is set, on TCP; the listener follows the config at each reload."""
    app = build_app(services)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = bind_socket(path, services.admin.access()[0])
    site = web.SockSite(runner, sock)
    await site.start()
    listener = TcpListener(runner)
    try:
        await listener.apply(services.admin.web())
    except OSError:
        await runner.cleanup()
        raise
    return runner, listener
