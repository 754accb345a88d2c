"""kbackupctl pause JOB [--reason TEXT] [--for DURATION] and kbackupctl resume JOB."""

from __future__ import annotations

import argparse
from typing import Any

from kbackup.ctl.client import Client, segment
from kbackup.ctl.output import emit_json, short_time


def pause_text(pause: dict[str, Any]) -> str:
    """'paused since 2026-11-23 10:00 by alice (db migration), until 2026-11-23 12:00'"""
    until = f", until {short_time(pause['until'])}" if pause.get("until") else ""
    return (f"paused since {short_time(pause['paused_at'])} by {pause['paused_by']}"
            f" ({pause.get('reason') or 'no reason given'}){until}")


def cmd_pause(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.reason is not None:
        body["reason"] = args.reason
    if args.duration is not None:
        body["for"] = args.duration
    data = client.call("POST", f"/v1/jobs/{segment(args.job)}/pause", body)
    if args.json:
        return emit_json(data)
    print(f"job {data['job']} {pause_text(data['paused'])}: scheduled runs are skipped"
          f" until `kbackupctl resume {data['job']}`"
          + (" or the pause ends" if data["paused"].get("until") else ""))
    return 0


def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    data = client.call("POST", f"/v1/jobs/{segment(args.job)}/resume", {})
    if args.json:
        return emit_json(data)
    if data["resumed"]:
        print(f"job {data['job']} resumed (was {pause_text(data['was'])}); next runs on"
              " schedule")
    else:
        print(f"job {data['job']} was not paused")
    return 0
