"""A MariaDB/MySQL database, dumped as SQL by mariadb-dump (or mysqldump) in one consistent
InnoDB snapshot (--single-transaction), streamed through the pipeline; its rows are counted
from the stream as it passes (counter.py), so the manifest's counts are the dump's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kbackup.handoff import ChunkQueue, Transform
from kbackup.sources.base import (
    ProcessStream,
    Source,
    SourceError,
    SourceStream,
    spawn_source,
    stop_source,
)
from kbackup.sources.mysql.client import Login, MysqlError, literal
from kbackup.sources.mysql.config import SEPARATOR, MysqlSource
from kbackup.sources.mysql.counter import DumpShapeError, RowCounter
from kbackup.sources.mysql.meta import MysqlMeta
from kbackup.sources.tools import safe_file_part

# Consistent for InnoDB tables without locking them; routines, events and triggers in; binary
# columns as 0x... so the SQL stays plain text (and the counter's view of it simple).
DUMP_OPTIONS = ["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob",
                "--quick", "--default-character-set=utf8mb4"]
FORMAT = "mariadb-dump SQL (--single-transaction --hex-blob), no CREATE DATABASE"


async def database_info(login: Login, database: str, what: str) -> MysqlMeta:
    """The server's version and the database's defaults and size; SourceError when the
    server cannot be asked or has no such database."""
    rows = await login.query(
        "SELECT @@version, default_character_set_name, default_collation_name,"
        " (SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
        f" WHERE table_schema = {literal(database)})"
        f" FROM information_schema.schemata WHERE schema_name = {literal(database)}")
    if not rows:
        raise SourceError(f"{what}: database {database} not found on the server"
                          f" ({login.at.where()})")
    version, charset, collation, size = rows[0]
    return MysqlMeta(database=database, server_version=version, character_set=charset,
                     collation=collation, database_size=int(size or 0))


class MysqlStream(ProcessStream):
    def __init__(self, proc: asyncio.subprocess.Process, reader: ChunkQueue, what: str,
                 info: MysqlMeta):
        super().__init__(proc, reader, what)
        self.info = info
        self.counter = RowCounter()

    def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        """Counted in the reader thread, before the backup's own transform."""
        count = self.counter.feed
        if transform is None:
            return self.reader.chunks(count)
        return self.reader.chunks(lambda data: transform(count(data)))

    async def finish(self) -> MysqlMeta:
        await self.check_exit()
        try:
            self.counter.check_complete()
        except DumpShapeError as exc:
            raise SourceError(f"{self.what}: {exc}") from None
        return self.info.model_copy(update={"row_counts": dict(sorted(
            self.counter.counts.items())), "row_counts_from": "dump stream", "format": FORMAT})


class MysqlDatabase(Source):
    kind = "mysql"
    extension = ".sql"
    metadata_field = "database"
    may_fail = True  # one of an entry's databases: its failure leaves the others

    def __init__(self, config: MysqlSource, database: str):
        super().__init__(f"{config.name}{SEPARATOR}{database}")
        self.config = config
        self.database = database
        self.login = Login(config)

    @property
    def file_stem(self) -> str:
        return f"mysql-{self.config.name}.{safe_file_part(self.database)}"

    async def estimate_size(self) -> int | None:
        with contextlib.suppress(SourceError, MysqlError):
            return (await database_info(self.login, self.database, self.name)).database_size
        return None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SourceStream]:
        what = f"mysql {self.name}"
        try:
            tool = self.login.dump_tool()
            info = await database_info(self.login, self.database, what)
            version = await self.login.version(tool)
        except MysqlError as exc:
            raise SourceError(str(exc), exc.stderr) from None
        info = info.model_copy(update={"dump_tool": tool, "dump_tool_version": version})
        with self.login.defaults_file() as option:
            argv = [tool, option, *DUMP_OPTIONS, self.database]
            try:
                proc, reader = await spawn_source(argv, {})
            except FileNotFoundError:
                raise SourceError(f"{what}: {tool} not found or not executable") from None
            try:
                yield MysqlStream(proc, reader, f"{what}: {tool.rsplit('/', 1)[-1]}", info)
            finally:
                await stop_source(proc, reader)
