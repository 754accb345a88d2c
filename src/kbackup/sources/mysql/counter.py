"""Rows per table counted from a mariadb-dump/mysqldump SQL stream as it passes: exactly what
the dump holds, without a second snapshot. It also checks the dump's shape cheaply (verify
"structure" runs the same counter over the stored dump).

Why lines suffice: the dump escapes newlines inside strings (\\n), so a raw newline is always
outside a literal. An INSERT is `INSERT INTO `t` VALUES` followed by row tuples, on one line
(MySQL) or one per line (MariaDB 10.11+); once the string literals are cut out (C-speed
regex) what remains of a row is numbers, NULL and 0x... (--hex-blob), so each `(` starts
one row."""

from __future__ import annotations

import re

INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES ?")
CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
STRING = re.compile(rb"'(?:[^'\\]|\\.)*'")
TRAILER = b"-- Dump completed"


class DumpShapeError(ValueError):
    """The stream is not a complete, well-formed dump; the first problem, one line."""


class RowCounter:
    """Feed it the dump's bytes in any chunking; `counts` is table -> rows (tables without
    rows included, at 0). `check_complete()` at the end."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._tail = b""
        self._table: str | None = None  # inside this table's INSERT statement
        self._last = b""  # the last non-empty line
        self.lines = 0

    def feed(self, data: bytes) -> bytes:
        """Count what `data` completes; returns it unchanged (usable as a pass-through)."""
        if not data:
            return data
        buffer = self._tail + data
        end = buffer.rfind(b"\n")
        if end < 0:
            self._tail = buffer
            return data
        self._tail = buffer[end + 1:]
        for line in buffer[:end].split(b"\n"):
            self._line(line)
        return data

    def _line(self, line: bytes) -> None:
        self.lines += 1
        if line.strip():
            self._last = line
        if self._table is None:
            match = INSERT.match(line)
            if match is None:
                created = CREATE.match(line)
                if created is not None:
                    self.counts.setdefault(_name(created.group(1)), 0)
                return
            self._table = _name(match.group(1))
            self.counts.setdefault(self._table, 0)
            line = line[match.end():]
        values = STRING.sub(b"", line)
        if b"'" in values:
            raise DumpShapeError(f"line {self.lines}: unterminated string in the rows of"
                                 f" table {self._table}")
        self.counts[self._table] += values.count(b"(")
        tail = values.rstrip()
        if tail.endswith(b";"):
            self._table = None
        elif tail and not tail.endswith(b","):
            raise DumpShapeError(f"line {self.lines}: rows of table {self._table} end neither"
                                 " with , nor ;")

    def check_complete(self) -> None:
        """The whole dump was seen: no statement left open, mariadb-dump's trailer last."""
        if self._tail.strip():
            self._line(self._tail)
            self._tail = b""
        if self._table is not None:
            raise DumpShapeError(f"the dump ends inside the rows of table {self._table}")
        if not self._last.startswith(TRAILER):
            raise DumpShapeError('the dump does not end with "-- Dump completed": it was cut'
                                 " short")


def _name(quoted: bytes) -> str:
    return quoted.replace(b"``", b"`").decode(errors="replace")
