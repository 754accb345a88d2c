"""What every route module of the API shares: the app key of the services, JSON errors, pages.

Route modules import this, never server.py (which imports them to register their routes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from kbackup.services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def error(status: int, message: str, **extra: Any) -> web.Response:
    """The one JSON shape of an error answer: {"error": message, "status": status, ...}."""
    return web.json_response({"error": message, "status": status, **extra}, status=status)


def page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """A listing's answer: one page of items and how many there are in all."""
    return {"items": items, "total": total, "limit": limit, "offset": offset}
