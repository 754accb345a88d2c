"""Talking to a MariaDB/MySQL server through its own client tools (no Python driver): which
tool, the login as a private defaults file (the password never on a command line or in the
environment of other processes), SQL fed to `mariadb --batch` on stdin, identifiers quoted
with backticks (never formatted in raw)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kbackup.errors import ToolError
from kbackup.fields import read_secret_file
from kbackup.process import error_reason, kill_tree, spawn
from kbackup.sources.mysql.config import MysqlServer, MysqlSource

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")


class MysqlError(ToolError):
    """A MariaDB/MySQL step failed; one line naming the source and the reason."""


def quote(identifier: str) -> str:
    """A database or table name as an SQL identifier: backticks, inner ones doubled."""
    return "`" + identifier.replace("`", "``") + "`"


def literal(text: str) -> str:
    """A string as an SQL literal (information_schema lookups)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_tool(configured: str, names: Sequence[str], what: str) -> str:
    """The configured tool, or the first of `names` on PATH; a one-line error otherwise."""
    for name in [configured] if configured else names:
        found = shutil.which(name)
        if found:
            return found
    wanted = configured or " or ".join(names)
    raise MysqlError(f"{what}: {wanted} not found or not executable (install mariadb-client"
                     " or set dump_tool / client_tool in [[mysql]])")


def reason(stderr: Sequence[str], fields: str = "user or password_file") -> str:
    """The tool's error line, with a hint where users meet it most."""
    text = error_reason(stderr, "no error message")
    if "Access denied for user" in text:
        text += f" (wrong {fields}?)"
    return text


def _option(value: str) -> str:
    """A value in an option file: quoted, backslash and quote escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Login:
    """Where and as whom: one [[mysql]] entry's server and user, or the server of its
    restore-tests (`restore_test`; `for_restore_test`)."""

    source: MysqlSource
    server: MysqlServer | None = None  # None: the source's own

    @classmethod
    def for_restore_test(cls, source: MysqlSource) -> Login:
        return cls(source, source.restore_test)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def at(self) -> MysqlServer:
        return self.server or self.source

    def label(self) -> str:
        """How messages name this login: the entry, and which server when not its own."""
        where = self.at.where()
        return (f"mysql {self.name} ({where})" if self.server is None
                else f"mysql {self.name} (restore_test server {where})")

    def password(self) -> str | None:
        if self.at.password_file is None:
            return None
        try:
            return read_secret_file(self.at.password_file)
        except ValueError as exc:
            raise MysqlError(f"{self.label()}: {exc}") from None

    def options(self) -> str:
        """The [client] section of the private defaults file."""
        server = self.at
        lines = ["[client]", f"user={_option(server.user)}"]
        password = self.password()
        if password is not None:
            lines.append(f"password={_option(password)}")
        if server.socket is not None:
            lines += [f"socket={_option(str(server.socket))}", "protocol=socket"]
        else:
            lines += [f"host={_option(server.host or '')}", f"port={server.port}",
                      "protocol=tcp"]
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def defaults_file(self) -> Iterator[str]:
        """`--defaults-extra-file=...` for a tool: a 0600 file in a 0700 directory, removed
        when the block ends (the tool reads it at start)."""
        directory = tempfile.mkdtemp(prefix="kbackup-my-")
        path = Path(directory) / "client.cnf"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.options())
            yield f"--defaults-extra-file={path}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def hint(self) -> str:
        """The settings a refused login points at."""
        return ("user or password_file" if self.server is None
                else "restore_test.user or restore_test.password_file")

    def client(self) -> str:
        return find_tool(self.source.client_tool, CLIENT_TOOLS, f"mysql {self.name}")

    def dump_tool(self) -> str:
        return find_tool(self.source.dump_tool, DUMP_TOOLS, f"mysql {self.name}")

    async def query(self, text: str, database: str | None = None) -> list[list[str | None]]:
        """Run SQL (statements separated by ;) and return the last result's rows, as text
        (None for NULL). Raises MysqlError naming the server's reason."""
        argv_tail = ["--batch", "--skip-column-names", "--connect-timeout=10"]
        if database is not None:
            argv_tail.append(f"--database={database}")
        client = self.client()
        with self.defaults_file() as option:
            proc = await spawn([client, option, *argv_tail], stdin=asyncio.subprocess.PIPE)
            try:
                out, err = await proc.communicate(text.encode())
            except BaseException:
                await kill_tree(proc)
                raise
        if proc.returncode != 0:
            lines = err.decode(errors="replace").splitlines()
            raise MysqlError(f"{self.label()}: {reason(lines, self.hint())}", lines)
        return [[_unescape(f) for f in line.split("\t")]
                for line in out.decode(errors="replace").splitlines()]

    async def databases(self) -> list[str]:
        return sorted(str(row[0]) for row in await self.query("SHOW DATABASES"))

    async def tables(self, database: str) -> list[str]:
        """Its base tables (not views), in name order."""
        rows = await self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            + literal(database) + " AND table_type = 'BASE TABLE' ORDER BY 1")
        return [str(r[0]) for r in rows]

    async def counts(self, database: str) -> dict[str, int]:
        """Exact rows of every base table (count(*), one query)."""
        tables = await self.tables(database)
        if not tables:
            return {}
        union = " UNION ALL ".join(
            f"SELECT {literal(t)}, COUNT(*) FROM {quote(database)}.{quote(t)}" for t in tables)
        return {str(r[0]): int(r[1] or 0) for r in await self.query(union)}

    async def drop_database(self, database: str) -> None:
        await self.query(f"DROP DATABASE IF EXISTS {quote(database)}")

    async def version(self, tool: str) -> str:
        """A client tool's version line (`mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB`)."""
        proc = await spawn([tool, "--version"])
        out, _ = await proc.communicate()
        return " ".join(out.decode(errors="replace").split()).removeprefix(
            os.path.basename(tool) + " ")


def _unescape(field: str) -> str | None:
    """A field of --batch output: NULL, or text with \\t \\n \\0 \\\\ escapes."""
    if field == "NULL":
        return None
    if "\\" not in field:
        return field
    out, chars = [], iter(field)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            out.append({"t": "\t", "n": "\n", "0": "\0", "\\": "\\"}.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)
