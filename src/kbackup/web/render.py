"""Templates of the dashboard: the jinja2 environment, its filters, and rendering a page.

A page is rendered with what every page needs: the caller's role (viewers get no action
buttons), the CSRF token of its forms, and the one-line notice or error a redirect carried.

jinja2 is imported at the first page, not as the daemon starts (it cost the daemon's start
40-130 ms here); so the environment is built here rather than by aiohttp-jinja2's setup(),
which must run while the app is built."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiohttp import web

from kbackup.api.auth import ADMIN, SESSION_COOKIE
from kbackup.ctl.output import ago, progress_text, short_time
from kbackup.times import format_duration, parse_iso
from kbackup.units import format_size
from kbackup.web.csrf import FIELD, csrf_token

if TYPE_CHECKING:
    import jinja2

STATIC = Path(__file__).parent / "static"
FLASH = "kb_flash"  # the cookie carrying an action's one-line outcome to the next page


def _size(value: int | None) -> str:
    return "-" if value is None else format_size(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def duration_of(start: str | None, end: str | None) -> float | None:
    """Seconds between two stored times, or None when either is missing."""
    a, b = parse_iso(start), parse_iso(end)
    return None if a is None or b is None else (b - a).total_seconds()


def _utc(value: str | None) -> str:
    when = parse_iso(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if when else "-"


@cache
def environment() -> jinja2.Environment:
    """Templates from the package (installed as package data), autoescaped, built once."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kbackup.web", "templates"),
        autoescape=True, trim_blocks=True,
        lstrip_blocks=True)
    env.filters.update(size=_size, seconds=_seconds, ago=ago, when=short_time, utc=_utc,
                       progress=progress_text)
    env.globals.update(duration_of=duration_of, csrf_field=FIELD)
    return env


def render(request: web.Request, template: str, context: dict[str, Any],
           status: int = 200) -> web.Response:
    """The page, with the caller's role, the forms' CSRF token and the redirect's notice."""
    admin = request["caller"].role == ADMIN
    session = SESSION_COOKIE in request.cookies  # a web login (TCP): it can log out
    context = {
        "admin": admin,
        "session": session,
        "user": request["caller"].user,
        "csrf": csrf_token(request) if admin or session else "",
        "path": request.path,
        "now": datetime.now(UTC),
        **flashed(request),
        **context,
    }
    text = environment().get_template(template).render(context)
    response = web.Response(text=text, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"})
    if FLASH in request.cookies:
        response.del_cookie(FLASH, path="/")  # shown once
    return response


def flash(request: web.Request, response: web.StreamResponse, message: dict[str, str]) -> None:
    """Hand the next page a notice or an error (its first line)."""
    lines = {k: v.splitlines()[0][:400] for k, v in message.items()
             if k in ("notice", "error") and v}
    if lines:
        response.set_cookie(FLASH, quote(json.dumps(lines)), httponly=True,
                            samesite="Strict", path="/", secure=request.secure)


def flashed(request: web.Request) -> dict[str, str]:
    """The notice and error an action left for this page ("" when none)."""
    try:
        found = json.loads(unquote(request.cookies.get(FLASH, "") or "{}"))
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    return {k: str(found.get(k, ""))[:400] for k in ("notice", "error")}
