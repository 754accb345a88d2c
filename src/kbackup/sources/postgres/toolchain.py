"""Which pg_dump, pg_dumpall and pg_restore to run: never one older than the server (or, for a
restore, than the pg_dump that made the archive).

pg_dump refuses a server of a newer major ("server version mismatch"), and pg_restore an
archive written by a newer pg_dump; after a server upgrade the client one major behind is the
most common way a backup breaks. So the tools are chosen per run: from the PostgreSQL client
directories Debian installs side by side (/usr/lib/postgresql/<major>/bin; the programs on
PATH only when there are none), the same major as needed, else the newest, never an older one.
`pg_bin_dir` in [[postgres]] names the one directory to use instead; an explicit
`pg_dump = "/path"` (pg_restore, pg_dumpall) is used as given, its version checked too. When
nothing fits, ToolchainError says so in one line, before anything is dumped or touched.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from kbackup.config import read_secret_file
from kbackup.errors import SourceError
from kbackup.process import child_env
from kbackup.sources.postgres.config import PostgresSource

log = logging.getLogger("kbackup.postgres")
CLIENT_DIRS = "/usr/lib/postgresql/*/bin"
VERSION_TIMEOUT = 10.0
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)[.\w]*)")


class ToolchainError(SourceError):
    """No suitable client tool here: one line naming the source, the version needed, the
    newest tool found and the Debian package to install."""


@dataclass(frozen=True)
class Tool:
    """A client program and the version its --version reports."""

    name: str  # pg_dump, pg_dumpall, pg_restore
    path: str
    version: str  # "15.19", "18beta1"
    major: int

    @property
    def where(self) -> str:
        return os.path.dirname(self.path)


@dataclass(frozen=True)
class Need:
    """The oldest major a tool may have (None: any) and why, for the error line."""

    major: int | None
    why: str


def parse_version(output: str) -> tuple[str, int] | None:
    """("15.19", 15) from "pg_dump (PostgreSQL) 15.19 (Debian 15.19-1.pgdg120+1)"."""
    found = _VERSION.search(output)
    return (found.group(1), int(found.group(2))) if found else None


def for_server(version_num: int, version: str) -> Need:
    """What a server needs: server_version_num 170002 -> major 17 (9.6 -> 9: any tool here
    is newer)."""
    shown = version.split()[0] if version.split() else str(version_num)
    return Need(version_num // 10000, f"server is PostgreSQL {shown}")


def for_archive(pg_dump_version: str | None) -> Need:
    """What an archive needs: a pg_restore at least as new as the pg_dump that wrote it.
    Manifests from before the version was recorded need any (the newest is taken)."""
    if not pg_dump_version:
        return Need(None, "the backup records no pg_dump version")
    parsed = parse_version(f"(PostgreSQL) {pg_dump_version}")
    return Need(parsed[1] if parsed else None,
                f"the backup was made by pg_dump {pg_dump_version}")


_seen: dict[tuple[str, int, int], Tool | str] = {}


def inspect_tool(name: str, path: str) -> Tool | str:
    """The tool at `path`, or why it cannot be used. `--version` runs once per file (cached
    by inode and mtime, so an upgraded package is asked again); in its own session, killed
    whole if it does not answer within VERSION_TIMEOUT."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return "not found or not executable"
    key = (path, st.st_ino, st.st_mtime_ns)
    if key not in _seen:
        _seen[key] = _ask_version(name, path)
    return _seen[key]


