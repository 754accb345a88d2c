"""Shared fixtures: a real PostgreSQL server, a real kbackupd process, real kbackupctl calls.

The machine's PostgreSQL on 127.0.0.1:5432 is used when it answers (KBACKUP_TEST_PG overrides
the DSN); otherwise a private cluster is started with initdb for the session.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytest_plugins = ["kb_users"]  # the test users and groups (fixture test_users)

BIN = Path(sys.executable).parent
KBACKUPD = str(BIN / "kbackupd")
KBACKUPCTL = str(BIN / "kbackupctl")


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server binaries not installed")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, host: str, port: int, user: str):
        self.host, self.port, self.user = host, port, user

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def query(self, dbname: str, query: str | sql.Composable, params: Any = None) -> list[Any]:
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def databases(self, prefix: str) -> list[str]:
        rows = self.query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                          (prefix + "%",))
        return [r[0] for r in rows]


def _start_private_cluster(base: Path) -> tuple[PgServer, list[str]]:
    bindir = pg_bindir()
    data = base / "pgdata"
    port = free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                    str(base / "pg.log"), "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
    return PgServer("127.0.0.1", port, "postgres"), stop


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its layer, its folder: `pytest -m "not e2e"` works."""
    for item in items:
        layer = next((part for part in item.path.parts if part in LAYERS), None)
        if layer is not None:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    dsn = os.environ.get("KBACKUP_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        with psycopg.connect(dsn, dbname="postgres", connect_timeout=3):
            pass
        yield PgServer(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)),
                       str(info.get("user", "postgres")))
        return
    except psycopg.Error:
        pass
    base = Path(tempfile.mkdtemp(prefix="kbpg"))
    server, stop = _start_private_cluster(base)
    try:
        yield server
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


SHOP_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE invoices (
    id serial PRIMARY KEY,
    customer_id int REFERENCES customers(id),
    amount numeric(12,2) NOT NULL,
    issued date NOT NULL DEFAULT current_date
);
CREATE TABLE "Line Items" (invoice_id int REFERENCES invoices(id), text text);
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 50) g;
INSERT INTO invoices (customer_id, amount)
    SELECT 1 + g % 50, g * 1.25 FROM generate_series(1, 2000) g;
INSERT INTO "Line Items" SELECT 1 + g % 2000, md5(g::text) FROM generate_series(1, 3000) g;
"""
SHOP_COUNTS = {"public.customers": 50, "public.invoices": 2000, "public.Line Items": 3000}


def table_counts(pg: PgServer, dbname: str) -> dict[str, int]:
    counts = {}
    tables = pg.query(dbname, "SELECT schemaname, tablename FROM pg_tables WHERE schemaname"
                              " NOT IN ('pg_catalog', 'information_schema')")
    for schema, table in tables:
        rows = pg.query(dbname, sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)))
        counts[f"{schema}.{table}"] = rows[0][0]
    return counts


@contextlib.contextmanager
def made_database(pg: PgServer, prefix: str, schema: str) -> Iterator[str]:
    """A new database `<prefix>_<random>` holding `schema`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    with pg.connect(name) as conn:
        conn.execute(schema)
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture
def shop_db(pg: PgServer) -> Iterator[str]:
    with made_database(pg, "kbt_shop", SHOP_SCHEMA) as name:
        yield name


@pytest.fixture
def pdf_tree(tmp_path: Path) -> Path:
    root = tmp_path / "pdfs"
    for year, month, count in ((2025, 12, 3), (2026, 3, 4)):
        folder = root / str(year) / f"{month:02d}"
        folder.mkdir(parents=True)
        for index in range(count):
            (folder / f"inv-{index}.pdf").write_bytes(os.urandom(30_000 + index * 1000))
    (root / "scratch.tmp").write_text("temporary")
    (root / "README").write_text("uploaded invoices\n")
    return root


_CLI_COPY: list[str] = []


