"""kbackupctl: the companion CLI on the daemon's Unix socket.

It must start fast (it is typed by people and called by monitoring), so it imports only the
standard library on its common paths: a minimal HTTP/1.0 client over AF_UNIX, json,
argparse. pydantic is
loaded only by `config check`, rich only to draw a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kbackup.units import format_duration, format_size

DEFAULT_SOCKET = "/run/kbackup/kbackupd.sock"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def http_request(socket_path: str, method: str, path: str, body: bytes | None = None,
                 timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP/1.0 exchange over the Unix socket.

    Hand-rolled because http.client drags in the email package and ssl, a third of the CLI's
    start-up time; the daemon is ours, so a minimal client is enough.
    """
    head = f"{method} {path} HTTP/1.0\r\nHost: kbackupd\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    request = (head + "\r\n").encode() + (body or b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header, _, payload = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError("malformed HTTP response from kbackupd")
    return int(status_line[1]), payload


def socket_group(socket_path: str) -> str:
    """The group that owns the socket: the one a refused user has to join."""
    try:
        gid = os.stat(socket_path).st_gid
    except OSError:
        return "kbackup"
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class Client:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        try:
            status, data = http_request(self.socket_path, method, path, payload)
        except FileNotFoundError:
            raise CliError(f"kbackupd is not running: no socket at {self.socket_path}"
                           " (start it, or pass --socket / set KBACKUP_SOCKET)", 3) from None
        except PermissionError:
            raise CliError(f"permission denied on {self.socket_path}: your user must be in the"
                           f" daemon's socket group ({socket_group(self.socket_path)})",
                           3) from None
        except ConnectionRefusedError:
            raise CliError(f"kbackupd is not running: nothing listens on {self.socket_path}"
                           " (a stale socket left by a daemon that stopped)", 3) from None
        except OSError as exc:
            raise CliError(f"cannot reach kbackupd at {self.socket_path}: {exc}", 3) from None
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            raise CliError(f"kbackupd answered {status} with non-JSON data") from None
        if status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            raise CliError(message or f"kbackupd answered HTTP {status}")
        return decoded


# ---------------------------------------------------------------------- formatting


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def short_time(value: str | None) -> str:
    when = parse_time(value)
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else "-"


def ago(value: str | None) -> str:
    when = parse_time(value)
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


# ---------------------------------------------------------------------- commands


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/status")
    if args.json:
        return emit_json(data)
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
    print()
    print(table(["JOB", "STATE", "LAST RUN", "LAST GOOD BACKUP", "NEXT RUN", "HEALTH"], rows))
    for line in problems:
        print("\n" + line)
    print_health(data)
    return 0


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
        ]
        for j in data
    ]
    print(table(["JOB", "SCHEDULES", "SOURCES", "TARGETS", "NEXT RUN"], rows))
    return 0


def cmd_backups(client: Client, args: argparse.Namespace) -> int:
    path = "/v1/backups" + (f"?job={args.job}" if args.job else "")
    data = client.call("GET", path)
    if args.json:
        return emit_json(data)
    rows = []
    for b in data:
        start, end = parse_time(b["started_at"]), parse_time(b["finished_at"])
        took = format_duration((end - start).total_seconds()) if start and end else "-"
        verification = b.get("verification")
        verified = "-"
        if verification:
            verified = verification["level"] + (" ok" if verification["ok"] else " FAILED")
        rows.append([b["id"], b["job"], b["status"], b["trigger"], short_time(b["started_at"]),
                     took, format_size(b["size_bytes"]), verified,
                     ",".join(c["name"] for c in b["components"])])
    headers = ["ID", "JOB", "STATUS", "TRIGGER", "STARTED", "TOOK", "SIZE", "VERIFIED",
               "COMPONENTS"]
    print(table(headers, rows))
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    data = client.call("GET", f"/v1/backups/{args.backup_id}")
    if args.json:
        return emit_json(data)
    print(f"backup    {data['id']}\njob       {data['job']}\nstatus    {data['status']}")
    print(f"trigger   {data['trigger']}\nstarted   {data['started_at']}")
    print(f"finished  {data['finished_at'] or '-'}\nsize      {format_size(data['size_bytes'])}")
    print("targets   " + ", ".join(f"{k}: {v}" for k, v in data["targets"].items()))
    if data.get("error"):
        print(f"error     {data['error']}")
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
    else:
        print("verified  never")
    for c in data["components"]:
        detail = ""
        if c.get("database"):
            d = c["database"]
            detail = (
                f"PostgreSQL {d['server_version']}, {d['tables']} tables, "
                f"{d['rows']} rows, database {format_size(d['database_size'])}"
            )
        elif c.get("files"):
            f = c["files"]
            detail = f"{f['file_count']} files, {format_size(f['total_bytes'])}"
        print(
            f"\n  {c['kind']} {c['name']}: {c['file']}  {format_size(c['size_bytes'])}"
            f" stored, {format_size(c['raw_bytes'])} raw"
        )
        print(f"    sha256 {c['sha256']}")
        if detail:
            print(f"    {detail}")
    return 0


