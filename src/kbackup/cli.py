"""kbackupctl: the companion CLI on the daemon's Unix socket.

It must start fast (it is typed by people and called by monitoring), so it imports only the
standard library on its common paths: a minimal HTTP/1.0 client over AF_UNIX (kbackup.ctl),
json, argparse. pydantic is loaded only by `config check`, rich only to draw a progress bar on
a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kbackup.ctl.access import add_parsers as add_access_parsers
from kbackup.ctl.access import cmd_token, cmd_web
from kbackup.ctl.actions import (
    cmd_config_check,
    cmd_keys,
    cmd_prune,
    cmd_reload,
    cmd_rescan,
    cmd_restore,
    cmd_run,
    cmd_storage,
    cmd_verify,
)
from kbackup.ctl.alerts import cmd_alerts, cmd_check
from kbackup.ctl.client import DEFAULT_SOCKET, Client, CliError
from kbackup.ctl.delete import cmd_audit, cmd_delete
from kbackup.ctl.output import emit_json
from kbackup.ctl.pause import cmd_pause, cmd_resume
from kbackup.ctl.reads import cmd_backups, cmd_jobs, cmd_restores, cmd_runs, cmd_show, cmd_status
from kbackup.ctl.report import add_options as add_report_options
from kbackup.ctl.report import cmd_report
from kbackup.ctl.sources import cmd_sources
from kbackup.verify_levels import LEVELS


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


def count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text}")
    return value


def paged(parser: argparse.ArgumentParser, what: str) -> None:
    """--limit N / --all for a listing, newest first."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--limit", type=count, default=50, metavar="N",
                       help=f"show the newest N {what} (default 50)")
    group.add_argument("--all", action="store_true", help=f"show all {what}")


def common_options(top: bool) -> argparse.ArgumentParser:
    """--socket, --config-dir and --json, accepted before and after the command.

    Subcommands get the same options with SUPPRESS defaults, so one given before the command
    is not reset by the subcommand's parser (`kbackupctl --json backups` and
    `kbackupctl backups --json` both work)."""
    options = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    options.add_argument(
        "--socket",
        help="daemon socket (default: $KBACKUP_SOCKET, the config's"
        f" [daemon] socket, or {DEFAULT_SOCKET})",
        **default,
    )
    options.add_argument("--config-dir", help="default: $KBACKUP_CONFIG_DIR or /etc/kbackup",
                         **default)
    options.add_argument("--json", action="store_true",
                         help="machine-readable output: one JSON document", **default)
    return options


def watch_interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds between 0.1 and 3600")
    return seconds


