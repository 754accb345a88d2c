"""The right PostgreSQL client tools (issue 16): chosen per server from the installed client
directories, never older than the server (or than the pg_dump that made an archive); one line
naming the source, the versions and the package to install otherwise. Against the real
PostgreSQL 15 of this machine and a real PostgreSQL 17 in a trixie container (tests/pg17.py),
with the real tools installed here (15 only)."""

from __future__ import annotations

import glob
import re
import subprocess
import time
from pathlib import Path

import pytest
from pg17 import Pg17, pg17
from test_config import GOOD_JOB, check, make_config

from conftest import PgServer
from kbackup.sources.postgres import toolchain
from kbackup.sources.postgres.config import PostgresSource
from kbackup.sources.postgres.toolchain import (
    Need,
    Tool,
    ToolchainError,
    check_tools,
    for_archive,
    for_server,
    installed,
    parse_version,
    pg_restore_for,
    pick,
)

__all__ = ["pg17"]  # the fixture, for pytest

HOST_MAJOR = max(int(Path(d).parent.name) for d in glob.glob("/usr/lib/postgresql/*/bin"))


def host_tool(name: str) -> tuple[str, str]:
    """(directory, version) of the newest `name` here, as its own --version says."""
    directory = f"/usr/lib/postgresql/{HOST_MAJOR}/bin"
    out = subprocess.run([f"{directory}/{name}", "--version"], capture_output=True,
                         text=True, check=True).stdout
    found = re.search(r"\(PostgreSQL\) (\S+)", out)
    assert found, out
    return directory, found.group(1)


def source(dsn: str, **fields: object) -> PostgresSource:
    return PostgresSource.model_validate({"name": "shop", "dsn": dsn, **fields})


# ---------------------------------------------------------------------- the rule


def test_versions_are_read_from_what_the_tools_print() -> None:
    assert parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)") == ("15.20", 15)
    assert parse_version("pg_restore (PostgreSQL) 17.2") == ("17.2", 17)
    assert parse_version("pg_dump (PostgreSQL) 18beta1") == ("18beta1", 18)
    assert parse_version("pg_dump (PostgreSQL) 9.6.24") == ("9.6.24", 9)
    assert parse_version("bash: pg_dump: command not found") is None
    assert for_server(170002, "17.2 (Debian 17.2-1)") == Need(17, "server is PostgreSQL 17.2")
    assert for_server(90624, "9.6.24").major == 9
    assert for_archive("99.0") == Need(99, "the backup was made by pg_dump 99.0")
    assert for_archive(None).major is None  # manifests from before the field: the newest


def test_the_same_major_else_the_newest_never_an_older_one() -> None:
    tools = [Tool("pg_dump", f"/usr/lib/postgresql/{m}/bin/pg_dump", f"{m}.1", m)
             for m in (13, 15, 17)]
    assert pick(tools, Need(15, "")) is tools[1]
    assert pick(tools, Need(14, "")) is tools[2]  # no 14: the newest
    assert pick(tools, Need(17, "")) is tools[2]
    assert pick(tools, Need(18, "")) is None
    assert pick(tools, Need(None, "")) is tools[2]
    assert pick([], Need(None, "")) is None


def test_the_installed_tools_are_found_with_their_versions() -> None:
    directory, version = host_tool("pg_dump")
    found = installed("pg_dump")
    assert found[-1].path == f"{directory}/pg_dump"
    assert found[-1].version == version and found[-1].major == HOST_MAJOR


# ---------------------------------------------------------------------- this machine's server


async def test_a_server_of_the_same_major_gets_that_major_s_tools(pg: PgServer) -> None:
    report = await check_tools(source(pg.dsn()))
    assert report["server_version_num"] // 10000 == HOST_MAJOR
    for name in ("pg_dump", "pg_dumpall"):
        directory, version = host_tool(name)
        assert report[name] == {"path": f"{directory}/{name}", "version": version}