def cli_for_other_users() -> list[str]:
    """kbackupctl runnable by any user: the project may live in a directory only root can
    enter (CI clones into a 0700 temp dir), so run a world-readable copy of the package with
    the base interpreter. The CLI needs nothing but the standard library."""
    if not _CLI_COPY:
        import kbackup

        base = Path(tempfile.mkdtemp(prefix="kbcli"))
        shutil.copytree(Path(kbackup.__file__).parent, base / "kbackup",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        _CLI_COPY.extend([python, "-I", "-c", "import sys; sys.path.insert(0, sys.argv.pop(1));"
                          " from kbackup.cli import main; sys.exit(main())", str(base)])
    return list(_CLI_COPY)


def write_fake_now(path: Path, when: datetime) -> None:
    """Set the time of a daemon started with KBACKUP_FAKE_NOW_FILE: written beside and renamed
    over, since the daemon reads the file at any moment and a half-written one would read as
    the real time (which once fired every schedule at once as a catch-up)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(when.isoformat())
    os.replace(partial, path)


class KbEnv:
    """A kbackupd configuration in a temp dir, the daemon process and kbackupctl calls."""

    def __init__(self, base: Path, sockdir: Path):
        self.base = base
        self.config_dir = base / "conf"
        self.jobs_dir = self.config_dir / "jobs.d"
        self.jobs_dir.mkdir(parents=True)
        self.store = base / "store"
        self.state = base / "state"
        self.socket = sockdir / "kbackupd.sock"
        self.log = base / "kbackupd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "KBACKUP_CONFIG_DIR": str(self.config_dir),
                    "KBACKUP_SOCKET": str(self.socket)}
        self.write_daemon()

    def write_daemon(self, extra: str = "", daemon_extra: str = "") -> None:
        (self.config_dir / "kbackupd.toml").write_text(f"""
[daemon]
socket = "{self.socket}"
socket_group = ""
admin_group = ""
state_dir = "{self.state}"
max_concurrent_jobs = 2
{daemon_extra}

[storage.local]
type = "local"
path = "{self.store}"
{extra}
""")

    def write_job(self, name: str, text: str) -> Path:
        path = self.jobs_dir / f"{name}.toml"
        path.write_text(text)
        return path

    def shop_job(self, pg: PgServer, dbname: str, pdfs: Path | None, name: str = "shop",
                 extra: str = "") -> Path:
        text = f"""
schedules = [ {{ cron = "0 2 * * *", tag = "daily" }} ]
targets = ["local"]
timeout = "10m"
{extra}

[[postgres]]
name = "shop"
dsn = "{pg.dsn(dbname)}"
"""
        if pdfs is not None:
            text += f"""
[[files]]
name = "pdfs"
path = "{pdfs}"
exclude = ["*.tmp"]
"""
        return self.write_job(name, text)

    def start(self, env: dict[str, str] | None = None,
              wait: bool = True) -> subprocess.Popen[bytes]:
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([KBACKUPD, "--config-dir", str(self.config_dir)],
                                     env={**self.env, **(env or {})}, stdout=log, stderr=log)
        if wait:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"kbackupd exited {self.proc.returncode}:\n{self.logs()}")
            if self.socket.exists() and self.ctl("status").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"kbackupd not ready after {timeout}s:\n{self.logs()}")

    def stop(self, sig: int = 15, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def ctl_argv(self) -> list[str]:
        return [KBACKUPCTL, "--socket", str(self.socket)]

    def ctl(self, *args: str, user: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [KBACKUPCTL, "--socket", str(self.socket), *args]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                    *cli_for_other_users(), "--socket", str(self.socket), *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def ctl_json(self, *args: str) -> Any:
        result = self.ctl("--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def ctl_items(self, *args: str) -> list[Any]:
        """The items of a paged listing (backups, runs, restores, audit) as --json gives it."""
        return self.ctl_json(*args)["items"]  # type: ignore[no-any-return]

    def run_backup(self, job: str = "shop") -> dict[str, Any]:
        """kbackupctl run JOB --wait, then the backup as `show --json` returns it."""
        result = self.ctl("run", job, "--wait")
        assert result.returncode == 0, f"{result.stderr}\n{self.logs()}"
        backup_id = result.stdout.strip().splitlines()[-1]
        return self.ctl_json("show", backup_id)

    def backup_dir(self, backup: dict[str, Any]) -> Path:
        started = backup["id"]
        return self.store / backup["job"] / started[:4] / started[4:6] / backup["id"]

    def resign(self, folder: Path) -> None:
        """Sign a backup's manifest.json again with this daemon's key, as kbackupd would
        (a test that edits a manifest on purpose plays someone who holds the key)."""
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(
            (self.state / "signing" / "ed25519.key").read_bytes(), password=None)
        (folder / "manifest.json.sig").write_bytes(
            key.sign((folder / "manifest.json").read_bytes()))  # type: ignore[union-attr,call-arg]


@pytest.fixture
def kb(tmp_path: Path) -> Iterator[KbEnv]:
    with kb_environment(tmp_path) as env:
        yield env


@contextlib.contextmanager
def kb_environment(base: Path) -> Iterator[KbEnv]:
    """A daemon's config, state and socket under base; stopped and cleaned up afterwards."""
    sockdir = Path(tempfile.mkdtemp(prefix="kbs", dir="/tmp"))
    os.chmod(sockdir, 0o755)
    env = KbEnv(base, sockdir)
    try:
        yield env
    finally:
        env.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
        # The daemon's gpg (encrypted jobs) started an agent in its keyring: stop it with the
        # test, as systemd would with the service.
        stop_gpg_agent(env.state / "gnupg")


def stop_gpg_agent(homedir: Path) -> None:
    """gpg leaves an agent running per keyring it used; it would outlive the test run."""
    if homedir.is_dir():
        subprocess.run(["gpgconf", "--homedir", str(homedir), "--kill", "all"],
                       capture_output=True)


# ---------------------------------------------------------------------- shared helpers


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """The first true value of `predicate`, polled every 0.1 s; AssertionError after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def request(kb: KbEnv, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.0 exchange on the daemon's socket: whatever bytes we like (Host is
    kbackupd, as kbackupctl sends it, unless headers name another)."""
    head = f"{method} {path} HTTP/1.0\r\n"
    if not any(name.lower() == "host" for name in headers or {}):
        head += "Host: kbackupd\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(kb.socket))
        sock.sendall((head + "\r\n").encode("latin-1") + (body or b""))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header, _, payload = raw.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, payload


def files_daemon(base: Path) -> tuple[KbEnv, Path]:
    sockdir = Path(tempfile.mkdtemp(prefix="kbs", dir="/tmp"))
    sockdir.chmod(0o755)
    kb = KbEnv(base, sockdir)
    tree = base / "docs"
    tree.mkdir()
    (tree / "a.txt").write_text("hello\n")
    kb.write_job("docs", f'targets = ["local"]\n\n[[files]]\nname = "docs"\npath = "{tree}"\n')
    kb.start()
    return kb, sockdir


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbEnv]:
    """One daemon with a files job for a whole module of raw API requests."""
    kb, sockdir = files_daemon(tmp_path_factory.mktemp("api"))
    try:
        yield kb
    finally:
        kb.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