def wait_for_run(client: Client, run_id: str) -> dict[str, Any]:
    bar = None
    if sys.stderr.isatty():
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True
        )
        bar.start()
        task = bar.add_task("starting", total=None)
    last_phase = None
    try:
        while True:
            run = client.call("GET", f"/v1/runs/{run_id}?wait=0.5")
            progress = run.get("progress") or {}
            if bar is not None:
                bar.update(
                    task,
                    description=progress.get("phase", run["status"]),
                    completed=progress.get("bytes_done", 0),
                    total=progress.get("bytes_total"),
                )
            elif progress.get("phase") and progress.get("phase") != last_phase:
                last_phase = progress["phase"]
                print(f"{run_id}: {last_phase}", file=sys.stderr)
            if run["status"] != "running":
                return run
    finally:
        if bar is not None:
            bar.stop()


def follow(client: Client, run_id: str, label: str, as_json: bool) -> bool:
    """Wait for a run with progress; on failure say why. True if it completed."""
    run = wait_for_run(client, run_id)
    if as_json:
        emit_json(run)
    if run["status"] != "complete":
        print(f"{label} FAILED: {run.get('error')}", file=sys.stderr)
        return False
    return True


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    started = client.call("POST", f"/v1/jobs/{args.job}/run")
    run_id = started["run_id"]
    if started["coalesced"]:
        print(
            f"job {args.job} is already running as {run_id}; waiting for that run"
            if args.wait
            else f"job {args.job} is already running as {run_id}",
            file=sys.stderr,
        )
    if not args.wait:
        if args.json:
            return emit_json(started)
        print(run_id)
        return 0
    if not follow(client, run_id, f"backup {run_id} of job {args.job}", args.json):
        return 1
    if not args.json:
        backup = client.call("GET", f"/v1/backups/{run_id}")
        print(
            f"backup complete: {format_size(backup['size_bytes'])} in "
            f"{len(backup['components'])} components",
            file=sys.stderr,
        )
        print(run_id)
    return 0


def cmd_verify(client: Client, args: argparse.Namespace) -> int:
    started = client.call("POST", f"/v1/backups/{args.backup_id}/verify", {"level": args.level})
    if not args.wait:
        if args.json:
            return emit_json(started)
        print(started["run_id"])
        return 0
    run = wait_for_run(client, started["run_id"])
    backup = client.call("GET", f"/v1/backups/{args.backup_id}")
    result = next((v for v in backup["verifications"] if v["id"] == run["id"]), None)
    if args.json:
        emit_json(result or run)
        return 0 if run["status"] == "complete" else 1
    if run["status"] == "complete":
        print(f"backup {args.backup_id}: {args.level} verification passed")
        return 0
    print(f"backup {args.backup_id}: {args.level} verification FAILED: {run.get('error')}",
          file=sys.stderr)
    return 1


def print_plan(plan: dict[str, Any]) -> None:
    print(f"restore plan for backup {plan['backup_id']} (job {plan['job']}):")
    if plan["safety_backup"]:
        print(f"  0. safety backup of: {', '.join(plan['safety_backup'])}")
    for number, step in enumerate(plan["steps"], 1):
        size = f" ({format_size(step['size_bytes'])})" if step["size_bytes"] else ""
        print(f"  {number}. {step['component']}: {step['detail']}{size}")


