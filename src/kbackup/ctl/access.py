"""kbackupctl token create|list|revoke and kbackupctl web user add|list|remove: who may call
kbackupd over its TCP listener (/v1/tokens, /v1/web/users, on the Unix socket only)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kbackup.ctl.client import Client, CliError, segment
from kbackup.ctl.output import emit_json, short_time, table


def needs_name(args: argparse.Namespace, usage: str) -> str:
    if not args.name:
        raise CliError(f"missing NAME: kbackupctl {usage}", 2)
    return str(args.name)


def cmd_token(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        items = client.call("GET", "/v1/tokens")["items"]
        if args.json:
            return emit_json(items)
        print(table(["NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED"], [
            [t["name"], t["role"], t["state"], short_time(t["created"]),
             short_time(t["expires"]) if t["expires"] else "never", short_time(t["last_used"])]
            for t in items]) if items else "no tokens (kbackupctl token create NAME --role ...)")
        return 0
    if args.action == "revoke":
        data = client.call("POST", f"/v1/tokens/{segment(needs_name(args, 'token revoke NAME'))}"
                                   "/revoke", {})
        if args.json:
            return emit_json(data)
        print(f"token {data['name']} revoked at {short_time(data['revoked'])}")
        return 0
    name = needs_name(args, "token create NAME --role viewer|admin [--expires 90d]")
    if args.role is None:
        raise CliError("token create: --role viewer|admin is required", 2)
    body: dict[str, Any] = {"name": name, "role": args.role}
    if args.expires is not None:
        body["expires"] = args.expires
    data = client.call("POST", "/v1/tokens", body)
    if args.json:
        return emit_json(data)
    expires = f"expires {short_time(data['expires'])}" if data["expires"] else "never expires"
    print(f"token {data['name']} ({data['role']}, {expires}); it is shown only now:",
          file=sys.stderr)
    print(data["token"])
    return 0


def read_password(args: argparse.Namespace) -> str:
    """From --password-file (its first line), else asked twice on the terminal."""
    if args.password_file:
        try:
            with open(args.password_file) as fh:
                password = fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"--password-file {args.password_file}: {exc.strerror}", 2) from None
        if not password:
            raise CliError(f"--password-file {args.password_file}: the first line is empty", 2)
        return password
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask the password on: pass --password-file FILE", 2)
    import getpass

    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Password again: "):
        raise CliError("the passwords differ: nothing was changed", 2)
    return password


def cmd_web(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        items = client.call("GET", "/v1/web/users")["items"]
        if args.json:
            return emit_json(items)
        print(table(["NAME", "ROLE", "CREATED"], [
            [u["name"], u["role"], short_time(u["created"])] for u in items])
            if items else "no web users (kbackupctl web user add NAME --role ...)")
        return 0
    if args.action == "remove":
        data = client.call("DELETE", "/v1/web/users/"
                           + segment(needs_name(args, "web user remove NAME")))
        if args.json:
            return emit_json(data)
        print(f"web user {data['name']} removed; their sessions ended")
        return 0
    name = needs_name(args, "web user add NAME --role viewer|admin [--password-file F]")
    if args.role is None:
        raise CliError("web user add: --role viewer|admin is required", 2)
    data = client.call("POST", "/v1/web/users", {"name": name, "role": args.role,
                                                 "password": read_password(args),
                                                 "replace": args.replace})
    if args.json:
        return emit_json(data)
    print(f"web user {data['name']} ({data['role']}) {'updated' if args.replace else 'added'}")
    return 0


def add_parsers(sub: Any) -> None:
    """`token` and `web` in kbackupctl's parser (cli.Subcommands)."""
    p = sub.add_parser("token", help="API tokens for the TCP listener: create, list, revoke",
                       description="kbackupctl token create NAME --role viewer|admin"
                       " [--expires 90d] | list | revoke NAME")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=["viewer", "admin"])
    p.add_argument("--expires", metavar="DURATION", help="lifetime, e.g. 90d (default: never)")
    p = sub.add_parser("web", help="web users of the TCP listener: add, list, remove",
                       description="kbackupctl web user add NAME --role viewer|admin"
                       " [--password-file F] [--replace] | user list | user remove NAME")
    p.add_argument("what", choices=["user"])
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=["viewer", "admin"])
    p.add_argument("--password-file", metavar="FILE",
                   help="read the password from the first line of FILE (default: ask twice)")
    p.add_argument("--replace", action="store_true",
                   help="set a new password and role for an existing user")
