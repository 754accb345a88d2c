"""Filling a piped dump's data offsets gives the archive pg_dump -f writes, byte for byte.

The reference is pg_dump itself: the same database dumped once into a file (pg_dump goes back
and fills in the offsets) and once through a pipe (it cannot). After fill_offsets the piped
copy equals the file but for the creation time in the header; pg_restore -j2 restores it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import PgServer, pg_bindir, table_counts
from pg17 import Pg17, client_bin_dir, pg17

from kbackup.sources.postgres.archive_toc import (
    NO_DATA,
    POS_NOT_SET,
    POS_SET,
    fill_offsets,
    parse_toc,
)

__all__ = ["pg17"]  # the fixture, for pytest

SCHEMA = """
CREATE TABLE orders (id int PRIMARY KEY, note text);
INSERT INTO orders SELECT g, repeat(md5(g::text), 1 + g % 5) FROM generate_series(1, 20000) g;
CREATE TABLE empty_one (id int);
CREATE TABLE "Odd Name" (id int, payload bytea);
INSERT INTO "Odd Name" SELECT g, decode(lpad(to_hex(g), 8, '0') || '0000000000', 'hex')
    FROM generate_series(1, 5000) g;
CREATE TABLE lines (order_id int REFERENCES orders(id), qty int);
INSERT INTO lines SELECT 1 + g % 20000, g FROM generate_series(1, 30000) g;
CREATE INDEX ON lines (qty);
"""
COUNTS = {"public.orders": 20000, "public.empty_one": 0, "public.Odd Name": 5000,
          "public.lines": 30000}


def header_time(data: bytes) -> slice:
    """Where the creation time sits: seven 5-byte ints after the compression field."""
    compression_size = 1 if data[6] >= 15 else 5  # a byte from archive 1.15 on, else an int
    start = 11 + compression_size
    return slice(start, start + 7 * 5)


def blank_time(data: bytes) -> bytes:
    where = header_time(data)
    return data[:where.start] + bytes(where.stop - where.start) + data[where.stop:]


def dump_both(pg_dump: str, dsn: str, tmp: Path, extra: tuple[str, ...] = ()) -> tuple[bytes,
                                                                                     Path]:
    """The file pg_dump wrote (-f: it fills in the offsets) and the path of the piped dump."""
    argv = [pg_dump, "-Fc", "--compress=0", *extra, f"--dbname={dsn}"]
    seekable = tmp / "seekable.dump"
    subprocess.run([*argv, f"--file={seekable}"], check=True)
    piped = tmp / "piped.dump"
    piped.write_bytes(subprocess.run(argv, stdout=subprocess.PIPE, check=True).stdout)
    return seekable.read_bytes(), piped


def fill(path: Path) -> int:
    fd = os.open(path, os.O_RDWR)
    try:
        return fill_offsets(fd)
    finally:
        os.close(fd)


def check_equal_to_pg_dumps_own(reference: bytes, piped: Path) -> None:
    reference_toc = parse_toc(reference)
    assert reference_toc is not None
    data_entries = [e for e in reference_toc.entries if e.flag != NO_DATA]
    assert data_entries and all(e.flag == POS_SET for e in data_entries)
    before = parse_toc(piped.read_bytes())
    assert before is not None
    assert {e.flag for e in before.entries if e.flag != NO_DATA} == {POS_NOT_SET}
    assert fill(piped) == len(data_entries)
    assert blank_time(piped.read_bytes()) == blank_time(reference)


def test_filled_offsets_match_pg_dump_file_output(pg: PgServer, tmp_path: Path) -> None:
    pg.create_database("kbt_offsets")
    try:
        with pg.connect("kbt_offsets") as conn:
            conn.execute(SCHEMA)
        reference, piped = dump_both(str(pg_bindir() / "pg_dump"), pg.dsn("kbt_offsets"),
                                     tmp_path)
        check_equal_to_pg_dumps_own(reference, piped)
        pg.create_database("kbt_offsets_copy")
        subprocess.run([str(pg_bindir() / "pg_restore"), "-j2", "--exit-on-error",
                        f"--dbname={pg.dsn('kbt_offsets_copy')}", str(piped)], check=True)
        assert table_counts(pg, "kbt_offsets_copy") == COUNTS
        sums = "SELECT sum(length(note)), sum(get_byte(payload, 3)) FROM orders, \"Odd Name\"" \
               " WHERE orders.id = \"Odd Name\".id"
        assert pg.query("kbt_offsets_copy", sums) == pg.query("kbt_offsets", sums)
    finally:
        pg.drop_database("kbt_offsets")
        pg.drop_database("kbt_offsets_copy")


def test_large_objects_stop_the_filling_and_still_restore(pg: PgServer, tmp_path: Path) -> None:
    """Large-object data may hold any byte: entries from there on keep "not set"."""
    pg.create_database("kbt_offsets_lo")
    try:
        with pg.connect("kbt_offsets_lo") as conn:
            conn.execute(SCHEMA)
            oid = conn.execute("SELECT lo_from_bytea(0, decode(repeat('00', 64) || '01000a',"
                               " 'hex'))").fetchall()[0][0]
            conn.execute("CREATE TABLE after_lo (id int)")
        _, piped = dump_both(str(pg_bindir() / "pg_dump"), pg.dsn("kbt_offsets_lo"), tmp_path)
        toc = parse_toc(piped.read_bytes())
        assert toc is not None
        with_data = [e for e in toc.entries if e.flag == POS_NOT_SET]
        blob_at = next(i for i, e in enumerate(with_data) if "BLOB" in e.desc)
        assert fill(piped) == blob_at
        filled = parse_toc(piped.read_bytes())
        assert filled is not None
        flags = [e.flag for e in filled.entries if e.flag != NO_DATA]
        assert flags == [POS_SET] * blob_at + [POS_NOT_SET] * (len(flags) - blob_at)
        pg.create_database("kbt_offsets_lo_copy")
        subprocess.run([str(pg_bindir() / "pg_restore"), "-j2", "--exit-on-error",
                        f"--dbname={pg.dsn('kbt_offsets_lo_copy')}", str(piped)], check=True)
        assert table_counts(pg, "kbt_offsets_lo_copy") == {**COUNTS, "public.after_lo": 0}
        blob = pg.query("kbt_offsets_lo_copy", "SELECT lo_get(%s)", (oid,))[0][0]
        assert bytes(blob) == bytes(64) + b"\x01\x00\x0a"
    finally:
        for name in ("kbt_offsets_lo", "kbt_offsets_lo_copy"):
            pg.drop_database(name)


@pytest.mark.parametrize("damage", ["not-an-archive", "compressed", "truncated"])
def test_archives_it_cannot_read_are_left_alone(pg: PgServer, tmp_path: Path,
                                                 damage: str) -> None:
    pg.create_database("kbt_offsets_bad")
    try:
        with pg.connect("kbt_offsets_bad") as conn:
            conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        argv = [str(pg_bindir() / "pg_dump"), "-Fc", f"--dbname={pg.dsn('kbt_offsets_bad')}"]
        if damage != "compressed":
            argv.insert(2, "--compress=0")
        data = subprocess.run(argv, stdout=subprocess.PIPE, check=True).stdout
        data = {"not-an-archive": b"-- plain SQL\n" + data, "compressed": data,
                "truncated": data[:200]}[damage]
        path = tmp_path / "odd.dump"
        path.write_bytes(data)
        assert fill(path) == 0
        assert path.read_bytes() == data
    finally:
        pg.drop_database("kbt_offsets_bad")


def test_postgresql_17_archive_is_filled_the_same_way(pg17: Pg17, tmp_path: Path) -> None:
    with pg17.connect() as conn:
        conn.execute("DROP DATABASE IF EXISTS kbt_offsets17")
        conn.execute("CREATE DATABASE kbt_offsets17")
    with pg17.connect("kbt_offsets17") as conn:
        conn.execute(SCHEMA)
    pg_dump = client_bin_dir(tmp_path / "bin17") / "pg_dump"
    # its -f file goes to tmp_path, which the wrapper shows read-only: bind it writable
    pg_dump.write_text(pg_dump.read_text().replace(" --bind-ro=/tmp",
                                                   f" --bind-ro=/tmp --bind={tmp_path}"))
    reference, piped = dump_both(str(pg_dump), pg17.dsn("kbt_offsets17"), tmp_path)
    assert reference[5:7] == bytes([1, 16])  # archive version 1.16: pg_dump 17
    check_equal_to_pg_dumps_own(reference, piped)
