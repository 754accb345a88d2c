"""A throwaway PostgreSQL cluster and the benchmark's data set.

The machine's own server must not be used: the benchmark loads gigabytes and would skew
anything else running there. So initdb builds a private cluster in a temp dir, on a free port,
listening on 127.0.0.1 only with trust auth, and it is torn down afterwards.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg


def log(message: str) -> None:
    """Progress on stderr with a timestamp, so a nohup log shows where a long run is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pg_bindir() -> Path:
    """The newest installed server binaries (initdb is not on PATH on Debian)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return Path(found[-1]).parent


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parts[4])
    except (IndexError, ValueError):
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A private cluster under base/; started by start(), removed with the temp dir."""

    def __init__(self, base: Path, bindir: Path):
        self.base = base
        self.bindir = bindir
        self.data = base / "pgdata"
        self.logfile = base / "postgres.log"
        self.port = free_port()
        self.started = False
        # initdb refuses to run as root: run the server tools as postgres when we are root.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            shutil.chown(self.base, "postgres", "postgres")
        subprocess.run(
            [
                *self.prefix,
                self.tool("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        # fsync off and a large max_wal_size only speed up the load; dumps are read-only.
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=8GB"
            " -c checkpoint_timeout=1h"
        )
        # A new session: a Ctrl-C in the terminal must not stop the server under the cleanup.
        subprocess.run(
            [
                *self.prefix,
                self.tool("pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.logfile),
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
            start_new_session=True,
        )
        self.started = True

    def stop(self) -> None:
        if not self.started:
            return
        result = subprocess.run(
            [
                *self.prefix,
                self.tool("pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and (self.data / "postmaster.pid").exists():
            log(f"pg_ctl stop failed: {result.stderr.strip()}; trying immediate mode")
            subprocess.run(
                [
                    *self.prefix,
                    self.tool("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
            )
        self.started = False

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def server_version(self) -> str:
        with self.connect() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


# ----------------------------------------------------------------------------- data set

_SYLLABLES = [
    "in",
    "vo",
    "ice",
    "ta",
    "ble",
    "cus",
    "to",
    "mer",
    "or",
    "der",
    "de",
    "li",
    "ver",
    "y",
    "pay",
    "ment",
    "stock",
    "ware",
    "house",
    "ship",
    "ping",
    "net",
    "tax",
    "rate",
    "item",
    "sup",
    "pli",
    "er",
    "ac",
    "count",
    "ref",
    "und",
    "cre",
    "dit",
    "note",
    "ca",
    "ta",
    "log",
]


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)  # so the frequent words are not all the short ones
    return ordered


def _text_rows(rng: random.Random, target_bytes: int) -> Iterator[bytes]:
    """Blocks of COPY text lines of invoice-like notes: words, numbers, dates (compresses
    ~3-4x). A generator, so the benchmark process stays small while it loads."""
    vocab = _vocabulary(rng)
    # A Zipf-ish weighting, as real text has: a few words are very frequent.
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    produced = 0
    row_id = 0
    while produced < target_bytes:
        lines = []
        for _ in range(500):
            row_id += 1
            words = rng.choices(vocab, weights=weights, k=rng.randint(20, 300))
            for i in range(0, len(words), rng.randint(6, 14)):
                words[i] = f"{words[i].capitalize()} #{rng.randint(1, 999999)}"
            body = " ".join(words) + "."
            day = f"202{rng.randint(0, 5)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            amount = f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"
            lines.append(f"{rng.randint(1, 50000)}\t{day}\t{amount}\t{body}\n")
        block = "".join(lines).encode()
        produced += len(block)
        yield block


def load_database(cluster: Cluster, dbname: str, scale: int, text_mb: int) -> None:
    """pgbench tables at `scale` plus `text_mb` MB of text rows, vacuumed and checkpointed."""
    with cluster.connect() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    log(f"pgbench -i -s {scale} (server-side generation)")
    subprocess.run(
        [
            cluster.tool("pgbench"),
            "-i",
            "-s",
            str(scale),
            "-I",
            "dtGvp",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            dbname,
        ],
        check=True,
        capture_output=True,
    )
    with cluster.connect(dbname) as conn:
        if text_mb > 0:
            log(f"loading {text_mb} MB of text rows")
            conn.execute(
                "CREATE TABLE invoice_notes (id bigserial PRIMARY KEY, customer_id int NOT NULL,"
                " issued date NOT NULL, amount numeric(12,2) NOT NULL, body text NOT NULL)"
            )
            rng = random.Random(20240601)
            with conn.cursor() as cur:
                copy_sql = "COPY invoice_notes (customer_id, issued, amount, body) FROM STDIN"
                with cur.copy(copy_sql) as copy:
                    for block in _text_rows(rng, text_mb * 1_000_000):
                        copy.write(block)
        log("VACUUM (FREEZE, ANALYZE) and CHECKPOINT")
        # Hint bits set now, so the first timed dump does not pay for writing them.
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")


def database_size(cluster: Cluster, dbname: str) -> int:
    with cluster.connect(dbname) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def make_files(root: Path, total_mb: int, seed: int = 7) -> tuple[int, int]:
    """PDF-sized files of random bytes (incompressible, like real PDFs): (count, bytes)."""
    rng = random.Random(seed)
    target = total_mb * 1_000_000
    count = written = 0
    while written < target:
        size = min(rng.randint(50_000, 500_000), max(target - written, 50_000))
        folder = root / f"{2020 + count % 6}" / f"{1 + count % 12:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice-{count:06d}.pdf").write_bytes(os.urandom(size))
        count += 1
        written += size
    return count, written


# Per scale unit: 20k customers, 2k products, 100k orders, 300k order lines, 8 event tables
# of 50k rows; every table has a primary key, most have several secondary indexes and
# foreign keys. A restore of it spends its time in post-data: index builds and FK checks.
INDEXED_EVENT_TABLES = 8


def _indexed_schema(scale: int) -> list[str]:
    """The statements that build the indexed data set (server-side generate_series)."""
    customers, products, orders = 20_000 * scale, 2_000 * scale, 100_000 * scale
    statements = [
        "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE,"
        " name text NOT NULL, country char(2) NOT NULL, created date NOT NULL)",
        f"INSERT INTO customers SELECT i, 'user' || i || '@example.com', md5(i::text),"
        f" chr(65 + (i % 26)::int) || chr(65 + (i % 7)::int), date '2020-01-01' + (i % 1500)::int"
        f" FROM generate_series(1::bigint, {customers}) i",
        "CREATE INDEX ON customers (country, created)",
        "CREATE INDEX ON customers (lower(name))",
        "CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL UNIQUE,"
        " title text NOT NULL, price numeric(10,2) NOT NULL)",
        f"INSERT INTO products SELECT i, 'SKU-' || i, md5(i::text), (i % 9973) / 7.0"
        f" FROM generate_series(1::bigint, {products}) i",
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES"
        " customers, created timestamptz NOT NULL, status text NOT NULL, total numeric(12,2))",
        f"INSERT INTO orders SELECT i, 1 + (i * 7919) % {customers},"
        f" timestamptz '2020-01-01' + i * interval '37 seconds',"
        f" (ARRAY['new','paid','shipped','returned'])[1 + i % 4], (i % 100003) / 3.0"
        f" FROM generate_series(1::bigint, {orders}) i",
        "CREATE INDEX ON orders (customer_id)",
        "CREATE INDEX ON orders (created)",
        "CREATE INDEX ON orders (status, created)",
        "CREATE TABLE order_lines (order_id bigint NOT NULL REFERENCES orders, line int NOT"
        " NULL, product_id int NOT NULL REFERENCES products, qty int NOT NULL,"
        " price numeric(10,2) NOT NULL, PRIMARY KEY (order_id, line))",
        f"INSERT INTO order_lines SELECT o, l, 1 + (o * 31 + l * 7) % {products},"
        f" 1 + (o + l) % 5, ((o * l) % 9973) / 7.0"
        f" FROM generate_series(1::bigint, {orders}) o, generate_series(1::bigint, 3) l",
        "CREATE INDEX ON order_lines (product_id)",
        "CREATE INDEX ON order_lines (product_id, order_id)",
        "CREATE INDEX ON order_lines (price)",
    ]
    for k in range(1, INDEXED_EVENT_TABLES + 1):
        table = f"events_{k}"
        statements += [
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, customer_id int NOT NULL"
            " REFERENCES customers, order_id bigint REFERENCES orders,"
            " at timestamptz NOT NULL, kind text NOT NULL, payload text NOT NULL)",
            f"INSERT INTO {table} SELECT i, 1 + (i * {k + 13}) % {customers},"
            f" 1 + (i * {k + 5}) % {orders}, timestamptz '2021-01-01' + i * interval '11 s',"
            f" 'kind' || (i % 17), md5((i * {k})::text)"
            f" FROM generate_series(1::bigint, {orders // 2}) i",
            f"CREATE INDEX ON {table} (customer_id)",
            f"CREATE INDEX ON {table} (order_id)",
            f"CREATE INDEX ON {table} (at)",
            f"CREATE INDEX ON {table} (kind, at)",
            f"CREATE INDEX ON {table} (payload)",
        ]
    return statements


def load_indexed_database(cluster: Cluster, dbname: str, scale: int) -> None:
    """The second data set: many indexes and foreign keys, vacuumed and checkpointed."""
    with cluster.connect() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    log(f"loading the indexed database {dbname} (scale {scale})")
    with cluster.connect(dbname) as conn:
        for statement in _indexed_schema(scale):
            conn.execute(statement)
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
