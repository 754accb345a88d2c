"""kbackupctl's read-only commands: what the daemon knows about jobs, runs, backups."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
from datetime import datetime
from typing import Any

from kbackup.ctl.client import Client, CliError, segment
from kbackup.ctl.output import (
    ago,
    emit_json,
    print_health,
    progress_text,
    short_time,
    table,
)
from kbackup.ctl.pause import pause_text
from kbackup.times import format_duration, parse_iso
from kbackup.units import format_size


def tag_label(backup: dict[str, Any]) -> str:
    """The TAG/LABEL column: 'weekly', 'pre-upgrade', 'weekly/pre-upgrade' or '-'."""
    return "/".join(v for v in (backup.get("tag"), backup.get("label")) if v) or "-"


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    if getattr(args, "watch", None) is not None:
        return watch_status(client, args.watch, args.json)
    data = client.call("GET", "/v1/status")
    if args.json:
        return emit_json(data)
    print_status(data)
    return 0


def watch_status(client: Client, interval: float, as_json: bool) -> int:
    """Redraw the status every `interval` seconds, like watch(1); Ctrl-C ends it (exit 0).

    With --json, one compact JSON document per refresh (JSON lines). A daemon that stops
    answering (a restart) is shown and waited for, not fatal."""
    on_tty = sys.stdout.isatty()
    try:
        while True:
            screen = io.StringIO()
            with contextlib.redirect_stdout(screen):
                try:
                    data = client.call("GET", "/v1/status")
                except CliError as exc:
                    data = None
                    print(f"kbackupd is not answering: {exc}")
                if data is not None and as_json:
                    print(json.dumps(data, separators=(",", ":")))
                elif data is not None:
                    print(f"every {interval:g}s, Ctrl-C to stop"
                          f"{'':>10}{datetime.now().astimezone():%Y-%m-%d %H:%M:%S}\n")
                    print_status(data)
            if on_tty and not as_json:
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: redraw in place
            sys.stdout.write(screen.getvalue())
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        if on_tty and not as_json:
            print()
        return 0


def progress_bar(progress: dict[str, Any], width: int = 24) -> str:
    """[#######.........] 42% 1.2 GiB of 2.9 GiB, or the bytes so far when the total is unknown."""
    done, total, pct = progress.get("bytes_done", 0), progress.get("bytes_total"), \
        progress.get("percent")
    if pct is None or not total:
        return f"{format_size(done)} so far" if done else ""
    filled = int(width * pct / 100)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {pct:.0f}%"
            f" {format_size(done)} of {format_size(total)}")


def rto_text(seconds: float) -> str:
    """A restore-test's duration: seconds with one decimal, then minutes and hours."""
    return f"{seconds:.1f} s" if seconds < 120 else format_duration(seconds)


def print_status(data: dict[str, Any]) -> None:
    daemon = data["daemon"]
    print(
        f"kbackupd {daemon['version']} (pid {daemon['pid']}), up since "
        f"{short_time(daemon['started_at'])}, {daemon['running']} running "
        f"(limit {daemon['max_concurrent_jobs']})"
    )
    if daemon.get("last_reload_error"):
        print(f"last reload REJECTED: {daemon['last_reload_error'].splitlines()[0]}")
    rows, problems = [], []
    for job in data["jobs"]:
        last_run, last_backup = job["last_run"], job["last_backup"]
        state = (
            "running: " + progress_text(job["running"]["progress"])
            if job["running"]
            else (last_run["status"] if last_run else "never run")
        )
        if job.get("paused") and not job["running"]:
            state = f"paused ({job['paused'].get('reason') or 'no reason given'})"
        rows.append(
            [
                job["job"],
                state,
                short_time(last_run["started_at"]) if last_run else "-",
                ago(last_backup["finished_at"]) if last_backup else "none",
                short_time(job["next_run"]),
                (job.get("health") or {}).get("status", "-").upper(),
            ]
        )
        if last_run and last_run["status"] == "failed":
            problems.append(f"{job['job']}: last run {last_run['id']} failed: {last_run['error']}")
        if job.get("paused"):
            problems.append(f"{job['job']}: {pause_text(job['paused'])}")
        if job.get("restore_test"):
            tested = job["restore_test"]
            problems.append(f"{job['job']}: time to recover {rto_text(tested['restore_seconds'])}"
                            f" (last passed restore-test, backup {tested['backup_id']},"
                            f" {short_time(tested['finished_at'])})")
    print()
    print(table(["JOB", "STATE", "LAST RUN", "LAST GOOD BACKUP", "NEXT RUN", "HEALTH"], rows))
    for line in problems:
        print("\n" + line)
    running = data.get("running") or []
    if running:
        print("\nrunning:")
        for run in running:
            progress = run.get("progress") or {}
            print(f"  {run['job']} {run['kind']} {run['id']} ({run['trigger']},"
                  f" started {short_time(run['started_at'])}): {progress.get('phase', '')}")
            bar = progress_bar(progress)
            if bar:
                print(f"    {bar}")
    print_health(data)




