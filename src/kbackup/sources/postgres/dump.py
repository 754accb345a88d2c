"""A PostgreSQL database, dumped with pg_dump's custom format, uncompressed (-Z0).

pg_dump's own zlib is the slow part of the usual recipe, so it dumps raw and the pipeline
compresses with multi-threaded zstd. The dump and the row counts in the manifest come from one
snapshot: a REPEATABLE READ transaction exports it, pg_dump imports it with --snapshot, and the
counts run inside that same transaction while pg_dump streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from kbackup.config import read_secret_file
from kbackup.handoff import ChunkQueue
from kbackup.sources.base import (
    ProcessStream,
    Source,
    SourceError,
    SourceStream,
    spawn_source,
    stop_source,
)
from kbackup.sources.postgres.config import SEPARATOR
from kbackup.sources.postgres.config import PostgresSource as PostgresConfig
from kbackup.sources.postgres.meta import DatabaseMeta, GlobalsMeta
from kbackup.sources.postgres.toolchain import server_version, tool_for_server
from kbackup.sources.tools import safe_file_part

TABLES_QUERY = """
SELECT n.nspname, c.relname, pg_table_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2
"""


# What the dump will hold, roughly: the tables' data (TOAST included), not their indexes,
# which pg_dump writes as definitions only. On the bench database: 1.49 GB for a 1.23 GB dump,
# where pg_database_size said 1.72 GB.
ESTIMATE_QUERY = """
SELECT coalesce(sum(pg_table_size(c.oid)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
"""


async def count_rows(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """Exact rows per table ("schema.table"), in the connection's current snapshot."""
    counts: dict[str, int] = {}
    async with conn.cursor() as cur:
        await cur.execute(TABLES_QUERY)
        tables = [(schema, table) for schema, table, _ in await cur.fetchall()]
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            await cur.execute(query)
            row = await cur.fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


class PostgresStream(ProcessStream):
    def __init__(
        self,
        source: PostgresDatabase,
        conn: psycopg.AsyncConnection[Any],
        proc: asyncio.subprocess.Process,
        reader: ChunkQueue,
        info: DatabaseMeta,
    ):
        super().__init__(proc, reader, f"database {source.name}: pg_dump")
        self.source = source
        self.conn = conn
        self.info = info
        self.count_task: asyncio.Task[dict[str, int]] | None = None
        if source.config.row_counts == "exact":
            self.count_task = asyncio.create_task(self._count_rows())

    async def _count_rows(self) -> dict[str, int]:
        # Counting runs beside the dump on the same server: parallel workers would only take
        # cores from pg_dump's own backend (measured: 35% more CPU for the same counts), and
        # JIT compiles every big table's count(*) afresh for nothing (~0.1 s of CPU each).
        await self.conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        await self.conn.execute("SET LOCAL jit = off")
        return await count_rows(self.conn)

    async def _table_sizes(self) -> dict[str, int] | None:
        """Each table's size on disk (TOAST included): how the dump's data is shared out
        between tables, which decides how a restore loads it (staged.data_in_parallel)."""
        try:
            async with self.conn.cursor() as cur:
                await cur.execute(TABLES_QUERY)
                return {f"{schema}.{table}": int(size or 0)
                        for schema, table, size in await cur.fetchall()}
        except psycopg.Error:
            return None  # a hint only: the backup does not depend on it

    async def finish(self) -> DatabaseMeta:
        await self.check_exit()
        tables: dict[str, int] | None = None
        if self.count_task is not None:
            try:
                tables = await self.count_task
            except psycopg.Error as exc:
                raise SourceError(
                    f"database {self.source.name}: counting rows failed: {one_line(exc)}"
                ) from exc
        sizes = await self._table_sizes() if self.count_task is not None else None
        return self.info.model_copy(update={"row_counts": tables, "table_sizes": sizes,
                                            "format": "pg_dump custom (-Fc -Z0)"})


class PostgresDatabase(Source):
    kind = "postgres"
    extension = ".dump"
    metadata_field = "database"

    @property
    def file_stem(self) -> str:
        if self.database is None:
            return f"db-{self.name}"
        return f"mdb-{self.config.name}.{safe_file_part(self.database)}"

    def __init__(self, config: PostgresConfig, database: str | None = None):
        """One database: the DSN's, or `database` of a multi-database entry, whose component
        is `<entry>:<database>` and whose failure leaves the entry's other databases."""
        super().__init__(config.name if database is None
                         else f"{config.name}{SEPARATOR}{database}")
        self.config = config
        self.database = database
        self.may_fail = database is not None
        self.dsn = config.dsn if database is None else make_conninfo(config.dsn,
                                                                      dbname=database)

    def _password(self) -> str | None:
        if self.config.password_file is None:
            return None
        try:
            return read_secret_file(self.config.password_file)
        except ValueError as exc:
            raise SourceError(f"database {self.name}: {exc}") from None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        kwargs: dict[str, Any] = {"application_name": "kbackup", "connect_timeout": 10}
        password = self._password()
        if password is not None:
            kwargs["password"] = password
        try:
            return await psycopg.AsyncConnection.connect(self.dsn, **kwargs)
        except psycopg.Error as exc:
            raise SourceError(f"database {self.name}: cannot connect: {one_line(exc)}") from None

    async def estimate_size(self) -> int | None:
        with contextlib.suppress(SourceError, psycopg.Error):
            async with await self._connect() as conn:
                cur = await conn.execute(ESTIMATE_QUERY)
                row = await cur.fetchone()
                return int(row[0]) if row else None
        return None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SourceStream]:
        conn = await self._connect()
        proc: asyncio.subprocess.Process | None = None
        reader: ChunkQueue | None = None
        stream: PostgresStream | None = None
        try:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await conn.set_read_only(True)
            cur = await conn.execute(
                "SELECT pg_export_snapshot(), current_setting('server_version'),"
                " current_setting('server_version_num')::int,"
                " pg_database_size(current_database()), current_database()"
            )
            row = await cur.fetchone()
            assert row is not None
            snapshot, version, version_num, db_size, db_name = row
            pg_dump = await tool_for_server(self.config, "pg_dump", version_num, version)
            argv = [
                pg_dump.path,
                "--format=custom",
                "--compress=0",
                f"--snapshot={snapshot}",
                "--no-password",
                f"--dbname={self.dsn}",
            ]
            argv += [f"--exclude-table-data={t}" for t in self.config.exclude_table_data]
            env = {"PGAPPNAME": "kbackup-pg_dump"}
            password = self._password()
            if password is not None:
                env["PGPASSWORD"] = password
            try:
                proc, reader = await spawn_source(argv, env)
            except FileNotFoundError:
                raise SourceError(
                    f"database {self.name}: {pg_dump.path} not found or not executable"
                    ' (install postgresql-client or set pg_dump = "/path/to/pg_dump")'
                ) from None
            info = DatabaseMeta(database=db_name, server_version=version,
                                server_version_num=version_num, database_size=int(db_size),
                                pg_dump_version=pg_dump.version)
            stream = PostgresStream(self, conn, proc, reader, info)
            yield stream
        except psycopg.Error as exc:
            raise SourceError(f"database {self.name}: {one_line(exc)}") from None
        finally:
            if proc is not None and reader is not None:
                await stop_source(proc, reader)
            if stream is not None:
                for task in (stream.count_task, stream.stderr_task):
                    if task is not None and not task.done():
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
            with contextlib.suppress(Exception):
                await conn.close()


class GlobalsStream(ProcessStream):
    def __init__(self, source: PostgresGlobals, proc: asyncio.subprocess.Process,
                 reader: ChunkQueue):
        super().__init__(proc, reader, f"database {source.name}: pg_dumpall --globals-only")
        self.source = source

    async def finish(self) -> GlobalsMeta:
        await self.check_exit()
        return GlobalsMeta(format="pg_dumpall --globals-only (SQL)",
                           role_passwords=self.source.config.include_role_passwords)


class PostgresGlobals(Source):
    """Roles and tablespaces (pg_dumpall --globals-only), so a restore onto a new server can
    recreate the owners and grants the database dump refers to. Role passwords are left out
    unless include_role_passwords: they are secrets."""

    kind = "globals"
    extension = ".sql"
    small = True

    def __init__(self, config: PostgresConfig):
        super().__init__(config.name)
        self.config = config

    @property
    def component_name(self) -> str:
        return f"{self.name}.globals"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SourceStream]:
        pg_dumpall = await tool_for_server(self.config, "pg_dumpall",
                                           *await server_version(self.config))
        argv = [pg_dumpall.path, "--globals-only", "--no-password",
                f"--dbname={self.config.dsn}"]
        if not self.config.include_role_passwords:
            argv.append("--no-role-passwords")
        env = {"PGAPPNAME": "kbackup-pg_dumpall"}
        if self.config.password_file is not None:
            try:
                env["PGPASSWORD"] = read_secret_file(self.config.password_file)
            except ValueError as exc:
                raise SourceError(f"database {self.name}: {exc}") from None
        try:
            proc, reader = await spawn_source(argv, env)
        except FileNotFoundError:
            raise SourceError(f"database {self.name}: {pg_dumpall.path} not found or not"
                              " executable (install postgresql-client)") from None
        try:
            yield GlobalsStream(self, proc, reader)
        finally:
            await stop_source(proc, reader)