async def test_pg_bin_dir_without_tools_is_one_clear_line(pg: PgServer, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(ToolchainError) as caught:
        await check_tools(source(pg.dsn(), pg_bin_dir=str(empty)))
    assert str(caught.value) == (
        f"database shop: pg_bin_dir {empty} has no usable pg_dump (not found or not"
        f" executable); install postgresql-client-{HOST_MAJOR} and point pg_bin_dir at its"
        " bin directory, or remove pg_bin_dir")


async def test_pg_bin_dir_is_used_instead_of_the_search(pg: PgServer) -> None:
    directory, version = host_tool("pg_dump")
    report = await check_tools(source(pg.dsn(), pg_bin_dir=directory, globals=False))
    assert report["pg_dump"] == {"path": f"{directory}/pg_dump", "version": version}
    assert "pg_dumpall" not in report


async def test_an_explicit_tool_must_say_its_version(pg: PgServer, tmp_path: Path) -> None:
    """A wrapper that does not pass --version on cannot be checked: refused, named."""
    wrapper = tmp_path / "my-pg_dump"
    wrapper.write_text('#!/bin/sh\necho "dumping..."\nexit 3\n')  # never runs pg_dump
    wrapper.chmod(0o755)
    with pytest.raises(ToolchainError) as caught:
        await check_tools(source(pg.dsn(), pg_dump=str(wrapper)))
    assert str(caught.value).startswith(
        f"database shop: {wrapper} --version printed no PostgreSQL version ('dumping...';")
    wrapper.write_text('#!/bin/sh\n[ "$1" = --version ] && exec pg_dump --version\n'
                       'exec pg_dump "$@"\n')
    report = await check_tools(source(pg.dsn(), pg_dump=str(wrapper)))
    assert report["pg_dump"] == {"path": str(wrapper), "version": host_tool("pg_dump")[1]}


async def test_an_archive_of_a_newer_pg_dump_needs_a_newer_pg_restore() -> None:
    directory, version = host_tool("pg_restore")
    assert (await pg_restore_for("database shop", None, version)).path == (
        f"{directory}/pg_restore")
    assert (await pg_restore_for("database shop", None, None)).version == version
    with pytest.raises(ToolchainError) as caught:
        await pg_restore_for("database shop", None, "99.0")
    assert str(caught.value) == (
        f"database shop: the backup was made by pg_dump 99.0 but the newest pg_restore here"
        f" is {version} ({directory}); install postgresql-client-99 or set pg_bin_dir")


def test_pg_bin_dir_must_be_an_absolute_path(tmp_path: Path) -> None:
    job = GOOD_JOB.replace('user=kbackup"', 'user=kbackup"\npg_bin_dir = "usr/lib/pg"')
    conf = make_config(tmp_path, job=job)
    result = check(conf)
    assert result.returncode == 1
    assert (f"{conf}/jobs.d/shop.toml: postgres.0.pg_bin_dir: expected an absolute directory"
            " path, got 'usr/lib/pg'") in result.stderr, result.stderr
    job = GOOD_JOB.replace('user=kbackup"', 'user=kbackup"\npg_bin_dir = "/usr/lib/pg"')
    assert check(make_config(tmp_path / "good", job=job)).returncode == 0


# ---------------------------------------------------------------------- PostgreSQL 17


async def test_host_tools_against_a_newer_server_fail_in_one_line(pg17: Pg17) -> None:
    with pg17.connect() as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
    assert version.startswith("17.")
    directory, tool_version = host_tool("pg_dump")
    with pytest.raises(ToolchainError) as caught:
        await check_tools(source(pg17.dsn()))
    assert str(caught.value) == (
        f"database shop: server is PostgreSQL {version} but the newest pg_dump here is"
        f" {tool_version} ({directory}); install postgresql-client-17 or set pg_bin_dir")


async def test_an_explicit_older_pg_dump_against_a_newer_server(pg17: Pg17) -> None:
    directory, tool_version = host_tool("pg_dump")
    with pytest.raises(ToolchainError) as caught:
        await check_tools(source(pg17.dsn(), pg_dump=f"{directory}/pg_dump"))
    assert f'but pg_dump = "{directory}/pg_dump" is {tool_version}; install' in str(
        caught.value)
    with pytest.raises(ToolchainError) as caught:
        await check_tools(source(pg17.dsn(), pg_bin_dir=directory))
    assert str(caught.value).endswith(
        f"but pg_dump in pg_bin_dir {directory} is {tool_version}; install"
        " postgresql-client-17 and point pg_bin_dir at /usr/lib/postgresql/17/bin")


def test_a_tool_that_does_not_answer_is_stopped_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit program whose --version hangs (here: a child holding its stdout) is given
    up after VERSION_TIMEOUT, and its whole process group is killed."""
    monkeypatch.setattr(toolchain, "VERSION_TIMEOUT", 1.0)
    marker = f"kbt-hang-{tmp_path.name}"
    hanging = tmp_path / "pg_dump-hangs"
    hanging.write_text(f"#!/bin/sh\nsh -c 'sleep 600; : {marker}' &\nwait\n")
    hanging.chmod(0o755)
    started = time.monotonic()
    found = toolchain.inspect_tool("pg_dump", str(hanging))
    assert found == "did not answer --version within 1 s"
    assert time.monotonic() - started < 10
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == "", f"left running: {left}"