def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/jobs")
    if args.json:
        return emit_json(data)
    rows = [
        [
            j["name"],
            ", ".join(f"{s['cron']} ({s['tag']})" for s in j["schedules"]) or "manual",
            ", ".join(f"{s['kind']}:{s['name']}" for s in j["sources"]),
            ", ".join(j["targets"]),
            short_time(j["next_run"]),
            f"paused ({j['paused'].get('reason') or 'no reason given'})" if j.get("paused")
            else "active",
        ]
        for j in data
    ]
    print(table(["JOB", "SCHEDULES", "SOURCES", "TARGETS", "NEXT RUN", "STATE"], rows))
    return 0


def fetch(client: Client, path: str, args: argparse.Namespace,
          **filters: str | None) -> dict[str, Any]:
    """The listing at path for `[JOB] --limit N | --all`, narrowed by `filters` (label=...)."""
    return client.listing(path, args.job, None if args.all else args.limit, **filters)


def more(data: dict[str, Any], what: str) -> None:
    """Say so when the listing shows fewer items than there are."""
    if len(data["items"]) < data["total"]:
        print(f"showing {len(data['items'])} of {data['total']} {what}; --all or --limit N"
              " for more")


def cmd_backups(client: Client, args: argparse.Namespace) -> int:
    data = fetch(client, "/v1/backups", args, label=args.label)
    if args.json:
        return emit_json(data)
    rows = []
    for b in data["items"]:
        start, end = parse_iso(b["started_at"]), parse_iso(b["finished_at"])
        took = format_duration((end - start).total_seconds()) if start and end else "-"
        verification = b.get("verification")
        verified = "-"
        if verification:
            verified = verification["level"] + (" ok" if verification["ok"] else " FAILED")
        status = b["status"] + (" UNTRUSTED" if b.get("trust") == "untrusted" else "")
        rows.append([b["id"], b["job"], status, b["trigger"], tag_label(b),
                     short_time(b["started_at"]), took, format_size(b["size_bytes"]), verified,
                     ",".join(c["name"] for c in b["components"])])
    headers = ["ID", "JOB", "STATUS", "TRIGGER", "TAG/LABEL", "STARTED", "TOOK", "SIZE",
               "VERIFIED", "COMPONENTS"]
    print(table(headers, rows))
    more(data, "backups")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    data = client.call("GET", f"/v1/backups/{segment(args.backup_id)}")
    if args.json:
        return emit_json(data)
    print(f"backup    {data['id']}\njob       {data['job']}\nstatus    {data['status']}")
    print(f"trigger   {data['trigger']}")
    print(f"tag       {data.get('tag') or '-'}\nlabel     {data.get('label') or '-'}")
    print(f"started   {data['started_at']}")
    print(f"finished  {data['finished_at'] or '-'}\nsize      {format_size(data['size_bytes'])}")
    print("targets   " + ", ".join(f"{k}: {v}" for k, v in data["targets"].items()))
    for target, lock in ((data.get("manifest") or {}).get("object_lock") or {}).items():
        print(f"locked    {target}: {lock.get('mode')} until {lock.get('retain_until')}"
              " (S3 Object Lock)")
    if data.get("error"):
        print(f"error     {data['error']}")
    print(f"signed    {trust_line(data)}")
    encryption = next((c.get("encryption") for c in data["components"]
                       if (c.get("encryption") or {}).get("mode", "none") != "none"), None)
    if encryption:
        needs = ("the passphrase of the job" if encryption["mode"] == "gpg-symmetric" else
                 "a private key for " + ", ".join(encryption.get("recipients", [])))
        print(f"encrypted {encryption['mode']} {encryption.get('cipher', '')}: needs {needs}")
    verification = data.get("verification")
    if verification:
        verdict = "passed" if verification["ok"] else f"FAILED: {verification['problem']}"
        print(f"verified  {verification['level']} {verdict} ({verification['finished_at']})")
        if verification.get("restore_seconds") is not None:
            print(f"recovered in {rto_text(verification['restore_seconds'])}"
                  " (restore-test: the measured time to recover)")
    else:
        print("verified  never")
    for c in data["components"]:
        print(
            f"\n  {c['kind']} {c['name']}: {c['file']}  {format_size(c['size_bytes'])}"
            f" stored, {format_size(c['raw_bytes'])} raw"
        )
        print(f"    sha256 {c['sha256']}")
        for detail in summary_lines(c):
            print(f"    {detail}")
    manifest = data.get("manifest") or {}  # what the run could not store, what it noticed
    for missing in manifest.get("missing_components") or []:
        print(f"\n  MISSING {missing['name']}: {missing['reason']}")
    for note in manifest.get("notes") or []:
        print(f"\n  {note}")
    with contextlib.suppress(CliError):  # the run that wrote it: its hooks (none after rescan)
        print_hooks(client.call("GET", f"/v1/runs/{segment(data['id'])}").get("hooks") or [])
    return 0


