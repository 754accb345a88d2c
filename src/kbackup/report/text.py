"""The report as plain text: aligned columns and a unicode sparkline of the sizes, for a
terminal (`kbackupctl report`) and chat channels (Slack, webhook). Works on the report's JSON
form (Report.as_dict, or what GET /v1/report answers), stdlib only: kbackupctl imports it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kbackup.times import format_duration, parse_iso
from kbackup.units import format_size

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int | None]) -> str:
    """One character per value, scaled between the smallest and largest; a gap is a space."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    return "".join(" " if v is None else BARS[0 if not span else round((v - low) * 7 / span)]
                   for v in values)


def trend_text(percent: float | None) -> str:
    if percent is None:
        return "-"
    return f"{percent:+.0f}%" if abs(percent) >= 1 else f"{percent:+.1f}%"


def when(value: str | None) -> str:
    moment = parse_iso(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{format_duration(max(0.0, seconds))} ago"


def verified_text(job: dict[str, Any]) -> str:
    if not job["verified_ok"] and not job["verified_failed"]:
        return "-"
    text = f"{job['verified_ok']} ok"
    return text + (f", {job['verified_failed']} failed" if job["verified_failed"] else "")


def restore_text(job: dict[str, Any], until: datetime | None) -> str:
    if job["restore_seconds"] is None:
        return "never"
    tested = parse_iso(job["restore_tested_at"])
    age = (until - tested).total_seconds() if until and tested else None
    return f"{format_duration(job['restore_seconds'])} ({ago(age)})"


def job_rows(report: dict[str, Any]) -> list[list[str]]:
    """The job table's cells, as text and HTML show them."""
    until = parse_iso(report["until"])
    return [[job["job"], str(job["made"]), str(job["failed"]), str(job["partial"]),
             verified_text(job), format_size(job["size_bytes"]),
             trend_text(job["trend_percent"]), ago(job["last_good_age_seconds"]),
             restore_text(job, until)] for job in report["jobs"]]


JOB_HEADINGS = ["JOB", "MADE", "FAILED", "PARTIAL", "VERIFIED", "SIZE", "TREND", "LAST GOOD",
                "RESTORE TEST"]
TARGET_HEADINGS = ["TARGET", "TYPE", "BACKUPS", "STORED"]


def target_rows(report: dict[str, Any]) -> list[list[str]]:
    return [[t["target"], t["type"], str(t["backups"]), format_size(t["stored_bytes"])]
            for t in report["targets"]]


def columns(headings: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headings, *rows]) for i in range(len(headings))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [headings, *rows]]


def period(report: dict[str, Any]) -> str:
    since, until = parse_iso(report["since"]), parse_iso(report["until"])
    length = f" ({format_duration((until - since).total_seconds())})" if since and until else ""
    return f"{when(report['since'])} to {when(report['until'])}{length}"


def summary(report: dict[str, Any]) -> str:
    """One line: the subject of a digest."""
    jobs = report["jobs"]
    made, failed = sum(j["made"] for j in jobs), sum(j["failed"] for j in jobs)
    alerts = len(report["alerts"])
    return (f"report {period(report)}: {len(jobs)} jobs, {made} backups, {failed} failed,"
            f" {alerts} open alert{'' if alerts == 1 else 's'}")


def render_text(report: dict[str, Any]) -> str:
    lines = [f"kbackup report for {report['host']}, {period(report)}", ""]
    if report["jobs"]:
        rows = job_rows(report)
        table = columns([*JOB_HEADINGS, "SIZES"], [
            [*row, sparkline(job["sizes"])] for row, job in zip(rows, report["jobs"],
                                                                 strict=True)])
        lines += table
    else:
        lines.append("no jobs configured")
    lines += ["", *columns(TARGET_HEADINGS, target_rows(report)), ""]
    if report["alerts"]:
        lines.append("Open alerts:")
        lines += [f"  {a['severity'].upper():8} {a['key']}: {a['reason']} (since"
                  f" {when(a['since'])})" for a in report["alerts"]]
    else:
        lines.append("No open alerts.")
    return "\n".join(lines) + "\n"
