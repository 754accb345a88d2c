"""Loading a stored dump into a database (verify's scratch database, a restore), and the
database-level steps around it. The dump holds no CREATE DATABASE or USE: it loads into
whatever database the client is given, so restoring under another name needs no rewriting."""

from __future__ import annotations

from kbackup.repository import Component
from kbackup.sources.base import ReadBack
from kbackup.sources.mysql.client import Login, MysqlError, literal, quote, reason
from kbackup.sources.mysql.meta import MysqlMeta
from kbackup.sources.tools import count_mismatch, feed_process


async def exists(login: Login, database: str) -> bool:
    rows = await login.query("SELECT COUNT(*) FROM information_schema.schemata"
                             f" WHERE schema_name = {literal(database)}")
    return bool(rows and rows[0][0] not in (None, "0"))


async def is_empty(login: Login, database: str) -> bool:
    """No tables, views or routines."""
    rows = await login.query(
        "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema ="
        f" {literal(database)}) + (SELECT COUNT(*) FROM information_schema.routines"
        f" WHERE routine_schema = {literal(database)})")
    return bool(rows and rows[0][0] == "0")


async def create(login: Login, database: str, component: Component) -> None:
    """A new database with the backed-up one's character set and collation."""
    meta = MysqlMeta.of(component)
    text = f"CREATE DATABASE {quote(database)}"
    if meta.character_set:
        text += f" CHARACTER SET {quote(meta.character_set)}"
    if meta.collation:
        text += f" COLLATE {quote(meta.collation)}"
    await login.query(text)


async def load(back: ReadBack, component: Component, login: Login, database: str) -> None:
    """Feed the decoded dump to the client, into `database`; the client stops at the first
    failing statement. MysqlError naming it (or the stream's own error: a bad checksum)."""
    client = login.client()
    with login.defaults_file() as option:
        argv = [client, option, "--batch", "--default-character-set=utf8mb4",
                f"--database={database}"]
        stream = back.open(component, component)
        code, stderr = await feed_process(argv, {}, stream.chunks(), on_chunk=back.advance)
    if code != 0:
        raise MysqlError(f"mysql {component.name}: loading the dump into database {database}"
                         f" failed (exit {code}): {reason(stderr, login.hint())}", stderr)


def compare(component: Component, restored: dict[str, int]) -> str | None:
    """The first table whose restored rows differ from the manifest's; None: all equal."""
    expected = MysqlMeta.of(component).row_counts
    return None if expected is None else count_mismatch(expected, restored, extra=True)
