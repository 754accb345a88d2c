"""Which databases a `[[mysql]]` entry backs up, asked of the server at each run (one created
yesterday is in tonight's backup), and the probe of `kbackupctl sources check`."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from kbackup.sources.base import SourceError
from kbackup.sources.mysql.client import Login, MysqlError
from kbackup.sources.mysql.config import SYSTEM_DATABASES, MysqlSource


def chosen(config: MysqlSource, found: list[str]) -> list[str]:
    """"*" (minus the system databases) or the list, minus `exclude`. A listed database the
    server lacks stays in: its dump fails, naming it."""
    if config.databases == "*":
        wanted = [d for d in found if d not in SYSTEM_DATABASES]
    else:
        wanted = list(config.databases)
    return [d for d in wanted if not any(fnmatchcase(d, p) for p in config.exclude)]


async def discover(config: MysqlSource) -> list[str]:
    """The databases of this run, in name order; SourceError when the server cannot be asked."""
    try:
        return chosen(config, await Login(config).databases())
    except MysqlError as exc:
        raise SourceError(str(exc), exc.stderr) from None


async def check(config: MysqlSource) -> dict[str, Any]:
    """{ok, reason, server ("MariaDB 10.11.19-..."), dump_tool, databases: [{name,
    size_bytes}], restore_test_server (its version, when set)}: the first problem found is
    the reason, one line naming what is missing. Never raises for it."""
    result: dict[str, Any] = {"ok": False, "reason": None, "server": None,
                              "dump_tool": None, "databases": []}
    login = Login(config)
    try:
        tool = login.dump_tool()
        result["dump_tool"] = f"{tool} ({await login.version(tool)})"
        rows = await login.query(
            "SELECT schema_name, (SELECT COALESCE(SUM(data_length + index_length), 0) FROM"
            " information_schema.tables t WHERE t.table_schema = s.schema_name)"
            " FROM information_schema.schemata s ORDER BY 1")
        sizes = {str(r[0]): int(r[1] or 0) for r in rows}
        version = (await login.query("SELECT @@version"))[0][0]
        result["server"] = f"{'MariaDB' if 'MariaDB' in str(version) else 'MySQL'} {version}"
        names = chosen(config, sorted(sizes))
        result["databases"] = [{"name": n, "size_bytes": sizes.get(n)} for n in names]
        missing = [n for n in names if n not in sizes]
        if missing:
            result["reason"] = (f"mysql {config.name}: database {missing[0]} not found on the"
                                f" server (or user {config.user} may not see it)")
            return result
        if config.restore_test is not None:  # its login fails now, not at the verification
            there = await Login.for_restore_test(config).query("SELECT @@version")
            result["restore_test_server"] = str(there[0][0])
    except MysqlError as exc:
        result["reason"] = str(exc)
        return result
    result["ok"] = True
    return result
