"""PostgreSQL work shared by the verify and restore verbs: logins, scratch/new databases, feeding a
decoded dump into pg_restore, counting rows. Identifiers are always composed with
psycopg.sql, never formatted into SQL text."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kbackup.config import read_secret_file
from kbackup.process import error_reason, kill_tree, read_stderr_tail, spawn
from kbackup.repository import Component
from kbackup.sources.base import DriverError
from kbackup.sources.postgres.config import PostgresSource
from kbackup.sources.postgres.dump import count_rows, one_line
from kbackup.sources.postgres.meta import DatabaseMeta
from kbackup.sources.postgres.toolchain import pg_restore_for


class PgError(DriverError):
    """A PostgreSQL step of a verify or restore failed; one line naming the step (and
    `stderr`, when a tool failed, what it printed)."""


class CannotCreateDatabase(PgError):
    """The login lacks CREATEDB: callers may fall back to a less exact method."""


@dataclass(frozen=True)
class Login:
    """Where and as whom to restore: a DSN (no password in it) plus an optional secret file."""

    dsn: str
    password_file: Path | None = None
    pg_restore: str = "pg_restore"

    @classmethod
    def for_restore(cls, source: PostgresSource | None, dsn: str | None = None,
                    password_file: Path | None = None) -> Login:
        if dsn is None and source is not None:
            dsn = source.restore_dsn or source.dsn
            password_file = source.restore_password_file if source.restore_dsn else (
                source.password_file)
        if dsn is None:
            raise PgError("no restore login: the job has no such database component")
        return cls(dsn, password_file, source.pg_restore if source else "pg_restore")

    def password(self) -> str | None:
        return read_secret_file(self.password_file) if self.password_file else None

    def database(self) -> str:
        return str(conninfo_to_dict(self.dsn).get("dbname") or "")

    def dsn_for(self, dbname: str) -> str:
        return make_conninfo(self.dsn, dbname=dbname)

    async def connect(self, dbname: str) -> psycopg.AsyncConnection[Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10,
                                  "application_name": "kbackup"}
        password = self.password()
        if password is not None:
            kwargs["password"] = password
        try:
            return await psycopg.AsyncConnection.connect(self.dsn_for(dbname), **kwargs)
        except psycopg.Error as exc:
            raise PgError(f"cannot connect to database {dbname!r}: {one_line(exc)}") from None

    def child_env(self) -> dict[str, str]:
        password = self.password()
        env = {"PGAPPNAME": "kbackup-pg_restore"}
        if password is not None:
            env["PGPASSWORD"] = password
        return env


async def with_pg_restore(login: Login, source: PostgresSource | None,
                          component: Component) -> Login:
    """The login with a pg_restore that can read the component's archive: at least as new as
    the pg_dump the manifest records (toolchain.py); ToolchainError in one line otherwise."""
    tool = await pg_restore_for(f"database {component.name}", source,
                                DatabaseMeta.of(component).pg_dump_version)
    return dataclasses.replace(login, pg_restore=tool.path)


async def database_exists(login: Login, name: str) -> bool:
    async with await login.connect("postgres") as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return await cur.fetchone() is not None


async def database_is_empty(login: Login, name: str) -> bool:
    async with await login.connect(name) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'")
        row = await cur.fetchone()
        return row is not None and row[0] == 0


async def create_database(login: Login, name: str) -> None:
    async with await login.connect("postgres") as conn:
        try:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise PgError(f"cannot create database {name!r}: {one_line(exc)}") from None


async def create_database_like(login: Login, name: str, like: str) -> None:
    """A new empty database owned by the owner of `like` (when we may), else by us."""
    async with await login.connect("postgres") as conn:
        cur = await conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (like,))
        row = await cur.fetchone()
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        try:
            if row is not None:
                try:
                    await conn.execute(create + sql.SQL(" OWNER {}").format(
                        sql.Identifier(row[0])))
                    return
                except psycopg.errors.InsufficientPrivilege:
                    pass
            await conn.execute(create)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CannotCreateDatabase(f"cannot create database {name!r}: {one_line(exc)}"
                                       ) from None
        except psycopg.Error as exc:
            raise PgError(f"cannot create database {name!r}: {one_line(exc)}") from None


async def swap_database(login: Login, live: str, new: str, suffix: str) -> None:
    """Replace database `live` by `new`: carry over database-level settings and grants,
    close the live database's sessions, rename, then drop the old one."""
    old = f"{live[:40]}_kbold_{suffix}"
    ident = sql.Identifier
    async with await login.connect("postgres") as conn:
        try:
            cur = await conn.execute(
                "SELECT unnest(s.setconfig) FROM pg_db_role_setting s"
                " JOIN pg_database d ON d.oid = s.setdatabase"
                " WHERE d.datname = %s AND s.setrole = 0", (live,))
            for (item,) in await cur.fetchall():
                name, _, value = item.partition("=")
                await conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    ident(new), ident(name), sql.Literal(value)))
            cur = await conn.execute(
                "SELECT datacl IS NOT NULL FROM pg_database WHERE datname = %s", (live,))
            row = await cur.fetchone()
            if row and row[0]:
                await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                    ident(new)))
                cur = await conn.execute(
                    "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE"
                    " pg_get_userbyid(a.grantee) END, a.privilege_type"
                    " FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s",
                    (live,))
                for grantee, privilege in await cur.fetchall():
                    if privilege not in ("CONNECT", "CREATE", "TEMPORARY"):
                        continue
                    target = ident(grantee) if grantee else sql.SQL("PUBLIC")
                    await conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                        sql.SQL(privilege), ident(new), target))
            await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                ident(live)))
        except psycopg.Error as exc:
            raise PgError(f"cannot prepare the swap of database {live!r}: {one_line(exc)}"
                          ) from None
        try:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                               " WHERE datname = %s AND pid <> pg_backend_pid()", (live,))
            await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                ident(live), ident(old)))
        except psycopg.Error as exc:
            await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                ident(live)))
            raise PgError(f"cannot swap database {live!r}: {one_line(exc)}; it is unchanged"
                          ) from None
        try:
            await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                ident(new), ident(live)))
        except psycopg.Error as exc:
            await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                ident(old), ident(live)))
            await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                ident(live)))
            raise PgError(f"cannot swap database {live!r}: {one_line(exc)}; it is unchanged"
                          ) from None
        await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(old)))


