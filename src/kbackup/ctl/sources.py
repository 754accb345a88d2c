"""kbackupctl sources check [JOB]: can every source be reached and read (GET
/v1/sources/check). One line per source; a failing one names the job, the source and what is
missing; exit 1 when any check failed."""

from __future__ import annotations

import argparse
from typing import Any

from kbackup.ctl.client import Client
from kbackup.ctl.output import emit_json
from kbackup.units import format_size


def describe(item: dict[str, Any]) -> str:
    """One line: `job/source (kind): OK, what was found` or `...: FAILED: why`."""
    head = f"{item['job']}/{item['source']} ({item['kind']})"
    if not item["ok"]:
        return f"{head}: FAILED: {item.get('reason') or 'unknown problem'}"
    found = []
    if item.get("server_version"):
        found.append(f"PostgreSQL {item['server_version']}")
    if item.get("server"):  # a kind's own label of its server ("MariaDB 10.11.19-...")
        found.append(item["server"])
    if item.get("pg_dump"):
        found.append(f"pg_dump {item['pg_dump']}")
    databases = item.get("databases")
    if databases:
        found.append("databases " + ", ".join(
            f"{d['name']} {format_size(d['size_bytes'])}" if d.get("size_bytes") is not None
            else d["name"] for d in databases))
    if item.get("path"):
        found.append(f"path {item['path']}")
    return f"{head}: OK" + (f" ({'; '.join(found)})" if found else "")


def cmd_sources(client: Client, args: argparse.Namespace) -> int:
    results = client.get_for_job("/v1/sources/check", args.job)
    if args.json:
        emit_json(results)
    else:
        for item in results:
            print(describe(item))
    return 0 if all(item["ok"] for item in results) else 1
