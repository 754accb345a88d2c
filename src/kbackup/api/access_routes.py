"""API tokens and web users: /v1/tokens and /v1/web/users (admin, Unix socket only).

Managing who may call over TCP is refused over TCP itself, even to an admin token: a leaked
token must not be able to mint more tokens or users. The secret of a new token is in the
answer to its creation only; logs name the token, never its value.
"""

from __future__ import annotations

import logging

from aiohttp import web

from kbackup.api.auth import Caller, is_unix
from kbackup.api.common import error, services_of
from kbackup.api.models import EmptyBody, TokenBody, WebUserBody, body_of
from kbackup.errors import Invalid
from kbackup.units import parse_duration

log = logging.getLogger("kbackup.api")


def socket_only(request: web.Request) -> web.Response | None:
    if is_unix(request):
        return None
    return error(403, "tokens and web users are managed on the daemon's Unix socket only"
                      " (kbackupctl on the server)")


async def get_tokens(request: web.Request) -> web.Response:
    refused = socket_only(request)
    return refused or web.json_response(
        {"items": services_of(request).access.tokens.listing()})


async def post_token(request: web.Request) -> web.Response:
    if (refused := socket_only(request)) is not None:
        return refused
    body = await body_of(request, TokenBody)
    lifetime = None
    if body.expires is not None:
        try:
            lifetime = parse_duration(body.expires)
        except ValueError as exc:
            raise Invalid(f"expires: {exc}") from None
    token, view = services_of(request).access.tokens.create(body.name, body.role, lifetime)
    caller: Caller = request["caller"]
    log.info("event=token.created name=%s role=%s expires=%s by=%s", body.name, body.role,
             view["expires"], caller.user)
    return web.json_response({**view, "token": token}, status=201)


async def post_revoke(request: web.Request) -> web.Response:
    if (refused := socket_only(request)) is not None:
        return refused
    await body_of(request, EmptyBody)
    name = request.match_info["name"]
    view = services_of(request).access.tokens.revoke(name)
    log.info("event=token.revoked name=%s by=%s", name, request["caller"].user)
    return web.json_response(view)


async def get_users(request: web.Request) -> web.Response:
    refused = socket_only(request)
    return refused or web.json_response(
        {"items": services_of(request).access.users.listing()})


async def post_user(request: web.Request) -> web.Response:
    if (refused := socket_only(request)) is not None:
        return refused
    body = await body_of(request, WebUserBody)
    access = services_of(request).access
    view = await access.users.add(body.name, body.role, body.password, body.replace)
    access.sessions.end_user(body.name)  # a new password ends the old sessions
    log.info("event=web.user_added name=%s role=%s by=%s", body.name, body.role,
             request["caller"].user)
    return web.json_response(view, status=201)


async def delete_user(request: web.Request) -> web.Response:
    if (refused := socket_only(request)) is not None:
        return refused
    name = request.match_info["name"]
    view = services_of(request).access.remove_user(name)
    log.info("event=web.user_removed name=%s by=%s", name, request["caller"].user)
    return web.json_response(view)


def register(app: web.Application) -> None:
    app.router.add_get("/v1/tokens", get_tokens)
    app.router.add_post("/v1/tokens", post_token)
    app.router.add_post("/v1/tokens/{name}/revoke", post_revoke)
    app.router.add_get("/v1/web/users", get_users)
    app.router.add_post("/v1/web/users", post_user)
    app.router.add_delete("/v1/web/users/{name}", delete_user)
