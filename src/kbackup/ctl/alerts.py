"""kbackupctl alerts (list, silence, unsilence, test) and check (a Nagios/Icinga plugin)."""

from __future__ import annotations

import argparse

from kbackup.ctl.client import Client, CliError
from kbackup.ctl.output import ago, emit_json, problem_text, short_time, table


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
        data = client.get_for_job("/v1/health", args.job)
    except CliError as exc:
        print(f"KBACKUP UNKNOWN - {exc}")
        return 3
    if data["status"] not in NAGIOS:
        print("KBACKUP UNKNOWN - health not evaluated yet (the daemon has just started)")
        return 3
    code, label = NAGIOS[data["status"]]
    problems = sorted((c for c in data["checks"] if c["severity"] not in ("ok", "info")),
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