def restore_request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"backup": args.backup, "job": args.job}
    for name in ("component", "to_database", "files_to", "gpg_homedir", "passphrase_file"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    for name in ("files_to", "gpg_homedir", "passphrase_file"):  # the daemon's cwd differs
        if getattr(args, name):
            body[name] = os.path.abspath(getattr(args, name))
    if args.tables:
        body["tables"] = [t.strip() for t in args.tables.split(",") if t.strip()]
    for flag in ("schema_only", "data_only", "in_place", "no_safety_backup", "clean",
                 "no_owner", "with_globals", "force"):
        if getattr(args, flag):
            body[flag] = True
    return body


def confirm(plan: dict[str, Any]) -> None:
    word = plan["confirm_word"]
    if not sys.stdin.isatty():
        raise CliError(f"this restore replaces {word!r}; there is no terminal to confirm on:"
                       " add --yes to go ahead", 2)
    answer = input(f"This REPLACES {word!r}. Type {word!r} to continue: ")
    if answer.strip() != word:
        raise CliError("not confirmed: nothing was changed", 1)


def cmd_restore(client: Client, args: argparse.Namespace) -> int:
    body = restore_request(args)
    planned = client.call("POST", "/v1/restores", {**body, "dry_run": True})["plan"]
    if args.dry_run:
        if args.json:
            return emit_json(planned)
        print_plan(planned)
        print("dry run: nothing was changed")
        return 0
    if not args.json:
        print_plan(planned)
    if planned["destructive"] and not args.yes:
        confirm(planned)
    started = client.call("POST", "/v1/restores", {**body, "yes": True})
    run_id = started["run_id"]
    if args.detach:
        print(run_id)
        return 0
    if not follow(client, run_id, f"restore {run_id}", args.json):
        return 1
    if not args.json:
        record = next((r for r in client.call("GET", f"/v1/restores?job={planned['job']}")
                       if r["id"] == run_id), {})
        if record.get("safety_backup_id"):
            print(f"safety backup of the previous state: {record['safety_backup_id']}")
        print(f"restore {run_id} complete")
    return 0


def cmd_restores(client: Client, args: argparse.Namespace) -> int:
    path = "/v1/restores" + (f"?job={args.job}" if args.job else "")
    data = client.call("GET", path)
    if args.json:
        return emit_json(data)
    rows = [[r["id"], r["job"], r["backup_id"], r["user"], short_time(r["started_at"]),
             r["status"], r["safety_backup_id"] or "-", (r["error"] or "")[:60]] for r in data]
    print(table(["RESTORE", "JOB", "BACKUP", "USER", "STARTED", "STATUS", "SAFETY BACKUP",
                 "ERROR"], rows))
    return 0


def cmd_keys(client: Client, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/keys")
    if args.json:
        emit_json(data)
    else:
        for item in data:
            if item["mode"] == "none":
                print(f"{item['job']}: not encrypted")
                continue
            if not item["ok"]:
                print(f"{item['job']}: {item['mode']}: PROBLEM: {item['problem']}")
                continue
            if item["mode"] == "gpg-symmetric":
                print(f"{item['job']}: gpg-symmetric {item['cipher']}, passphrase from"
                      f" {item['passphrase']}: OK")
            else:
                for key in item["recipients"]:
                    expires = ""
                    if key.get("expires"):
                        when = datetime.fromtimestamp(float(key["expires"]), UTC)
                        expires = f", expires {when:%Y-%m-%d}"
                    print(f"{item['job']}: gpg-recipients {item['cipher']}, recipient"
                          f" {key['fingerprint']} {', '.join(key['uids'])}{expires}: OK")
    return 0 if all(i.get("ok", True) for i in data) else 1


def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    report = client.call("POST", f"/v1/jobs/{args.job}/prune", {"dry_run": args.dry_run})
    if args.json:
        return emit_json(report)
    if report.get("note"):
        print(f"{args.job}: {report['note']}")
        return 0
    for target, decisions in report["targets"].items():
        print(f"target {target}:")
        rows = [[d["id"], short_time(d["started_at"]), d["status"],
                 "keep" if d["keep"] else ("would remove" if args.dry_run else "removed"),
                 ", ".join(d["reasons"])] for d in decisions]
        print(table(["BACKUP", "STARTED", "STATUS", "ACTION", "KEPT BY"], rows))
    for orphan in report["orphans"]:
        print(f"removed leftover {orphan['target']}:{orphan['key']}")
    for problem in report["errors"]:
        print(f"error: {problem}", file=sys.stderr)
    if args.dry_run:
        print("dry run: nothing was removed")
    return 1 if report["errors"] else 0


def cmd_storage(client: Client, args: argparse.Namespace) -> int:
    body = {"target": args.target} if args.target else {}
    results = client.call("POST", "/v1/storage/check", body)
    if args.json:
        emit_json(results)
    else:
        for item in results:
            timings = ", ".join(f"{step} {ms:.0f} ms" for step, ms in item["steps_ms"].items())
            verdict = "OK" if item["ok"] else f"FAILED: {item.get('error')}"
            print(f"{item['description']}: {verdict}" + (f" ({timings})" if timings else ""))
    return 0 if all(item["ok"] for item in results) else 1


def cmd_runs(client: Client, args: argparse.Namespace) -> int:
    path = "/v1/runs" + (f"?job={args.job}" if args.job else "")
    data = client.call("GET", path)
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
            progress_text(r.get("progress")) or (r["error"] or ""),
        ]
        for r in data
    ]
    print(table(["RUN", "JOB", "KIND", "TRIGGER", "STATUS", "STARTED", "DETAIL"], rows))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from kbackup.config import ConfigError, config_dir_from_env, load_config

    try:
        config = load_config(config_dir_from_env(args.config_dir))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.json:
        return emit_json(
            {
                "ok": True,
                "config_dir": str(config.directory),
                "jobs": sorted(config.jobs),
                "storage": sorted(config.storage),
            }
        )
    print(
        f"{config.directory}: OK: {len(config.jobs)} job(s) ({', '.join(sorted(config.jobs))}),"
        f" {len(config.storage)} storage target(s)"
    )
    return 0


