"""CSRF tokens for the dashboard's forms: a double-submit cookie.

A page that shows a form calls csrf_token(request) and puts the value in a hidden field named
FIELD; the middleware sets the cookie on the response when the token is new. A POST from a
form is accepted only when the field equals the cookie. Another origin can neither read the
cookie nor make the browser send it (SameSite=Strict), so it cannot forge the pair.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

COOKIE = "kb_csrf"
FIELD = "csrf_token"
_NEW = "csrf_new_token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def csrf_token(request: web.Request) -> str:
    """The token the form on this page must carry (the browser's cookie, or a new one)."""
    current = request.cookies.get(COOKIE, "")
    if len(current) >= 32:
        return current
    if _NEW not in request:
        request[_NEW] = secrets.token_urlsafe(32)
    token: str = request[_NEW]
    return token


def csrf_ok(request: web.Request, submitted: str | None) -> bool:
    """True when a posted form's token matches the browser's cookie."""
    cookie = request.cookies.get(COOKIE, "")
    return bool(submitted) and len(cookie) >= 32 and hmac.compare_digest(
        cookie.encode(), (submitted or "").encode())


async def check_form(request: web.Request) -> dict[str, str]:
    """The posted form's fields, or a 403 when its CSRF token is missing or wrong."""
    form = await request.post()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    if not csrf_ok(request, fields.get(FIELD)):
        raise web.HTTPForbidden(text="form refused: missing or wrong CSRF token"
                                     " (reload the page and try again)")
    return fields


@web.middleware
async def csrf_cookie(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sets the cookie for a token a page handed out on this request."""
    response = await handler(request)
    token = request.get(_NEW)
    if token is not None and not response.prepared:
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                            secure=request.secure)
    return response