def _ask_version(name: str, path: str) -> Tool | str:
    try:
        proc = subprocess.Popen([path, "--version"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=child_env(), start_new_session=True, text=True)
    except OSError as exc:
        return f"cannot be run ({exc.strerror})"
    try:
        output, _ = proc.communicate(timeout=VERSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"did not answer --version within {VERSION_TIMEOUT:.0f} s"
    parsed = parse_version(output)
    if parsed is None:
        first = output.strip().splitlines()[0] if output.strip() else "nothing"
        return (f"--version printed no PostgreSQL version ({first[:80]!r}; a wrapper script"
                " must pass --version on to the real tool)")
    return Tool(name, path, parsed[0], parsed[1])


def installed(name: str, dirs: str = CLIENT_DIRS) -> list[Tool]:
    """Every usable `name` of the client directories, oldest first; PATH's when there are
    none (Debian's /usr/bin ones are pg_wrapper, which picks a version its own way)."""
    found = [tool for tool in (inspect_tool(name, os.path.join(d, name))
                               for d in glob.glob(dirs)) if isinstance(tool, Tool)]
    on_path = shutil.which(name)
    if not found and on_path:
        tool = inspect_tool(name, os.path.abspath(on_path))
        found = [tool] if isinstance(tool, Tool) else []
    return sorted(found, key=lambda t: (t.major, _numbers(t.version)))


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def pick(tools: list[Tool], need: Need) -> Tool | None:
    """The newest of the needed major, else the newest newer one; never an older one."""
    if need.major is None:
        return tools[-1] if tools else None
    same = [t for t in tools if t.major == need.major]
    newer = [t for t in tools if t.major > need.major]
    fitting = same or newer
    return fitting[-1] if fitting else None


def _package(need: Need) -> str:
    return f"postgresql-client-{need.major}" if need.major else "postgresql-client"


def choose(who: str, source: PostgresSource | None, name: str, need: Need) -> Tool:
    """The `name` tool for `source` (None: defaults), or ToolchainError in one line; the
    choice is logged (which program ran is the first question when a dump misbehaves)."""
    tool = _choose(who, source, name, need)
    log.info("event=postgres.tool source=%r tool=%s version=%s path=%s need=%r", who,
             name, tool.version, tool.path, need.why)
    return tool


def _choose(who: str, source: PostgresSource | None, name: str, need: Need) -> Tool:
    configured = str(getattr(source, name, name) if source is not None else name)
    if configured != name:
        return _explicit(who, name, configured, need)
    bin_dir = source.pg_bin_dir if source is not None else None
    if bin_dir is not None:
        return _from_bin_dir(who, name, bin_dir, need)
    tools = installed(name)
    chosen = pick(tools, need)
    if chosen is not None:
        return chosen
    if not tools:
        raise ToolchainError(f"{who}: no {name} found in {CLIENT_DIRS} or on PATH; install"
                             f" {_package(need)} or set pg_bin_dir")
    newest = tools[-1]
    raise ToolchainError(f"{who}: {need.why} but the newest {name} here is {newest.version}"
                         f" ({newest.where}); install {_package(need)} or set pg_bin_dir")


def _explicit(who: str, name: str, configured: str, need: Need) -> Tool:
    path = shutil.which(configured) or configured
    found = inspect_tool(name, os.path.abspath(path) if "/" in path else path)
    if isinstance(found, str):
        raise ToolchainError(f'{who}: {path} {found} ({name} = "{configured}")')
    if need.major is not None and found.major < need.major:
        raise ToolchainError(f'{who}: {need.why} but {name} = "{configured}" is'
                             f" {found.version}; install {_package(need)} and point {name}"
                             " at it, or remove the setting to let kbackup choose")
    return found


def _from_bin_dir(who: str, name: str, bin_dir: Path, need: Need) -> Tool:
    found = inspect_tool(name, str(bin_dir / name))
    if isinstance(found, str):
        raise ToolchainError(f"{who}: pg_bin_dir {bin_dir} has no usable {name} ({found});"
                             f" install {_package(need)} and point pg_bin_dir at its bin"
                             " directory, or remove pg_bin_dir")
    if need.major is not None and found.major < need.major:
        raise ToolchainError(f"{who}: {need.why} but {name} in pg_bin_dir {bin_dir} is"
                             f" {found.version}; install {_package(need)} and point pg_bin_dir"
                             f" at /usr/lib/postgresql/{need.major}/bin")
    return found


async def tool_for_server(source: PostgresSource, name: str, version_num: int,
                          version: str) -> Tool:
    """pg_dump or pg_dumpall for the server of `source` (its version as the server said)."""
    return await asyncio.to_thread(choose, f"database {source.name}", source, name,
                                   for_server(version_num, version))


async def pg_restore_for(who: str, source: PostgresSource | None,
                         pg_dump_version: str | None) -> Tool:
    """A pg_restore that can read an archive the given pg_dump wrote."""
    return await asyncio.to_thread(choose, who, source, "pg_restore",
                                   for_archive(pg_dump_version))


async def server_version(source: PostgresSource) -> tuple[int, str]:
    """(server_version_num, server_version) of the source's server, from the connection's
    startup parameters (no query)."""
    kwargs: dict[str, Any] = {"application_name": "kbackup", "connect_timeout": 10}
    try:
        if source.password_file is not None:
            kwargs["password"] = read_secret_file(source.password_file)
        async with await psycopg.AsyncConnection.connect(source.dsn, **kwargs) as conn:
            return (conn.info.server_version,
                    conn.info.parameter_status("server_version") or "")
    except ValueError as exc:
        raise SourceError(f"database {source.name}: {exc}") from None
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise SourceError(f"database {source.name}: cannot connect: {lines[0]}") from None


async def check_tools(source: PostgresSource) -> dict[str, Any]:
    """What a source check reports: the server's version and the tools a backup of it will
    run (pg_dumpall only with globals). Raises ToolchainError (or SourceError when the
    server cannot be reached) in one line."""
    version_num, version = await server_version(source)
    names = ["pg_dump", "pg_dumpall"] if source.globals else ["pg_dump"]
    report: dict[str, Any] = {"server_version": version, "server_version_num": version_num}
    for name in names:
        tool = await tool_for_server(source, name, version_num, version)
        report[name] = {"path": tool.path, "version": tool.version}
    return report
