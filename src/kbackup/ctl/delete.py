"""kbackupctl delete (shows what goes, asks for the backup id to be typed, deletes) and
kbackupctl audit (restores and deletions, newest first)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from kbackup.ctl.client import Client, CliError, segment
from kbackup.ctl.output import emit_json, short_time, table
from kbackup.ctl.reads import fetch, more
from kbackup.units import format_size


def print_delete_plan(plan: dict[str, Any], out: TextIO) -> None:
    print(f"delete backup {plan['backup_id']} of job {plan['job']} (started"
          f" {short_time(plan['started_at'])}, trigger {plan['trigger']}, {plan['status']}):",
          file=out)
    rows = []
    for item in plan["targets"]:
        if item.get("error"):
            stored = f"cannot list: {item['error']}"
        elif item.get("objects") is None:
            stored = "-"
        else:
            stored = f"{item['objects']} objects, {format_size(item['size_bytes'])}"
        rows.append([f"  {item['target']}", item["state"], stored])
    if rows:
        print(table(["  TARGET", "STATE", "STORED"], rows), file=out)
    else:
        print("  no target holds anything of it", file=out)
    if plan["remaining_targets"]:
        print(f"  stays on: {', '.join(plan['remaining_targets'])}", file=out)
    else:
        print("  the backup is gone afterwards (the catalog forgets it)", file=out)
    for reason in plan["overridden"]:
        print(f"  --force overrides: {reason}", file=out)


def confirm_delete(plan: dict[str, Any], out: TextIO) -> None:
    word = plan["confirm_word"]
    print(f"This DELETES backup {word}. Type its id to continue: ", end="", file=out,
          flush=True)
    answer = sys.stdin.readline()
    if answer.strip() != word:
        raise CliError("not confirmed: nothing was deleted", 1)


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    path = f"/v1/backups/{segment(args.backup_id)}"
    body: dict[str, Any] = {"force": args.force}
    if args.target:
        body["target"] = args.target
    if args.reason:
        body["reason"] = args.reason
    plan = client.call("DELETE", path, {**body, "dry_run": True})["plan"]
    if args.dry_run:
        if args.json:
            return emit_json(plan)
        print_delete_plan(plan, sys.stdout)
        print("dry run: nothing was deleted")
        return 0
    if not args.json:
        print_delete_plan(plan, sys.stdout)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(f"deleting backup {plan['backup_id']} needs confirmation and there"
                           " is no terminal: add --yes to go ahead", 2)
        out = sys.stdout
        if args.json:  # stdout holds one JSON document: show and ask on stderr
            out = sys.stderr
            print_delete_plan(plan, out)
        confirm_delete(plan, out)
    result = client.call("DELETE", path, body)
    if args.json:
        emit_json(result)
    else:
        if result["targets"]:
            print(f"deleted backup {result['backup_id']} from {', '.join(result['targets'])}")
        if result["remaining_targets"]:
            print(f"still on: {', '.join(result['remaining_targets'])}")
        elif result["catalog"] == "removed":
            print(f"backup {result['backup_id']} is gone; the catalog no longer lists it")
        print(f"recorded as deletion {result['deletion_id']} (kbackupctl audit)")
    for target, problem in result["errors"].items():
        print(f"error: {target}: {problem}", file=sys.stderr)
    for target, problem in result["audit_errors"].items():
        print(f"warning: audit record not stored on {target}: {problem}", file=sys.stderr)
    return 1 if result["errors"] else 0


def audit_result(entry: dict[str, Any]) -> str:
    if entry["kind"] == "restore":
        text = entry["result"]
        if entry.get("error"):
            text += f": {entry['error'][:60]}"
        return text
    text = f"{entry['result']} from {', '.join(entry['targets']) or '-'}"
    if entry.get("remaining_targets"):
        text += f" (still on {', '.join(entry['remaining_targets'])})"
    if entry.get("forced"):
        text += " (forced)"
    if entry.get("reason"):
        text += f": {entry['reason']}"
    return text


def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    data = fetch(client, "/v1/audit", args)
    if args.json:
        return emit_json(data)
    rows = [[short_time(e["at"]), e["kind"], e["backup_id"], e["job"], e["user"],
             audit_result(e)] for e in data["items"]]
    print(table(["WHEN", "WHAT", "BACKUP", "JOB", "WHO", "RESULT"], rows))
    more(data, "entries")
    return 0
