"""The dashboard's pages (GET, the read role): overview, a job, backups, runs, audit, alerts.

Each handler asks the services for its data, as the /v1 API does, and renders a template;
a missing job or backup is a 404 page, a bad filter a one-line error above the list."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from kbackup.api.common import services_of
from kbackup.api.models import BackupsQuery, checked
from kbackup.errors import Invalid, NotFound
from kbackup.times import parse_iso
from kbackup.units import format_size
from kbackup.verify_levels import LEVELS
from kbackup.web.charts import Point, chart, seconds_label
from kbackup.web.render import render

PAGE_SIZE = 50
MIB = 1 << 20
HISTORY_DAYS = 90
STATUSES = ("complete", "partial", "failed", "corrupt", "running")
DATABASE_KINDS = ("postgres", "mysql")  # components a restore into a new database takes


def page_number(request: web.Request) -> int:
    """?page=N (1 when absent or not a positive number)."""
    text = request.query.get("page", "1")
    return int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1


def paging(total: int, page: int) -> dict[str, Any]:
    pages = max(1, -(-total // PAGE_SIZE))
    return {"page": page, "pages": pages, "total": total}


async def overview(request: web.Request) -> web.Response:
    services = services_of(request)
    status = services.health.status()
    last = [j["last_backup"]["id"] for j in status["jobs"] if j["last_backup"]]
    return render(request, "overview.html", {
        "status": status, "verifications": services.backups.last_verifications(last)})


async def progress(request: web.Request) -> web.Response:
    """The work under way, for the pages' live progress (static/live.js polls it)."""
    return web.json_response({"running": services_of(request).runs.active()},
                             headers={"Cache-Control": "no-store"})


def job_charts(history: dict[str, Any]) -> list[Any]:
    """Size and duration of each backup, and each restore-test's time, as SVG charts."""
    since, until = history["since"], history["until"]
    sizes, durations, tests = [], [], []
    for b in history["backups"]:
        when, ok = parse_iso(b["started_at"]), b["status"] == "complete"
        if when is None:
            continue
        name = f"{b['id']} ({b['status']})"
        if b["size_bytes"] is not None:  # in MiB: the axis then steps in round sizes
            sizes.append(Point(when, b["size_bytes"] / MIB, name, ok))
        if b["seconds"] is not None:
            durations.append(Point(when, b["seconds"], name, ok))
    for t in history["restore_tests"]:
        when = parse_iso(t["finished_at"])
        if when is not None:
            tests.append(Point(when, t["restore_seconds"], t["backup_id"]))
    return [
        ("Backup size", chart("backup size per run", sizes, since, until,
                              lambda v: format_size(int(v * MIB)))),
        ("Backup duration", chart("backup duration per run", durations, since, until,
                                  seconds_label)),
        ("Restore-test time", chart("time to restore (restore-test)", tests, since, until,
                                    seconds_label)),
    ]


async def job_page(request: web.Request) -> web.Response:
    services, name = services_of(request), request.match_info["job"]
    try:
        services.jobs.job(name)
    except NotFound as exc:
        return render(request, "error.html", {"message": str(exc)}, status=404)
    job = next(j for j in services.jobs.listing() if j["name"] == name)
    state = next(j for j in services.health.status()["jobs"] if j["job"] == name)
    recent = json.loads(services.backups.listing_json(name, limit=10))["items"]
    return render(request, "job.html", {
        "job": job, "state": state, "recent": recent, "days": HISTORY_DAYS,
        "charts": job_charts(services.jobs.history(name, HISTORY_DAYS))})


async def backups_page(request: web.Request) -> web.Response:
    services, page = services_of(request), page_number(request)
    given = {k: request.query[k] for k in ("job", "status", "label") if request.query.get(k)}
    error = ""
    try:
        query = checked(BackupsQuery, {**given, "limit": PAGE_SIZE,
                                       "offset": (page - 1) * PAGE_SIZE}, "filter")
    except Invalid as exc:
        error, given = str(exc), {}
        query = checked(BackupsQuery, {"limit": PAGE_SIZE, "offset": 0}, "filter")
    listing = json.loads(services.backups.listing_json(
        query.job, query.status, query.label, query.limit, query.offset))
    context = {"backups": listing["items"], "filters": given, "statuses": STATUSES,
               "jobs": sorted(services.jobs.config.jobs), **paging(listing["total"], page)}
    if error:
        context["error"] = error
    return render(request, "backups.html", context)


def row_counts(manifest: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """Per component, the row count of each table the backup recorded (databases)."""
    found = {}
    for component in (manifest or {}).get("components", []):
        for value in component.values():
            if isinstance(value, dict) and isinstance(value.get("row_counts"), dict):
                found[component["name"]] = value["row_counts"]
    return found


async def backup_page(request: web.Request) -> web.Response:
    services = services_of(request)
    try:
        backup = services.backups.show(request.match_info["id"])
    except NotFound as exc:
        return render(request, "error.html", {"message": str(exc)}, status=404)
    return render(request, "backup.html", {
        "backup": backup, "row_counts": row_counts(backup.get("manifest")), "levels": LEVELS,
        "databases": [c for c in backup["components"] if c["kind"] in DATABASE_KINDS]})


async def runs_page(request: web.Request) -> web.Response:
    services, page = services_of(request), page_number(request)
    job = request.query.get("job") or None
    items, total = services.runs.listing(job, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    return render(request, "runs.html", {"runs": items, "job": job or "",
                                         **paging(total, page)})


async def audit_page(request: web.Request) -> web.Response:
    services, page = services_of(request), page_number(request)
    job = request.query.get("job") or None
    history = services.backups.audit(job, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    return render(request, "audit.html", {"entries": history["items"], "job": job or "",
                                          **paging(history["total"], page)})


async def alerts_page(request: web.Request) -> web.Response:
    return render(request, "alerts.html", {"alerts": services_of(request).health.alerts()})


def register(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/progress.json", progress)
    app.router.add_get("/jobs/{job}", job_page)
    app.router.add_get("/backups", backups_page)
    app.router.add_get("/backups/{id}", backup_page)
    app.router.add_get("/runs", runs_page)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/alerts", alerts_page)