class Subcommands:
    """argparse's subparsers, each created with the shared options."""

    def __init__(self, parser: argparse.ArgumentParser):
        self._subparsers = parser.add_subparsers(dest="command", required=True,
                                                 metavar="COMMAND")
        self._shared = common_options(top=False)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self._subparsers.add_parser(name, parents=[self._shared], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbackupctl", description="Control kbackupd.",
                                     parents=[common_options(top=True)])
    sub = Subcommands(parser)
    p = sub.add_parser("status", help="daemon and job state at a glance")
    p.add_argument("--watch", nargs="?", const=2.0, type=watch_interval, metavar="SECONDS",
                   help="redraw every SECONDS (default 2) until Ctrl-C")
    sub.add_parser("jobs", help="configured jobs and their schedules")
    p = sub.add_parser("backups", help="list backups, newest first")
    p.add_argument("job", nargs="?")
    p.add_argument("--label", help="only backups with this schedule tag or user label")
    paged(p, "backups")
    p = sub.add_parser("show", help="one backup in detail")
    p.add_argument("backup_id")
    p = sub.add_parser("run", help="start a backup of JOB now")
    p.add_argument("job")
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 1 if it failed")
    p.add_argument("--label", help="label the backup (1-64 of A-Z a-z 0-9 . _ -)")
    p.add_argument("--force", action="store_true", help="run even if the job is paused")
    p = sub.add_parser("pause", help="stop JOB's scheduled runs until resumed")
    p.add_argument("job")
    p.add_argument("--reason", help="why (shown in status, health and refused runs)")
    p.add_argument("--for", dest="duration", metavar="DURATION",
                   help="resume by itself after this long, e.g. 2h")
    p = sub.add_parser("resume", help="run JOB on schedule again")
    p.add_argument("job")
    p = sub.add_parser("verify", help="prove a backup restores (checksum, structure, restore-test)")
    p.add_argument("backup_id")
    p.add_argument("--level", choices=LEVELS,
                   default="checksum")
    p.add_argument("--wait", action="store_true", help="wait for the verdict; exit 1 if it failed")
    p = sub.add_parser("restore", help="restore a backup (plans, confirms, safety backup)")
    p.add_argument("backup", help="a backup id, or 'latest' (with --job)")
    p.add_argument("--job")
    p.add_argument("--component", help="only this database or file tree (one of several"
                                       " databases: SOURCE:DATABASE)")
    p.add_argument("--to-database", help="restore into this (new) database instead")
    p.add_argument("--tables", help="comma-separated tables to restore")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--schema-only", action="store_true")
    only.add_argument("--data-only", action="store_true")
    p.add_argument("--no-owner", action="store_true", help="skip ownership and grants")
    p.add_argument("--with-globals", action="store_true",
                   help="first recreate the roles the dump needs (restore onto a new server)")
    p.add_argument("--all-databases", action="store_true",
                   help="roles first, then every database of the backup, each to its own"
                        " name (onto a new server: the source's restore_dsn)")
    p.add_argument("--clean", action="store_true",
                   help="with --to-database: replace an existing non-empty database")
    place = p.add_mutually_exclusive_group()
    place.add_argument("--files-to", help="extract file trees into this empty directory")
    place.add_argument("--to-path", help="restore a SQLite database to this new file (with"
                                         " --component; --clean replaces an existing one)")
    place.add_argument("--in-place", action="store_true",
                       help="replace the live file tree or SQLite file (after a safety backup)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--no-safety-backup", action="store_true")
    p.add_argument("--no-hooks", action="store_true",
                   help="do not run the job's before_restore/after_restore hooks")
    p.add_argument("--force", action="store_true", help="allow restoring a corrupt or untrusted"
                                                         " (unsigned, badly signed) backup")
    p.add_argument("--force-open", action="store_true",
                   help="replace a SQLite file even though a process has it open")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="wait with progress (the default)")
    mode.add_argument("--detach", action="store_true", help="print the run id and return")
    p.add_argument("--gpg-homedir", help="GnuPG home with the private key of an encrypted"
                                         " backup (readable by the daemon)")
    p.add_argument("--passphrase-file", help="the passphrase of a gpg-symmetric backup made"
                                             " before a passphrase change (readable by the"
                                             " daemon)")
    p = sub.add_parser("keys", help="encryption keys the jobs need, and whether they are"
                                    " usable; the manifest signing key")
    p.add_argument("action", choices=["check", "export-signing", "import-signing",
                                      "rotate-signing"])
    p.add_argument("file", nargs="?", help="import-signing: a public key (PEM) to trust")
    p = sub.add_parser("prune", help="apply JOB's retention policy now")
    p.add_argument("job")
    p.add_argument("--dry-run", action="store_true", help="show keep/remove, remove nothing")
    p.add_argument("--target", help="apply it on this target here, with credentials that may"
                                    " delete there (an append-only target; needs the config)")
    p.add_argument("--credentials-dir", help="with --target: TARGET.access_key_id and"
                                             " TARGET.secret_access_key (S3) or TARGET.password"
                                             " (WebDAV) in this directory")
    p = sub.add_parser("storage", help="storage target commands")
    p.add_argument("action", choices=["check"])
    p.add_argument("target", nargs="?", help="one target (default: all)")
    p = sub.add_parser("sources", help="source commands")
    p.add_argument("action", choices=["check"])
    p.add_argument("job", nargs="?", help="one job (default: all)")
    p = sub.add_parser("restores", help="restore history (audit trail)")
    p.add_argument("job", nargs="?")
    paged(p, "restores")
    p = sub.add_parser("delete", help="delete a backup (shows what goes, asks, records who)")
    p.add_argument("backup_id")
    p.add_argument("--target", help="delete only the copy on this storage target")
    p.add_argument("--reason", help="why (kept in the audit trail)")
    p.add_argument("--force", action="store_true",
                   help="also the newest complete backup, or below the job's min_keep")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    p = sub.add_parser("audit", help="restores and deletions: who, when, which backup")
    p.add_argument("job", nargs="?")
    paged(p, "entries")
    p = sub.add_parser("runs", help="recent runs")
    p.add_argument("job", nargs="?")
    p.add_argument("--id", metavar="RUN", help="one run in detail, with its hooks' output")
    paged(p, "runs")
    sub.add_parser("reload", help="reload the configuration (like systemctl reload)")
    p = sub.add_parser("config", help="configuration commands")
    p.add_argument("action", choices=["check"])
    p = sub.add_parser("catalog", help="catalog commands")
    p.add_argument("action", choices=["rescan"])
    p.add_argument("--all-hosts", action="store_true",
                   help="also list the other hosts' backups in a shared bucket (read-only)")
    p = sub.add_parser("alerts", help="firing alerts; silence, unsilence, test the channels",
                       description="kbackupctl alerts [list] | silence JOB|KEY --for 2h"
                       " --reason TEXT | unsilence JOB|KEY | test [CHANNEL]")
    p.add_argument("action", nargs="?", default="list",
                   choices=["list", "silence", "unsilence", "test"])
    p.add_argument("target", nargs="?", help="JOB, 'daemon' or alert KEY; CHANNEL for test")
    p.add_argument("--for", dest="duration", help="how long a silence lasts, e.g. 2h")
    p.add_argument("--reason", help="why (shown with the silence)")
    p = sub.add_parser("report", help="the report: backups, failures, verifications, sizes,"
                       " time to recover, storage, open alerts; --send CHANNEL sends it now")
    add_report_options(p)
    p = sub.add_parser("check", help="Nagios/Icinga check: one line, exit 0/1/2/3")
    p.add_argument("job", nargs="?")
    add_access_parsers(sub)  # token, web
    return parser


COMMANDS = {
    "status": cmd_status,
    "jobs": cmd_jobs,
    "backups": cmd_backups,
    "show": cmd_show,
    "run": cmd_run,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "runs": cmd_runs,
    "verify": cmd_verify,
    "restore": cmd_restore,
    "restores": cmd_restores,
    "delete": cmd_delete,
    "audit": cmd_audit,
    "keys": cmd_keys,
    "prune": cmd_prune,
    "storage": cmd_storage,
    "sources": cmd_sources,
    "reload": cmd_reload,
    "catalog": cmd_rescan,
    "alerts": cmd_alerts,
    "check": cmd_check,
    "report": cmd_report,
    "token": cmd_token,
    "web": cmd_web,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "config":
            return cmd_config_check(args)
        return COMMANDS[args.command](Client(socket_path(args)), args)
    except CliError as exc:
        if args.json:  # still one JSON document on stdout, for scripts
            emit_json({"error": str(exc), "exit_code": exc.code})
        print(f"kbackupctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
