"""kbackupctl's commands that make the daemon do something (admin group): run, verify,
restore, prune; they follow long work with a progress bar on a terminal."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kbackup.ctl.client import Client, CliError, segment
from kbackup.ctl.output import emit_json, print_plan, short_time, table
from kbackup.units import format_size


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
    body: dict[str, Any] = {}
    if args.label is not None:
        from kbackup.labels import check_label

        try:
            body["label"] = check_label(args.label)
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
    if args.force:
        body["force"] = True
    started = client.call("POST", f"/v1/jobs/{segment(args.job)}/run", body)
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
    started = client.call("POST", f"/v1/backups/{segment(args.backup_id)}/verify",
                          {"level": args.level})
    if not args.wait:
        if args.json:
            return emit_json(started)
        print(started["run_id"])
        return 0
    run = wait_for_run(client, started["run_id"])
    backup = client.call("GET", f"/v1/backups/{segment(args.backup_id)}")
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


def restore_request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"backup": args.backup, "job": args.job}
    for name in ("component", "to_database", "files_to", "to_path", "gpg_homedir",
                 "passphrase_file"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    for name in ("files_to", "to_path", "gpg_homedir",
                 "passphrase_file"):  # the daemon's cwd differs
        if getattr(args, name):
            body[name] = os.path.abspath(getattr(args, name))
    if args.tables:
        body["tables"] = [t.strip() for t in args.tables.split(",") if t.strip()]
    for flag in ("schema_only", "data_only", "in_place", "no_safety_backup", "clean",
                 "no_owner", "with_globals", "all_databases", "force", "force_open"):
        if getattr(args, flag):
            body[flag] = True
    if args.no_hooks:  # skip the job's before_restore/after_restore hooks
        body["no_hooks"] = True
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
        if args.json:
            return emit_json(started)
        print(run_id)
        return 0
    if not follow(client, run_id, f"restore {run_id}", args.json):
        return 1
    if not args.json:
        restores = client.get_for_job("/v1/restores", planned["job"])["items"]
        record: dict[str, Any] = next((r for r in restores if r["id"] == run_id), {})
        if record.get("safety_backup_id"):
            print(f"safety backup of the previous state: {record['safety_backup_id']}")
        print(f"restore {run_id} complete")
    return 0


def cmd_signing(client: Client, args: argparse.Namespace) -> int:
    """The manifest signing key: export its public half, import another, rotate it."""
    if args.action == "export-signing":
        data = client.call("GET", "/v1/keys/signing")
        if args.json:
            return emit_json(data)
        print(data["public_key_pem"], end="")
        return 0
    if args.action == "import-signing":
        if not args.file:
            raise CliError("keys import-signing needs FILE (a public key in PEM)")
        try:
            pem = Path(args.file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{args.file}: cannot read it: {exc}") from None
        data = client.call("POST", "/v1/keys/signing/import", {"public_key_pem": pem})
        if args.json:
            return emit_json(data)
        print(f"trusted ed25519 key {data['fingerprint']} ({data['file']}); run"
              " `kbackupctl catalog rescan` to check the backups it signed")
        return 0
    data = client.call("POST", "/v1/keys/signing/rotate", {})
    if args.json:
        return emit_json(data)
    print(f"new signing key {data['fingerprint']}; the old one {data['old_fingerprint']} is"
          " kept in the trusted keyring")
    return 0


def cmd_keys(client: Client, args: argparse.Namespace) -> int:
    if args.action != "check":
        return cmd_signing(client, args)
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
    if args.target:
        from kbackup.ctl.prune_direct import cmd_prune_target

        return cmd_prune_target(client, args)
    if args.credentials_dir:
        raise CliError("--credentials-dir goes with --target TARGET")
    report = client.call("POST", f"/v1/jobs/{segment(args.job)}/prune", {"dry_run": args.dry_run})
    if args.json:
        return emit_json(report)
    if report.get("note"):
        print(f"{args.job}: {report['note']}")
        return 0
    for target, decisions in report["targets"].items():
        print(f"target {target}:")
        rows = [[d["id"], short_time(d["started_at"]), d["status"],
                 "keep" if d["keep"] else "waits (append-only)" if d.get("waiting")
                 else "would remove" if args.dry_run else "removed",
                 ", ".join(d["reasons"])] for d in decisions]
        print(table(["BACKUP", "STARTED", "STATUS", "ACTION", "KEPT BY"], rows))
    for target in sorted({w["target"] for w in report.get("waiting", [])}):
        print(f"kept on append-only target {target}: delete with `kbackupctl prune"
              f" {args.job} --target {target} --credentials-dir DIR` (as root)")
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


def _routing(config: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Per job, per channel that hears about it: its health alerts' floor and the run results
    it is told (issue 19: a job's [alerts])."""
    return {name: {channel: {"min_severity": config.settings.alerts[channel].min_severity,
                             "runs": runs}
                   for channel, runs in config.run_routes(job).items()}
            for name, job in sorted(config.jobs.items())} if config.settings.alerts else {}


def cmd_config_check(args: argparse.Namespace) -> int:
    from kbackup.config import ConfigError, load_config

    try:
        config = load_config(args.config_dir)
    except ConfigError as exc:
        if args.json:
            emit_json({"ok": False, "error": str(exc)})
        print(str(exc), file=sys.stderr)
        return 1
    # Hook programs missing here: a warning, the daemon's PATH and mounts may differ.
    warnings = [f"job {name}: {problem}" for name, job in sorted(config.jobs.items())
                for problem in job.hooks.missing_programs()]
    if args.json:
        return emit_json(
            {
                "ok": True,
                "config_dir": str(config.directory),
                "jobs": sorted(config.jobs),
                "storage": sorted(config.storage),
                "warnings": warnings,
                "routing": _routing(config),
            }
        )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{config.directory}: OK: {len(config.jobs)} job(s) ({', '.join(sorted(config.jobs))}),"
        f" {len(config.storage)} storage target(s)"
    )
    for job, channels in _routing(config).items():
        said = "; ".join(f"{name} (alerts >= {route['min_severity']}, runs:"
                         f" {', '.join(route['runs']) or 'none'})"
                         for name, route in channels.items())
        print(f"routing {job}: {said or 'no alert channel'}")
    return 0


def cmd_rescan(client: Client, args: argparse.Namespace) -> int:
    data = client.call("POST", "/v1/catalog/rescan",
                       {"all_hosts": True} if args.all_hosts else None)
    if args.json:
        return emit_json(data)
    print(f"found {data['found']} complete backups; forgot {data['forgotten']} missing ones")
    if args.all_hosts:
        print(f"other hosts: {data['other_hosts']} backups (read-only; jobs shown as HOST:JOB)")
    if data.get("untrusted"):
        print(f"untrusted: {data['untrusted']} backups not signed by a trusted key (see"
              " `kbackupctl backups`; restoring one needs --force)")
    for problem in data["errors"]:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if data["errors"] else 0


def cmd_reload(client: Client, args: argparse.Namespace) -> int:
    data = client.call("POST", "/v1/reload")
    if args.json:
        return emit_json(data)
    print("configuration reloaded")
    return 0