def cmd_rescan(client: Client, args: argparse.Namespace) -> int:
    data = client.call("POST", "/v1/catalog/rescan")
    if args.json:
        return emit_json(data)
    print(f"found {data['found']} complete backups; forgot {data['forgotten']} missing ones")
    for problem in data["errors"]:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if data["errors"] else 0


def cmd_reload(client: Client, args: argparse.Namespace) -> int:
    client.call("POST", "/v1/reload")
    print("configuration reloaded")
    return 0


# ---------------------------------------------------------------------- health and alerts


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


def cmd_alerts(client: Client, args: argparse.Namespace) -> int:
    if args.action == "silence":
        if not args.target or not args.duration or not args.reason:
            raise CliError("usage: kbackupctl alerts silence JOB|KEY --for 2h --reason TEXT", 2)
        data = client.call("POST", "/v1/alerts/silence",
                           {"match": args.target, "for": args.duration, "reason": args.reason})
        if args.json:
            return emit_json(data)
        print(f"silenced {data['match']} until {short_time(data['until'])}: {data['reason']}")
        return 0
    if args.action == "unsilence":
        if not args.target:
            raise CliError("usage: kbackupctl alerts unsilence JOB|KEY", 2)
        data = client.call("POST", "/v1/alerts/unsilence", {"match": args.target})
        if args.json:
            return emit_json(data)
        print(f"unsilenced {data['match']}")
        return 0
    if args.action == "test":
        data = client.call("POST", "/v1/alerts/test", {"channel": args.target})
        if args.json:
            emit_json(data)
        elif not data["results"]:
            print("no alert channels configured ([alerts.NAME] in kbackupd.toml)")
        for result in [] if args.json else data["results"]:
            verdict = "OK, test message sent" if result["ok"] else f"FAILED: {result['error']}"
            print(f"{result['channel']} ({result['type']}): {verdict}")
        return 0 if all(r["ok"] for r in data["results"]) else 1
    data = client.call("GET", "/v1/alerts")
    if args.json:
        return emit_json(data)
    rows = []
    for alert in data["firing"] + data["resolved"]:
        notes = []
        if alert.get("silenced"):
            notes.append(f"silenced until {short_time(alert['silenced']['until'])}")
        notes += [f"{channel} failed: {d['error']}" for channel, d in
                  sorted(alert.get("deliveries", {}).items()) if d.get("error")]
        state = alert["state"] if alert["state"] == "firing" else \
            f"resolved {ago(alert['resolved_at'])}"
        rows.append([alert["key"], alert["severity"].upper(), state,
                     short_time(alert["first_seen"]), alert["reason"], "; ".join(notes)])
    if rows:
        print(table(["KEY", "SEVERITY", "STATE", "SINCE", "REASON", "NOTES"], rows))
    else:
        print("no firing or recently resolved alerts")
    for silence in data["silences"]:
        print(f"silence: {silence['match']} until {short_time(silence['until'])} by"
              f" {silence['created_by']}: {silence['reason']}")
    for channel in data["channels"]:
        if channel.get("failures"):
            print(f"channel {channel['name']} ({channel['type']}) FAILING since"
                  f" {short_time(channel['failing_since'])}: {channel['last_error']}")
    return 0


