"""The dashboard on the API's app: pages, actions, static files, the CSRF cookie.

The same aiohttp app (and so the same guard middleware and peer-credential roles) serves the
pages at / and the JSON API at /v1; viewers read, admins also act."""

from __future__ import annotations

from aiohttp import web

from kbackup.web import actions, pages, render
from kbackup.web.csrf import csrf_cookie


def add_dashboard(app: web.Application) -> None:
    app.router.add_static("/static/", render.STATIC)
    pages.register(app)
    actions.register(app)
    app.middlewares.append(csrf_cookie)  # inside the guard: it sees the caller first