async def drop_database(login: Login, name: str) -> None:
    async with await login.connect("postgres") as conn:
        try:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        except psycopg.Error as exc:
            raise PgError(f"cannot drop database {name!r}: {one_line(exc)}") from None


async def table_counts(login: Login, name: str) -> dict[str, int]:
    async with await login.connect(name) as conn:
        return await count_rows(conn)


async def run_sql_checks(login: Login, name: str, checks: Sequence[str]) -> str | None:
    """The first failing check as a message, or None. A check fails by returning rows."""
    async with await login.connect(name) as conn:
        for index, check in enumerate(checks):
            try:
                # admin-written SQL from the job file (sql_checks), run as written
                cur = await conn.execute(check)
                row = await cur.fetchone() if cur.description else None
            except psycopg.Error as exc:
                return f"sql_checks[{index}] failed to run: {one_line(exc)}"
            if row is not None:
                return f"sql_checks[{index}] returned rows (first: {tuple(row)!r}): {check}"
    return None


async def run_tool(argv: Sequence[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run a tool that reads no stdin; its exit code and stderr tail (killed if cancelled)."""
    proc = await spawn(argv, env=env, stdout=asyncio.subprocess.DEVNULL)
    try:
        stderr = await read_stderr_tail(proc.stderr)
        return await proc.wait(), stderr
    except BaseException:
        await kill_tree(proc)
        raise


async def rename_database(login: Login, old: str, new: str) -> None:
    async with await login.connect("postgres") as conn:
        try:
            await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(old), sql.Identifier(new)))
        except psycopg.Error as exc:
            raise PgError(f"cannot rename database {old!r} to {new!r}: {one_line(exc)}"
                          ) from None


def failure(step: str, code: int, stderr: list[str]) -> PgError:
    """The step, its exit code and the tool's reason (error_reason: the error line and its
    detail, not the "Command was: ..." that pg_restore ends its report with)."""
    reason = error_reason(stderr, "no message")
    if "must be member of role" in reason or "must be owner of" in reason:
        reason += (" (the restore login may not set the dump's owners: add --no-owner, or set"
                   " restore_dsn to a role that may)")
    return PgError(f"{step} failed (exit {code}): {reason}", stderr)
