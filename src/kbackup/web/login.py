"""GET/POST /login and POST /logout: web users' sessions on the TCP listener.

On the Unix socket nobody logs in (SO_PEERCRED, through the ssh tunnel, already says who is
there), so /login sends the browser to the dashboard. On TCP a good name and password start a
session (access/sessions.py) held in a cookie that JavaScript cannot read (HttpOnly), that is
sent over TLS only (Secure, when the listener has TLS) and never with a request another site
starts (SameSite=Strict). Failures are throttled per name and per address (access/throttle.py)
and answered 429 with Retry-After once too many; passwords never reach a log.
"""

from __future__ import annotations

import logging
from functools import cache
from math import ceil
from typing import TYPE_CHECKING

from aiohttp import web

from kbackup.access import Access
from kbackup.api.auth import SESSION_COOKIE, is_unix
from kbackup.api.common import services_of
from kbackup.web.csrf import check_form, csrf_token

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger("kbackup.web")


@cache
def template() -> jinja2.Template:
    """login.html, autoescaped; jinja2 is imported at the first login page, not at start."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("kbackup.web", "templates"),
                             autoescape=True)
    return env.get_template("login.html")


def local_path(target: str | None) -> str:
    """Where to go after the login: a path of this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def page(request: web.Request, status: int = 200, message: str | None = None,
         user: str = "", target: str = "/") -> web.Response:
    text = template().render(csrf=csrf_token(request), next=local_path(target),
                             message=message, user=user)
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def get_login(request: web.Request) -> web.StreamResponse:
    target = local_path(request.query.get("next"))
    if is_unix(request):
        raise web.HTTPSeeOther(target)  # the socket's peer is already known
    return page(request, target=target)


async def post_login(request: web.Request) -> web.StreamResponse:
    if is_unix(request):
        raise web.HTTPSeeOther("/")
    fields = await check_form(request)
    user, password = fields.get("user", "")[:200], fields.get("password", "")
    target = local_path(fields.get("next"))
    access: Access = services_of(request).access
    keys = (f"user:{user}", f"ip:{request.remote}")
    wait = access.logins.wait(*keys)
    if wait > 0:
        log.warning("event=web.login_throttled user=%r from=%s", user, request.remote)
        response = page(request, 429, f"Too many failed logins: try again in {ceil(wait)} s.",
                        user, target)
        response.headers["Retry-After"] = str(ceil(wait))
        return response
    role = await access.users.check(user, password)
    if role is None:
        access.logins.failed(*keys)
        log.warning("event=web.login_failed user=%r from=%s", user, request.remote)
        return page(request, 401, "Wrong user name or password.", user, target)
    access.logins.forget(keys[0])
    lifetime = services_of(request).admin.web().session_lifetime
    response = web.HTTPSeeOther(target)
    response.set_cookie(SESSION_COOKIE, access.sessions.create(user, lifetime), path="/",
                        max_age=int(lifetime), httponly=True, secure=request.secure,
                        samesite="Strict")
    log.info("event=web.login user=%s role=%s from=%s", user, role, request.remote)
    return response


async def post_logout(request: web.Request) -> web.StreamResponse:
    await check_form(request)
    sid = request.cookies.get(SESSION_COOKIE)
    access: Access = services_of(request).access
    if sid:
        user = access.sessions.user(sid)
        access.sessions.end(sid)
        log.info("event=web.logout user=%s from=%s", user, request.remote)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def register(app: web.Application) -> None:
    app.router.add_get("/login", get_login)
    app.router.add_post("/login", post_login)
    app.router.add_post("/logout", post_logout)