def trust_line(backup: dict[str, Any]) -> str:
    """Whether the backup's manifest is signed by a trusted key (kbackup.signing)."""
    key = ((backup.get("manifest") or {}).get("signature") or {}).get("key")
    if backup.get("trust") == "trusted":
        return f"trusted (ed25519 key {key})"
    if backup.get("trust") == "untrusted":
        return f"UNTRUSTED: {backup.get('trust_reason')}"
    return "not checked yet (verify or `catalog rescan` checks it)"


# What every component view has (views.component_view); any other field is its driver's
# summary (database tables and rows, file count...), shown whatever the kind.
COMPONENT_FIELDS = ("name", "kind", "file", "size_bytes", "sha256", "raw_bytes", "encryption")


def summary_lines(component: dict[str, Any]) -> list[str]:
    """One line per summary a driver gave: `database: tables 3, rows 120, database size
    7.5 MiB`; sizes (fields named *_size, *_bytes) in human units."""
    lines = []
    for key, value in component.items():
        if key in COMPONENT_FIELDS or value in (None, {}, []):
            continue
        if not isinstance(value, dict):
            lines.append(f"{key}: {value}")
            continue
        parts = [f"{name.replace('_', ' ')} {_summary_value(name, v)}"
                 for name, v in value.items()]
        lines.append(f"{key}: " + ", ".join(parts))
    return lines


def _summary_value(name: str, value: Any) -> str:
    if isinstance(value, int) and name.endswith(("_size", "_bytes")):
        return format_size(value)
    return "-" if value is None else str(value)


def hooks_text(hooks: list[dict[str, Any]]) -> str:
    """The HOOKS column: '-', '3 ok', or the hooks that failed ('after_restore FAILED')."""
    if not hooks:
        return "-"
    failed = [h["hook"] for h in hooks if h.get("error")]
    if not failed:
        return f"{len(hooks)} ok"
    return ", ".join(dict.fromkeys(failed)) + " FAILED"


def print_hooks(hooks: list[dict[str, Any]]) -> None:
    """Each hook command of a run: how it ended, then its output, indented."""
    for h in hooks:
        ended = h.get("error") or f"exit {h['exit']}"
        print(f"\n  {h['hook']} hook: {shlex.join(h['argv'])}: {ended} ({h['seconds']:.1f} s)")
        for name in ("stdout", "stderr"):
            lines = (h.get(name) or "").rstrip("\n").splitlines()
            for line in lines:
                print(f"    {name}: {line}")


def cmd_runs(client: Client, args: argparse.Namespace) -> int:
    if args.id:
        return show_run(client, args)
    data = fetch(client, "/v1/runs", args)
    if args.json:
        return emit_json(data)
    rows = [
        [
            r["id"],
            r["job"],
            r["kind"],
            r["trigger"],
            r["status"],
            short_time(r["started_at"]),
            hooks_text(r.get("hooks") or []),
            progress_text(r.get("progress")) or (r["error"] or ""),
        ]
        for r in data["items"]
    ]
    print(table(["RUN", "JOB", "KIND", "TRIGGER", "STATUS", "STARTED", "HOOKS", "DETAIL"],
                rows))
    more(data, "runs")
    return 0


def show_run(client: Client, args: argparse.Namespace) -> int:
    """kbackupctl runs --id RUN: one run, with each hook command's output."""
    run = client.call("GET", f"/v1/runs/{segment(args.id)}")
    if args.json:
        return emit_json(run)
    for label, key in (("run", "id"), ("job", "job"), ("kind", "kind"), ("trigger", "trigger"),
                       ("status", "status"), ("started", "started_at"),
                       ("finished", "finished_at"), ("backup", "backup_id"),
                       ("error", "error")):
        if run.get(key) or key != "error":
            print(f"{label:<9} {run.get(key) or '-'}")
    print(f"hooks     {hooks_text(run.get('hooks') or [])}")
    print_hooks(run.get("hooks") or [])
    return 0


def cmd_restores(client: Client, args: argparse.Namespace) -> int:
    data = fetch(client, "/v1/restores", args)
    if args.json:
        return emit_json(data)
    rows = [[r["id"], r["job"], r["backup_id"], r["user"], short_time(r["started_at"]),
             r["status"], r["safety_backup_id"] or "-", (r["error"] or "")[:60]]
            for r in data["items"]]
    print(table(["RESTORE", "JOB", "BACKUP", "USER", "STARTED", "STATUS", "SAFETY BACKUP",
                 "ERROR"], rows))
    more(data, "restores")
    return 0
