"""How kbackupctl prints: plain aligned tables, local times, "ago", --json."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from typing import Any

from kbackup.times import format_duration, parse_iso
from kbackup.units import format_size


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def short_time(value: str | None) -> str:
    when = parse_iso(value)
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else "-"


def ago(value: str | None) -> str:
    when = parse_iso(value)
    if not when:
        return "-"
    return format_duration((datetime.now(UTC) - when).total_seconds()) + " ago"


def progress_text(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    pct = progress.get("percent")
    text = progress.get("phase", "")
    if pct is not None:
        text += f" {pct:.0f}%"
    return text


def emit_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return 0


def problem_text(problem: dict[str, Any]) -> str:
    who = problem["job"] or "daemon"
    return f"{who}: {problem['severity'].upper()}: {problem['reason']}"


def print_health(status: dict[str, Any]) -> None:
    """The overall health and every reason behind it, below the status table."""
    overall = status["daemon"].get("health") or {}
    problems = list(overall.get("problems", []))
    for job in status["jobs"]:
        problems += [p for p in (job.get("health") or {}).get("problems", [])
                     if p["job"] == job["job"]]
    print(f"\nhealth: {overall.get('status', 'unknown').upper()}"
          + (f" (checked {short_time(overall.get('checked_at'))})"
             if overall.get("checked_at") else ""))
    for problem in sorted(problems, key=lambda p: (p["severity"] != "critical", p["key"])):
        print(f"  {problem_text(problem)}")


def print_plan(plan: dict[str, Any]) -> None:
    print(f"restore plan for backup {plan['backup_id']} (job {plan['job']}):")
    if plan["safety_backup"]:
        print(f"  0. safety backup of: {', '.join(plan['safety_backup'])}")
    for number, step in enumerate(plan["steps"], 1):
        size = f" ({format_size(step['size_bytes'])})" if step["size_bytes"] else ""
        print(f"  {number}. {step['component']}: {step['detail']}{size}")
    hooks = plan.get("hooks") or {}
    for hook, commands in hooks.items():
        for argv in commands:
            print(f"  {hook} hook: {shlex.join(argv)}")
    if (plan.get("request") or {}).get("no_hooks"):
        print("  hooks: skipped (--no-hooks)")
