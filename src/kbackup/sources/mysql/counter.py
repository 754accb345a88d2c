"""Rows per table counted from a mariadb-dump/mysqldump SQL stream as it passes: exactly what
the dump holds, without a second snapshot. It also checks the dump's shape cheaply (verify
"structure" runs the same counter over the stored dump).

Why this is exact: the dump escapes newlines inside string literals (\\n), so every raw newline
is outside a literal, and `;` before a newline can only end a statement. An INSERT is
`INSERT INTO `t` VALUES` then row tuples, on one line (MySQL) or one per line (MariaDB
10.11+), up to `;\\n`. Once its string literals are cut out (one C-speed regex over the whole
statement) what remains of a row is numbers, NULL and 0x... (--hex-blob), so each `(` starts
one row. Trigger and routine bodies (between `DELIMITER ;;` and `DELIMITER ;`) are skipped:
an INSERT there is code, not rows."""

from __future__ import annotations

import re

MARK = re.compile(rb"^(?:INSERT INTO `((?:[^`]|``)+)` VALUES ?|CREATE TABLE `((?:[^`]|``)+)` \("
                  rb"|DELIMITER ;;\n)", re.M)
STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'", re.S)  # unrolled: 3x (?:[^'\\]|\\.)*
DELIMITER_END = b"\nDELIMITER ;\n"
TRAILER = b"-- Dump completed"


class DumpShapeError(ValueError):
    """The stream is not a complete, well-formed dump; the first problem, one line."""


class RowCounter:
    """Feed it the dump's bytes in any chunking; `counts` is table -> rows (tables without
    rows included, at 0). `check_complete()` at the end."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._tail = b""  # an incomplete last line, kept for the next chunk
        self._table: str | None = None  # inside this table's INSERT statement
        self._in_code = False  # between DELIMITER ;; and DELIMITER ;
        self._last = b""  # the last non-empty line seen
        self.offset = 0  # bytes of whole lines handled (for messages)

    def feed(self, data: bytes) -> bytes:
        """Count what `data` completes; returns it unchanged (usable as a pass-through)."""
        buffer = self._tail + data
        end = buffer.rfind(b"\n") + 1
        self._tail = buffer[end:]
        if end:
            self._lines(buffer[:end])
        return data

    def _lines(self, buffer: bytes) -> None:
        """Whole lines: alternate between row data, code blocks and the rest."""
        stripped = buffer.rstrip()
        if stripped:
            self._last = stripped.rsplit(b"\n", 1)[-1]
        pos, size = 0, len(buffer)
        while pos < size:
            if self._table is not None:
                pos = self._rows(buffer, pos)
            elif self._in_code:
                if buffer.startswith(DELIMITER_END[1:], pos):
                    found = pos
                else:
                    found = buffer.find(DELIMITER_END, pos)
                    found = found + 1 if found >= 0 else -1
                if found < 0:
                    pos = size
                else:
                    self._in_code = False
                    pos = found + len(DELIMITER_END) - 1
            else:
                match = MARK.search(buffer, pos)
                if match is None:
                    pos = size
                elif match.group(1) is not None:
                    self._table = _name(match.group(1))
                    self.counts.setdefault(self._table, 0)
                    pos = match.end()
                elif match.group(2) is not None:
                    self.counts.setdefault(_name(match.group(2)), 0)
                    pos = match.end()
                else:
                    self._in_code = True
                    pos = match.end()
        self.offset += size

    def _rows(self, buffer: bytes, pos: int) -> int:
        """Count the row tuples from pos to the statement's end (or the buffer's)."""
        end = buffer.find(b";\n", pos)
        stop = len(buffer) if end < 0 else end + 1
        values = STRING.sub(b"", buffer[pos:stop])
        if b"'" in values:
            raise DumpShapeError(f"near byte {self.offset + pos}: unterminated string in the"
                                 f" rows of table {self._table}")
        assert self._table is not None
        self.counts[self._table] += values.count(b"(")
        if end < 0:
            tail = values.rstrip()
            if tail and not tail.endswith(b","):
                raise DumpShapeError(f"near byte {self.offset + pos}: rows of table"
                                     f" {self._table} end neither with , nor ;")
            return stop
        self._table = None
        return end + 2

    def check_complete(self) -> None:
        """The whole dump was seen: no statement left open, mariadb-dump's trailer last."""
        if self._tail:
            self._lines(self._tail + b"\n")
            self._tail = b""
        if self._table is not None:
            raise DumpShapeError(f"the dump ends inside the rows of table {self._table}")
        if not self._last.startswith(TRAILER):
            raise DumpShapeError('the dump does not end with "-- Dump completed": it was cut'
                                 " short")


def _name(quoted: bytes) -> str:
    return quoted.replace(b"``", b"`").decode(errors="replace")
