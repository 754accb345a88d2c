"""The manifest signing key (kbackup.signing): GET /v1/keys/signing (its public half and the
trusted keyring: public keys, so read), POST /v1/keys/signing/import and /rotate (admin, like
every POST)."""

from __future__ import annotations

from aiohttp import web

from kbackup.api.common import services_of
from kbackup.api.models import EmptyBody, SigningKeyBody, body_of


async def get_signing(request: web.Request) -> web.Response:
    return web.json_response(await services_of(request).signing.describe())


async def post_import(request: web.Request) -> web.Response:
    body = await body_of(request, SigningKeyBody)
    return web.json_response(await services_of(request).signing.import_key(body.public_key_pem))


async def post_rotate(request: web.Request) -> web.Response:
    await body_of(request, EmptyBody)
    return web.json_response(await services_of(request).signing.rotate())


def register(app: web.Application) -> None:
    app.router.add_get("/v1/keys/signing", get_signing)
    app.router.add_post("/v1/keys/signing/import", post_import)
    app.router.add_post("/v1/keys/signing/rotate", post_rotate)
