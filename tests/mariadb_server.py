"""A private MariaDB server for the tests: its own datadir, socket and port (never the
machine's own server), real authentication, a user with a password; always stopped.

`make test` installs mariadb-server (scripts/sysdeps.sh); without mariadbd the tests that
need it fail (they are not skipped: a missing server must not pass as green)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "kbt"
PASSWORD = "s3cret 'pw\""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MariaDb:
    """One running private server; `sql()` runs statements as root over its socket."""

    def __init__(self, base: Path):
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.port = _free_port()
        self.password_file = base / "password"
        self.password_file.write_text(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        install = [shutil.which("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
                   f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                   "--skip-test-db", "--user=" + _user()]
        subprocess.run(install, check=True, capture_output=True, timeout=120)
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--user={_user()}",
             f"--pid-file={self.base / 'mysqld.pid'}", "--skip-log-bin",
             f"--log-error={self.base / 'error.log'}", "--innodb-buffer-pool-size=16M",
             "--skip-name-resolve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited: " + self.error_log())
            if self.socket.exists() and self._ping():
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("mariadbd not ready after 60s: " + self.error_log())
        quoted = PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        self.sql(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{quoted}';"
                 f" GRANT ALL ON *.* TO '{USER}'@'%'; FLUSH PRIVILEGES")

    def _ping(self) -> bool:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                               "-e", "SELECT 1"], capture_output=True).returncode == 0

    def error_log(self) -> str:
        path = self.base / "error.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def sql(self, text: str, database: str | None = None) -> list[list[str]]:
        """Statements as root; the last result's rows as text."""
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "--batch",
                "--skip-column-names"]
        if database:
            argv.append(f"--database={database}")
        done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines()]

    def databases(self) -> list[str]:
        return [r[0] for r in self.sql("SHOW DATABASES")]

    def counts(self, database: str) -> dict[str, int]:
        tables = [r[0] for r in self.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            f" '{database}' AND table_type = 'BASE TABLE'")]
        return {t: int(self.sql(f"SELECT COUNT(*) FROM {quote(database)}.{quote(t)}")[0][0])
                for t in tables}

    def checksum(self, database: str, table: str) -> str:
        return self.sql(f"CHECKSUM TABLE {quote(database)}.{quote(table)} EXTENDED")[0][1]

    def job_entry(self, name: str = "main", databases: str = '"*"', extra: str = "") -> str:
        """A [[mysql]] entry for this server, over TCP with the password file."""
        return f"""
[[mysql]]
name = "{name}"
host = "127.0.0.1"
port = {self.port}
user = "{USER}"
password_file = "{self.password_file}"
databases = {databases}
{extra}
"""


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _user() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


@contextlib.contextmanager
def private_server(prefix: str = "kbt-mariadb-") -> Iterator[MariaDb]:
    """A server of its own for the block, stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server = MariaDb(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDb]:
    with private_server() as server:
        yield server
