"""Data offsets for a custom-format dump that came through a pipe.

pg_dump writing to a pipe cannot go back to fill in where each table's data starts, so its
table of contents says "position not set" (flag 1) for every data entry, and a pg_restore -j
worker finds its table by reading past every row chunk before it. Once the decoded dump sits in
a seekable spool file, fill_offsets() writes the positions in, as pg_dump itself does when its
output is a file: flag 2 and the offset of the block, in place (the same bytes, so nothing
moves). The result is byte for byte the archive pg_dump -f would have written (a test holds
it so).

The layout (pg_backup_archiver.c, pg_backup_custom.c; archive versions 1.14 to 1.16, that is
pg_dump 12 to 17): an int is a sign byte and int_size bytes little-endian, a string an int
length (-1 for NULL) and its bytes, an offset a flag byte and off_size bytes. A data block
starts with a type byte (1 data, 3 large objects) and the entry's dump id; its chunks are an
int length and the bytes; a zero length ends the block. Uncompressed COPY text has no NUL byte,
so "end of block, then block 1 for dump id N" is found with a plain byte search; large-object
data may hold any bytes, so nothing at or after a large-object entry is filled in. Whatever
does not parse or check out exactly is left as it was: pg_restore reads an unfilled archive as
well, only slower.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
SUPPORTED = {(1, 14), (1, 15), (1, 16)}  # pg_dump 12-15, 16, 17
POS_NOT_SET, POS_SET, NO_DATA = 1, 2, 3
BLOCK_DATA = 1
END_OF_BLOCK_SIGN_AND_LENGTH = 5  # a zero int: sign byte and four zero bytes (int_size 4)


Buffer = bytes | bytearray | memoryview
HEAD_BLOCK = 1 << 16  # the table of contents is read in growing pieces from this size
SEARCH_BLOCK = 8 << 20
MAX_TOC = 64 << 20  # past this, a length read from the archive is taken for damage


class Truncated(Exception):
    """More of the stream is needed before the table of contents can be read."""


@dataclass(frozen=True)
class Entry:
    dump_id: int
    desc: str
    flag: int  # POS_NOT_SET: data follows in the archive; NO_DATA: none
    flag_at: int  # where the offset's flag byte sits in the file


@dataclass(frozen=True)
class Toc:
    int_size: int
    off_size: int
    entries: list[Entry]
    end: int  # the first byte after the table of contents: the first data block


class _Reader:
    def __init__(self, data: Buffer):
        self.data, self.pos = data, 0
        self.int_size = 4

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Truncated
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", "replace")


def parse_toc(data: Buffer) -> Toc | None:
    """The table of contents at the head of data; None when the archive is not one this can
    fill in (another format or version, compressed data). Raises Truncated when data ends
    inside it."""
    read = _Reader(data)
    if read.take(5) != MAGIC:
        return None
    version = (read.byte(), read.byte())
    read.byte()  # revision
    read.int_size, off_size, fmt = read.byte(), read.byte(), read.byte()
    if version not in SUPPORTED or fmt != CUSTOM_FORMAT or read.int_size != 4:
        return None
    compression = read.byte() if version >= (1, 15) else read.int()
    if compression != 0:
        return None
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        read.int()
    for _ in range(3):  # database name, server version, pg_dump version
        read.str()
    entries = [_entry(read, version, off_size) for _ in range(read.int())]
    return Toc(read.int_size, off_size, entries, read.pos)


def _entry(read: _Reader, version: tuple[int, int], off_size: int) -> Entry:
    dump_id = read.int()
    read.int()  # had a data dumper
    read.str(), read.str()  # catalog ids: table oid, oid
    read.str()  # tag
    desc = read.str() or ""
    read.int()  # section
    for _ in range(3):  # definition, drop statement, COPY statement
        read.str()
    read.str(), read.str(), read.str()  # namespace, tablespace, table access method
    if version >= (1, 16):
        read.int()  # relkind
    read.str(), read.str()  # owner, "with oids" (always false)
    while read.str() is not None:  # dependencies, ended by a NULL string
        pass
    flag_at = read.pos
    flag = read.byte()
    read.take(off_size)
    return Entry(dump_id, desc, flag, flag_at)


def block_start(toc: Toc, dump_id: int) -> bytes:
    """The bytes a data block of dump_id starts with."""
    return bytes([BLOCK_DATA, 0]) + dump_id.to_bytes(toc.int_size, "little")


def find_blocks(toc: Toc, fd: int) -> dict[int, int]:
    """Where each table's data block starts, in table-of-contents order, up to the first
    large-object entry or the first block not found where it must be."""
    found: dict[int, int] = {}
    at = toc.end
    for entry in toc.entries:
        if entry.flag == NO_DATA:
            continue
        if entry.flag != POS_NOT_SET or "BLOB" in entry.desc or "LARGE" in entry.desc:
            break
        start = block_start(toc, entry.dump_id)
        if not found:
            position = at if os.pread(fd, len(start), at) == start else -1
        else:
            position = _search(fd, bytes(END_OF_BLOCK_SIGN_AND_LENGTH) + start, at)
            position += END_OF_BLOCK_SIGN_AND_LENGTH if position >= 0 else 0
        if position < 0:
            break
        found[entry.dump_id] = position
        at = position + len(start)
    return found


def _search(fd: int, pattern: bytes, at: int) -> int:
    """The first position of pattern in the file from `at` on, or -1. Read in SEARCH_BLOCK
    pieces overlapping by the pattern's length: memory stays small, and no page of the
    file is mapped into the daemon (an mmap'd spool would count in its resident size)."""
    overlap = len(pattern) - 1
    while True:
        block = os.pread(fd, SEARCH_BLOCK, at)
        hit = block.find(pattern)
        if hit >= 0:
            return at + hit
        if len(block) < SEARCH_BLOCK:
            return -1
        at += SEARCH_BLOCK - overlap


def fill_offsets(fd: int) -> int:
    """Write the data offsets into the spooled archive open (read-write) as fd; how many
    were filled (0 for an archive this cannot read)."""
    head = b""
    toc = None
    while toc is None:
        more = os.pread(fd, max(len(head), HEAD_BLOCK), len(head))
        head += more
        try:
            toc = parse_toc(head)
        except Truncated:
            if not more or len(head) > MAX_TOC:
                return 0
            continue
        if toc is None:
            return 0
    positions = find_blocks(toc, fd)
    for entry in toc.entries:
        if entry.dump_id in positions:
            field = bytes([POS_SET]) + positions[entry.dump_id].to_bytes(toc.off_size,
                                                                         "little")
            os.pwrite(fd, field, entry.flag_at)
    return len(positions)
