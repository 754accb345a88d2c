"""kbackupctl report [--since 7d] [--json] [--send CHANNEL]: the report on the terminal (the
same text a chat channel's digest says), or sent through an alert channel now."""

from __future__ import annotations

import argparse
from urllib.parse import quote, urlencode

from kbackup.ctl.client import Client, CliError
from kbackup.ctl.output import emit_json
from kbackup.report.text import render_text
from kbackup.units import parse_duration


def add_options(parser: argparse.ArgumentParser) -> None:
    """The command's options (cli.py makes the parser)."""
    parser.add_argument("--since", default="7d", metavar="DURATION",
                        help="the window up to now, e.g. 1d, 7d, 30d (default 7d)")
    parser.add_argument("--send", metavar="CHANNEL",
                        help="send it through this alert channel now, as its digest")


def cmd_report(client: Client, args: argparse.Namespace) -> int:
    try:
        parse_duration(args.since)
    except ValueError as exc:
        raise CliError(f"--since: {exc}", 2) from None
    if args.send:
        data = client.call("POST", "/v1/report/send", {"channel": args.send, "since": args.since})
        if args.json:
            emit_json(data)
        elif data["ok"]:
            print(f"report sent through {data['channel']}")
        else:
            print(f"{data['channel']}: FAILED: {data['error']}")
        return 0 if data["ok"] else 1
    data = client.call("GET", "/v1/report?" + urlencode({"since": args.since}, quote_via=quote))
    if args.json:
        return emit_json(data)
    print(render_text(data), end="")
    return 0
