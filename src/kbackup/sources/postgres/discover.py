"""Which databases a `[[postgres]]` entry with `databases` backs up, asked of the server at
each run (so one created yesterday is in tonight's backup), and the reachability probe of
`kbackupctl sources check`: connect, version, databases and their sizes, read privileges."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kbackup.fields import read_secret_file
from kbackup.sources.base import SourceError
from kbackup.sources.postgres import toolchain
from kbackup.sources.postgres.config import PostgresSource
from kbackup.sources.postgres.dump import one_line

# Connectable, non-template databases: template0/1 hold nothing of the apps, and a database
# with datallowconn off cannot be dumped by anyone. One this role may not connect to stays
# in (its dump fails, naming it); its size needs CONNECT, so it has none.
DATABASES_QUERY = """
SELECT datname, CASE WHEN has_database_privilege(oid, 'CONNECT')
                     THEN pg_database_size(oid) END
FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname
"""

# A role that cannot read everything makes pg_dump fail at the first such table.
UNREADABLE_QUERY = """
SELECT n.nspname || '.' || c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT has_table_privilege(c.oid, 'SELECT')
ORDER BY 1 LIMIT 1
"""


def _password(config: PostgresSource) -> str | None:
    if config.password_file is None:
        return None
    try:
        return read_secret_file(config.password_file)
    except ValueError as exc:
        raise SourceError(f"database {config.name}: {exc}") from None


async def connect(config: PostgresSource, database: str | None = None
                  ) -> psycopg.AsyncConnection[Any]:
    """A connection with the entry's login, to its DSN's database or to `database`."""
    kwargs: dict[str, Any] = {"application_name": "kbackup", "connect_timeout": 10,
                              "autocommit": True}
    password = _password(config)
    if password is not None:
        kwargs["password"] = password
    dsn = config.dsn if database is None else make_conninfo(config.dsn, dbname=database)
    where = config.name if database is None else f"{config.name}:{database}"
    try:
        return await psycopg.AsyncConnection.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        raise SourceError(f"database {where}: cannot connect: {one_line(exc)}") from None


def chosen(config: PostgresSource, found: list[str]) -> list[str]:
    """The server's databases this entry backs up: "*" or the list, minus `exclude`. A
    listed database the server lacks stays in: its dump fails, naming it."""
    wanted = found if config.databases == "*" else list(config.databases or [])
    return [d for d in wanted if not any(fnmatchcase(d, p) for p in config.exclude)]


async def server_databases(config: PostgresSource) -> dict[str, int | None]:
    """Connectable, non-template database -> size in bytes (None: no CONNECT right), asked
    of the DSN's database."""
    try:
        async with await connect(config) as conn:
            cur = await conn.execute(DATABASES_QUERY)
            return {str(name): None if size is None else int(size)
                    for name, size in await cur.fetchall()}
    except psycopg.Error as exc:
        raise SourceError(f"database {config.name}: listing databases failed:"
                          f" {one_line(exc)}") from None


async def discover(config: PostgresSource) -> list[str]:
    """The databases of this run, in name order."""
    return chosen(config, sorted(await server_databases(config)))


async def _read_problem(config: PostgresSource, database: str | None) -> str | None:
    """Why this login cannot dump the database (None: it can)."""
    async with await connect(config, database) as conn:
        cur = await conn.execute(
            "SELECT current_user, current_database(), rolsuper"
            " OR pg_has_role(current_user, 'pg_read_all_data', 'MEMBER')"
            " FROM pg_roles WHERE rolname = current_user")
        row = await cur.fetchone()
        assert row is not None
        user, name, reads_all = row
        if reads_all:
            return None
        cur = await conn.execute(UNREADABLE_QUERY)
        table = await cur.fetchone()
        if table is None:
            return None
        return (f"role {user} lacks pg_read_all_data (cannot read table {table[0]} in"
                f" database {name})")


async def _version(config: PostgresSource) -> tuple[str, int, str]:
    """The server's version (text, number) and the role this login is."""
    async with await connect(config) as conn:
        cur = await conn.execute("SELECT current_setting('server_version'),"
                                 " current_setting('server_version_num')::int, current_user")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0]), int(row[1]), str(row[2])


async def check(config: PostgresSource) -> dict[str, Any]:
    """The probe of one entry: {ok, reason, server_version, databases: [{name, size_bytes}],
    pg_dump}. The first problem found is the reason, one line naming what is missing."""
    result: dict[str, Any] = {"ok": False, "reason": None, "server_version": None,
                              "databases": [], "pg_dump": None}
    try:
        result["server_version"], result["server_version_num"], user = await _version(config)
        version, version_num = result["server_version"], result["server_version_num"]
        tool = await toolchain.tool_for_server(config, "pg_dump", version_num, version)
        result["pg_dump"] = f"{tool.path} ({tool.version})"
        sizes = await server_databases(config)
        if config.multi:
            names = chosen(config, sorted(sizes))
        else:
            own = str(conninfo_to_dict(config.dsn).get("dbname") or "")
            names = [own] if own else []
        result["databases"] = [{"name": n, "size_bytes": sizes.get(n)} for n in names]
        missing = [n for n in names if n not in sizes]
        if missing:
            result["reason"] = f"database {missing[0]} not found on the server"
            return result
        closed = [n for n in names if sizes[n] is None]
        if closed:
            result["reason"] = f"role {user} lacks CONNECT on database {closed[0]}"
            return result
        targets: list[str | None] = list(names) if config.multi else [None]
        for name in targets:
            problem = await _read_problem(config, name)
            if problem:
                result["reason"] = problem
                return result
    except SourceError as exc:
        result["reason"] = str(exc)
        return result
    except psycopg.Error as exc:
        result["reason"] = f"database {config.name}: {one_line(exc)}"
        return result
    result["ok"] = True
    return result
