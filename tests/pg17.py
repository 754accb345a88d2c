"""A real PostgreSQL 17 server for tests, from a Debian 13 (trixie) tree run by systemd-nspawn.

This machine has PostgreSQL 15 only; the client-tools tests need a newer server. The trixie
tree (debootstrap minbase + postgresql-17) is made once and cached under
KBACKUP_PG17_CACHE (default /var/cache/kbackup-pg17), in a directory named by a key of its
recipe, so a changed recipe makes a new tree. Each server runs in the tree with
`--volatile=overlay` (writes go to a tmpfs over it: the cached tree is never modified) and
without private networking, so it listens on this machine's 127.0.0.1, on a free port, with
trust authentication. The server is always stopped, whatever the test did.

    python tests/pg17.py build    make (or find) the cached tree, report its cost
    python tests/pg17.py run      start a server, print its DSN, stop on Enter
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SUITE = "trixie"
MAJOR = 17
PACKAGES = f"postgresql-{MAJOR}"
# Bump when the way the tree is made changes.
RECIPE = 1
BIN = f"/usr/lib/postgresql/{MAJOR}/bin"


def mirror() -> str:
    """The Debian mirror this machine's apt uses (deb.debian.org when none is found)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def cache_dir() -> Path:
    return Path(os.environ.get("KBACKUP_PG17_CACHE", "/var/cache/kbackup-pg17"))


def tree_dir() -> Path:
    recipe = f"{SUITE} {mirror()} {PACKAGES} {RECIPE}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return cache_dir() / f"{SUITE}-{key}"


def unavailable() -> str | None:
    """Why the container cannot run here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (apt-get install systemd-container)"
    if not (tree_dir() / ".complete").exists() and shutil.which("debootstrap") is None:
        return "no cached trixie tree and debootstrap is not installed"
    return None


def ensure_tree() -> Path:
    """The cached tree, made first if missing (a few minutes; network to the mirror). A lock
    keeps two test processes from making it at once."""
    tree = tree_dir()
    if (tree / ".complete").exists():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    with open(tree.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / ".complete").exists():
            return tree
        started = time.monotonic()
        partial = tree.with_name(tree.name + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        log = tree.parent / f"{tree.name}.log"
        with open(log, "w") as out:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE,
                 str(partial), mirror()], stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0 or not Path(f"{partial}{BIN}/postgres").exists():
            raise RuntimeError(f"debootstrap of the {SUITE} tree failed; log in {log}")
        seconds = time.monotonic() - started
        size = subprocess.run(["du", "-sh", str(partial)], capture_output=True,
                              text=True).stdout.split()[0]
        (partial / ".complete").write_text(
            f"recipe {RECIPE}: {SUITE} {PACKAGES} from {mirror()}\n"
            f"made in {seconds:.0f} s, {size}\n")
        partial.rename(tree)
        for old in tree.parent.glob(f"{SUITE}-*"):  # trees of an older recipe
            if old.is_dir() and old != tree:
                shutil.rmtree(old, ignore_errors=True)
        return tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pg17:
    """One running server: its port, DSNs and the nspawn process that holds it."""

    def __init__(self, tree: Path, port: int, log: Path):
        self.tree = tree
        self.host = "127.0.0.1"
        self.port = port
        self.user = "postgres"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[object]:
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=3)

    def start(self, timeout: float = 90.0) -> None:
        script = (f"set -e; {BIN}/initdb -D /tmp/pgdata -U postgres --auth=trust -E UTF8"
                  f" --locale=C.UTF-8 >/tmp/initdb.log; exec {BIN}/postgres -D /tmp/pgdata"
                  f" -c listen_addresses=127.0.0.1 -c port={self.port}"
                  " -c unix_socket_directories=/tmp -c fsync=off")
        argv = ["systemd-nspawn", "--quiet", f"--directory={self.tree}", "--register=no",
                "--keep-unit", "--volatile=overlay", "--as-pid2", "--user=postgres",
                "--kill-signal=SIGINT", f"--machine=kbackup-pg17-{self.port}",
                "/bin/sh", "-c", script]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL {MAJOR} container exited"
                                   f" {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"PostgreSQL {MAJOR} not ready after {timeout:.0f} s:\n"
                           f"{self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM to nspawn, which sends SIGINT to the container's init (postgres: fast
        shutdown). After 20 s, SIGKILL to that init (every process of the container's PID
        namespace goes with it), then to nspawn. The tmpfs upper layer goes with them."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                      text=True).stdout.split()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            proc.kill()
            proc.wait(10)
            with contextlib.suppress(OSError):  # what nspawn would have removed
                os.rmdir(f"/run/systemd/nspawn/propagate/kbackup-pg17-{self.port}")


def client_bin_dir(directory: Path, tree: Path | None = None) -> Path:
    """A directory of PostgreSQL 17's client programs for this machine: each runs the tree's
    own program in a throwaway container (same network, stdin and stdout passed through), so
    a pg_bin_dir can name 17's tools here although only 15's are installed. /tmp is shown
    to them read-only: a staged restore's pg_restore -j reads its spool file from there."""
    tree = tree or ensure_tree()
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("pg_dump", "pg_dumpall", "pg_restore", "psql"):
        wrapper = directory / name
        wrapper.write_text(
            "#!/bin/sh\n"
            f'exec systemd-nspawn --quiet --directory={tree} --register=no --keep-unit'
            ' --volatile=overlay --pipe --machine="kbt17-$$"'
            ' --bind-ro=/tmp'  # the spool file of a staged restore (tests' state dirs)
            f' {BIN}/{name} "$@"\n')
        wrapper.chmod(0o755)
    return directory


@contextlib.contextmanager
def running_pg17() -> Iterator[Pg17]:
    """Start a PostgreSQL 17 server (making the tree first if needed) and always stop it."""
    tree = ensure_tree()
    base = Path(tempfile.mkdtemp(prefix="kbpg17"))
    server = Pg17(tree, free_port(), base / "nspawn.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg17() -> Iterator[Pg17]:
    """The PostgreSQL 17 server of a test session. Skipped only where the container cannot
    run at all (not root, no systemd-nspawn); a missing tree is made (a minute, measured in
    its .complete stamp), and a failure to make or start it fails the tests."""
    why = unavailable()
    if why:
        pytest.skip(f"PostgreSQL 17 container: {why}")
    with running_pg17() as server:
        yield server


def main(argv: list[str]) -> int:
    why = unavailable()
    if why:
        print(f"pg17: {why}", file=sys.stderr)
        return 1
    if argv[1:] == ["build"]:
        started = time.monotonic()
        tree = ensure_tree()
        print(f"{tree}: {(tree / '.complete').read_text().strip()}"
              f" (this call: {time.monotonic() - started:.0f} s)")
        return 0
    if argv[1:] == ["run"]:
        started = time.monotonic()
        with running_pg17() as server:
            print(f"{server.dsn()} (up in {time.monotonic() - started:.1f} s); Enter stops it")
            sys.stdin.readline()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