NAGIOS = {"ok": (0, "OK"), "warning": (1, "WARNING"), "critical": (2, "CRITICAL")}


def cmd_check(client: Client, args: argparse.Namespace) -> int:
    """Nagios/Icinga plugin: one status line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    try:
        data = client.call("GET", "/v1/health" + (f"?job={args.job}" if args.job else ""))
    except CliError as exc:
        print(f"KBACKUP UNKNOWN - {exc}")
        return 3
    if data["status"] not in NAGIOS:
        print("KBACKUP UNKNOWN - health not evaluated yet (the daemon has just started)")
        return 3
    code, label = NAGIOS[data["status"]]
    problems = sorted((c for c in data["checks"] if c["severity"] != "ok"),
                      key=lambda c: (c["severity"] != "critical", c["key"]))
    counts = {s: sum(1 for c in data["checks"] if c["severity"] == s) for s in NAGIOS}
    scope = f"job {args.job}" if args.job else "kbackupd"
    if problems:
        text = "; ".join(problem_text(c) + (" (silenced)" if c.get("silenced") else "")
                         for c in problems)
    else:
        text = f"{scope}: {counts['ok']} checks OK"
    perf = " ".join(f"{s}={n}" for s, n in counts.items())
    print(f"KBACKUP {label} - {text} | {perf}")
    return code


def emit_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return 0


# ---------------------------------------------------------------------- wiring


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if os.environ.get("KBACKUP_SOCKET"):
        return os.environ["KBACKUP_SOCKET"]
    config_dir = Path(args.config_dir or os.environ.get("KBACKUP_CONFIG_DIR") or "/etc/kbackup")
    try:
        import tomllib

        with open(config_dir / "kbackupd.toml", "rb") as fh:
            return str(tomllib.load(fh).get("daemon", {}).get("socket", DEFAULT_SOCKET))
    except (OSError, ValueError):
        return DEFAULT_SOCKET


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbackupctl", description="Control kbackupd.")
    parser.add_argument(
        "--socket",
        help="daemon socket (default: $KBACKUP_SOCKET, the config's"
        f" [daemon] socket, or {DEFAULT_SOCKET})",
    )
    parser.add_argument("--config-dir", help="default: $KBACKUP_CONFIG_DIR or /etc/kbackup")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="daemon and job state at a glance")
    sub.add_parser("jobs", help="configured jobs and their schedules")
    p = sub.add_parser("backups", help="list backups, newest first")
    p.add_argument("job", nargs="?")
    p = sub.add_parser("show", help="one backup in detail")
    p.add_argument("backup_id")
    p = sub.add_parser("run", help="start a backup of JOB now")
    p.add_argument("job")
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 1 if it failed")
    p = sub.add_parser("verify", help="prove a backup restores (checksum, structure, restore-test)")
    p.add_argument("backup_id")
    p.add_argument("--level", choices=["checksum", "structure", "restore-test"],
                   default="checksum")
    p.add_argument("--wait", action="store_true", help="wait for the verdict; exit 1 if it failed")
    p = sub.add_parser("restore", help="restore a backup (plans, confirms, safety backup)")
    p.add_argument("backup", help="a backup id, or 'latest' (with --job)")
    p.add_argument("--job")
    p.add_argument("--component", help="only this database or file tree")
    p.add_argument("--to-database", help="restore into this (new) database instead")
    p.add_argument("--tables", help="comma-separated tables to restore")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--schema-only", action="store_true")
    only.add_argument("--data-only", action="store_true")
    p.add_argument("--no-owner", action="store_true", help="skip ownership and grants")
    p.add_argument("--with-globals", action="store_true",
                   help="first recreate the roles the dump needs (restore onto a new server)")
    p.add_argument("--clean", action="store_true",
                   help="with --to-database: replace an existing non-empty database")
    place = p.add_mutually_exclusive_group()
    place.add_argument("--files-to", help="extract file trees into this empty directory")
    place.add_argument("--in-place", action="store_true",
                       help="replace the live file tree (after a safety backup)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--no-safety-backup", action="store_true")
    p.add_argument("--force", action="store_true", help="allow restoring a corrupt backup")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="wait with progress (the default)")
    mode.add_argument("--detach", action="store_true", help="print the run id and return")
    p.add_argument("--gpg-homedir", help="GnuPG home with the private key of an encrypted"
                                         " backup (readable by the daemon)")
    p.add_argument("--passphrase-file", help="the passphrase of a gpg-symmetric backup made"
                                             " before a passphrase change (readable by the"
                                             " daemon)")
    p = sub.add_parser("keys", help="encryption keys the jobs need, and whether they are usable")
    p.add_argument("action", choices=["check"])
    p = sub.add_parser("prune", help="apply JOB's retention policy now")
    p.add_argument("job")
    p.add_argument("--dry-run", action="store_true", help="show keep/remove, remove nothing")
    p = sub.add_parser("storage", help="storage target commands")
    p.add_argument("action", choices=["check"])
    p.add_argument("target", nargs="?", help="one target (default: all)")
    p = sub.add_parser("restores", help="restore history (audit trail)")
    p.add_argument("job", nargs="?")
    p = sub.add_parser("runs", help="recent runs")
    p.add_argument("job", nargs="?")
    sub.add_parser("reload", help="reload the configuration (like systemctl reload)")
    p = sub.add_parser("config", help="configuration commands")
    p.add_argument("action", choices=["check"])
    p = sub.add_parser("catalog", help="catalog commands")
    p.add_argument("action", choices=["rescan"])
    p = sub.add_parser("alerts", help="firing alerts; silence, unsilence, test the channels",
                       description="kbackupctl alerts [list] | silence JOB|KEY --for 2h"
                       " --reason TEXT | unsilence JOB|KEY | test [CHANNEL]")
    p.add_argument("action", nargs="?", default="list",
                   choices=["list", "silence", "unsilence", "test"])
    p.add_argument("target", nargs="?", help="JOB, 'daemon' or alert KEY; CHANNEL for test")
    p.add_argument("--for", dest="duration", help="how long a silence lasts, e.g. 2h")
    p.add_argument("--reason", help="why (shown with the silence)")
    p = sub.add_parser("check", help="Nagios/Icinga check: one line, exit 0/1/2/3")
    p.add_argument("job", nargs="?")
    return parser


COMMANDS = {
    "status": cmd_status,
    "jobs": cmd_jobs,
    "backups": cmd_backups,
    "show": cmd_show,
    "run": cmd_run,
    "runs": cmd_runs,
    "verify": cmd_verify,
    "restore": cmd_restore,
    "restores": cmd_restores,
    "keys": cmd_keys,
    "prune": cmd_prune,
    "storage": cmd_storage,
    "reload": cmd_reload,
    "catalog": cmd_rescan,
    "alerts": cmd_alerts,
    "check": cmd_check,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "config":
            return cmd_config_check(args)
        return COMMANDS[args.command](Client(socket_path(args)), args)
    except CliError as exc:
        print(f"kbackupctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
