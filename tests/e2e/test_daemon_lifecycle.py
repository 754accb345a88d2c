"""kbackupd as systemd sees it: sd_notify, reload, stop and crash in the middle of a backup,
and failing jobs that must never take the daemon down.

Slow backups are made deterministic with a gated pg_dump: a shell wrapper that records its pid
and environment, then waits for a `release` file before exec'ing the real pg_dump. The test
knows exactly when the run is in flight, and nothing depends on how fast the machine is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import zstandard

from conftest import KBACKUPD, KbEnv, PgServer, free_port, pg_bindir
from kbackup.process import CHILD_ENV_DROP, child_env

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "",
               detail: Callable[[], object] | None = None) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(0.05)


def real_pg_dump() -> str:
    found = shutil.which("pg_dump")
    return found or str(pg_bindir() / "pg_dump")


class GatedPgDump:
    """A pg_dump that blocks until released; records its pid and environment."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.path = directory / "pg_dump-gated.sh"
        self.pid_file = directory / "pg_dump.pid"
        self.env_file = directory / "pg_dump.env"
        self.started = directory / "pg_dump.started"
        self.release_file = directory / "release"
        self.path.write_text(
            "#!/bin/sh\n"
            f'[ "$1" = --version ] && exec {real_pg_dump()} --version\n'
            f"echo $$ > {self.pid_file}\n"
            f"env > {self.env_file}\n"
            f"touch {self.started}\n"
            f"while [ ! -e {self.release_file} ]; do sleep 0.05; done\n"
            f'exec {real_pg_dump()} "$@"\n'
        )
        self.path.chmod(0o755)

    def wait_started(self, timeout: float = 20.0) -> int:
        wait_until(self.started.exists, timeout, "the gated pg_dump to start")
        return int(wait_until(lambda: self.pid_file.read_text().strip(), 5, "its pid file"))

    def release(self) -> None:
        self.release_file.touch()

    def alive(self) -> bool:
        if not self.pid_file.exists():
            return False
        pid = int(self.pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie is dead for our purposes.
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        return False

    def kill(self) -> None:
        """Kill the wrapper's process group (it is a session leader, see process.spawn)."""
        if self.pid_file.exists():
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(self.pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[GatedPgDump]:
    gate = GatedPgDump(tmp_path / "gate")
    try:
        yield gate
    finally:
        gate.kill()


def two_db_job(kb: KbEnv, pg: PgServer, dbname: str, pg_dump: Path, name: str = "shop") -> None:
    """`first` dumps normally and commits; `second` hangs in the gated pg_dump."""
    kb.write_job(name, f"""
targets = ["local"]
timeout = "10m"

[[postgres]]
name = "first"
dsn = "{pg.dsn(dbname)}"

[[postgres]]
name = "second"
dsn = "{pg.dsn(dbname)}"
pg_dump = "{pg_dump}"
""")


def store_files(kb: KbEnv) -> list[Path]:
    return sorted(p for p in kb.store.rglob("*") if p.is_file()) if kb.store.exists() else []


def run_by_id(kb: KbEnv, run_id: str) -> dict[str, Any]:
    runs = {r["id"]: r for r in kb.ctl_json("runs")["items"]}
    assert run_id in runs, runs
    return runs[run_id]


def start_run(kb: KbEnv, job: str = "shop") -> str:
    result = kb.ctl("run", job)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---------------------------------------------------------------------- (a) sd_notify


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket read by a thread, every message
    timestamped. Read continuously like systemd does: the kernel queues only
    net.unix.max_dgram_qlen (often 10) datagrams, then the daemon's send would block."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kbn", dir="/tmp"))
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self.lock:
                self.messages += [(now, line) for line in data.decode().splitlines()]

    def poll(self) -> list[str]:
        with self.lock:
            return [m for _, m in self.messages]

    def wait_for(self, predicate: Callable[[str], bool], after: int = 0,
                 timeout: float = 20.0, what: str = "", log: KbEnv | None = None) -> int:
        """Index of the first message from index `after` on that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.poll()[after:], start=after):
                if predicate(message):
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no sd_notify {what} after {timeout}s; got {self.poll()[after:]}"
                    + (f"\ndaemon log:\n{log.logs()}" if log is not None else ""))
            time.sleep(0.02)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(timeout=5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    try:
        yield listener
    finally:
        listener.close()


def test_child_env_drops_systemd_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CHILD_ENV_DROP:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("KBT_KEEP_ME", "yes")
    env = child_env({"PGAPPNAME": "kbackup-pg_dump"})
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
        assert name not in env
    assert env["KBT_KEEP_ME"] == "yes"
    assert env["PGAPPNAME"] == "kbackup-pg_dump"
    assert os.environ["NOTIFY_SOCKET"] == "/run/systemd/notify"  # the daemon's own is intact


def test_sd_notify_protocol(kb: KbEnv, pg: PgServer, shop_db: str, notify: NotifyListener,
                            gated: GatedPgDump) -> None:
    kb.write_job("shop", f"""
schedules = [ {{ cron = "0 2 * * *" }} ]
targets = ["local"]

[[postgres]]
name = "shop"
dsn = "{pg.dsn(shop_db)}"
pg_dump = "{gated.path}"
""")
    kb.start(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}, wait=False)

    # READY=1 only once the API socket answers.
    ready = notify.wait_for(lambda m: m == "READY=1", what="READY=1", log=kb)
    assert kb.ctl("status").returncode == 0
    notify.wait_for(lambda m: m == "STATUS=idle, 1 jobs scheduled", what="idle STATUS")

    # Watchdog pings at half of WATCHDOG_USEC (0.5 s), from the event loop.
    def pings() -> list[float]:
        with notify.lock:
            return [t for t, m in notify.messages[ready:] if m == "WATCHDOG=1"]

    wait_until(lambda: len(pings()) >= 5, 20, "five WATCHDOG=1 pings")
    times = pings()
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    median = gaps[len(gaps) // 2]
    assert 0.3 <= median <= 0.9, gaps  # ~0.5 s: neither the 1 s deadline nor a busy loop

    # STATUS= tells what is running; the child did not inherit NOTIFY_SOCKET.
    run_id = start_run(kb)
    gated.wait_started()
    notify.wait_for(lambda m: m.startswith("STATUS=shop: backing up postgres shop"),
                    what="running STATUS")
    child = dict(line.split("=", 1) for line in gated.env_file.read_text().splitlines()
                 if "=" in line)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in child
    assert child["PGAPPNAME"] == "kbackup-pg_dump"
    gated.release()
    wait_until(lambda: run_by_id(kb, run_id)["status"] == "complete", 30, "the run to complete")
    mark = len(notify.poll())
    notify.wait_for(lambda m: m.startswith("STATUS=idle"), after=mark, what="idle again")

    # SIGHUP: RELOADING=1, then READY=1 again.
    mark = len(notify.poll())
    kb.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    reloading = notify.wait_for(lambda m: m == "RELOADING=1", after=mark, what="RELOADING=1")
    notify.wait_for(lambda m: m == "READY=1", after=reloading + 1, what="READY=1 after reload")

    # SIGTERM: STOPPING=1 and a clean exit.
    mark = len(notify.poll())
    assert kb.stop(signal.SIGTERM) == 0
    notify.wait_for(lambda m: m == "STOPPING=1", after=mark, timeout=5, what="STOPPING=1")


# ---------------------------------------------------------------------- (b) reload


def test_reload_adds_a_job_and_rejects_a_broken_one(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path
) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    pid = kb.proc.pid  # type: ignore[union-attr]

    # A valid new job appears after SIGHUP.
    kb.write_job("pdfs", f"""
schedules = [ {{ cron = "30 3 * * *", tag = "nightly" }} ]
targets = ["local"]

[[files]]
name = "pdfs"
path = "{pdf_tree}"
""")
    kb.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: [j["name"] for j in kb.ctl_json("jobs")] == ["pdfs", "shop"], 20,
               "the new job after SIGHUP")
    jobs = {j["name"]: j for j in kb.ctl_json("jobs")}
    assert jobs["pdfs"]["schedules"] == [{"cron": "30 3 * * *", "tag": "nightly"}]
    assert jobs["pdfs"]["next_run"].endswith("03:30:00Z")
    assert "event=reload.ok jobs=2" in kb.logs()

    # Broken files: the reload is rejected, the old config keeps running.
    bad_cron = kb.write_job("bad-cron", f"""
schedules = [ {{ cron = "61 * * * *" }} ]
targets = ["local"]
[[files]]
name = "x"
path = "{pdf_tree}"
""")
    bad_target = kb.write_job("bad-target", f"""
targets = ["nas"]
[[files]]
name = "x"
path = "{pdf_tree}"
""")
    kb.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

    def rejected_lines() -> list[str]:
        return [line for line in kb.logs().splitlines() if "event=reload.rejected" in line]

    lines = wait_until(lambda: len(rejected_lines()) >= 2 and rejected_lines(), 20,
                       "event=reload.rejected in the log")
    assert any(str(bad_cron) in line and "schedules.0.cron" in line and "61 * * * *" in line
               for line in lines), lines
    assert any(str(bad_target) in line and "targets.0" in line and "'nas'" in line
               for line in lines), lines
    assert all(" level=error " in f" {line} " for line in lines), lines

    assert kb.proc.poll() is None  # type: ignore[union-attr]
    assert [j["name"] for j in kb.ctl_json("jobs")] == ["pdfs", "shop"]
    status = kb.ctl_json("status")
    assert status["daemon"]["pid"] == pid
    error = status["daemon"]["last_reload_error"]
    assert f"{bad_cron}: schedules.0.cron:" in error
    assert f"{bad_target}: targets.0: unknown storage target 'nas'" in error
    text = kb.ctl("status")
    assert text.returncode == 0
    assert "last reload REJECTED:" in text.stdout

    # `kbackupctl reload` reports the same problems and exits 1.
    result = kb.ctl("reload")
    assert result.returncode == 1
    assert "config rejected, the previous config keeps running" in result.stderr
    assert f"{bad_cron}: schedules.0.cron:" in result.stderr
    assert f"{bad_target}: targets.0:" in result.stderr
    assert "Traceback" not in result.stderr

    # Fixed: the next reload succeeds and clears the error.
    bad_cron.unlink()
    bad_target.unlink()
    result = kb.ctl("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configuration reloaded"
    assert kb.ctl_json("status")["daemon"]["last_reload_error"] is None
    assert kb.ctl_json("status")["daemon"]["pid"] == pid


# ---------------------------------------------------------------------- (c), (d) stop and crash


def test_sigterm_during_a_backup_aborts_it_cleanly(
    kb: KbEnv, pg: PgServer, shop_db: str, gated: GatedPgDump
) -> None:
    kb.write_daemon(daemon_extra='shutdown_grace = "10s"')
    two_db_job(kb, pg, shop_db, gated.path)
    kb.start()
    run_id = start_run(kb)
    gated.wait_started()
    # Mid-run: `first` committed, `second` is being written.
    wait_until(lambda: {p.name for p in store_files(kb)} >= {
        "db-first.dump.zst", "db-second.dump.zst.partial"}, 20, "first committed, second partial",
        lambda: f"store: {store_files(kb)}\nlog:\n{kb.logs()}")

    began = time.monotonic()
    assert kb.stop(signal.SIGTERM, timeout=20) == 0, kb.logs()
    assert time.monotonic() - began < 12  # within shutdown_grace (10 s) plus start-up slack
    wait_until(lambda: not gated.alive(), 5, "pg_dump's process tree to be killed")

    assert store_files(kb) == [], "an aborted backup must leave nothing in storage"
    assert not list(kb.store.rglob(run_id)), "nor its (empty) backup directory"
    assert "event=daemon.stopped" in kb.logs()

    kb.start()
    run = run_by_id(kb, run_id)
    assert run["status"] == "failed"
    assert run["error"] == "aborted: daemon shutting down"
    backup = kb.ctl_json("show", run_id)
    assert backup["status"] == "failed"
    assert backup["error"]
    job = kb.ctl_json("status")["jobs"][0]
    assert job["last_run"]["id"] == run_id and job["last_run"]["status"] == "failed"
    assert job["last_backup"] is None


def test_sigkill_during_a_backup_is_recovered_at_next_start(
    kb: KbEnv, pg: PgServer, shop_db: str, gated: GatedPgDump
) -> None:
    two_db_job(kb, pg, shop_db, gated.path)
    kb.start()
    run_id = start_run(kb)
    gated.wait_started()
    wait_until(lambda: {p.name for p in store_files(kb)} >= {
        "db-first.dump.zst", "db-second.dump.zst.partial"}, 20, "first committed, second partial",
        lambda: f"store: {store_files(kb)}\nlog:\n{kb.logs()}")
    leftovers = store_files(kb)

    kb.stop(signal.SIGKILL)
    gated.kill()  # the orphaned pg_dump of the crashed daemon
    assert store_files(kb) == leftovers  # a crash cleans nothing up by itself

    kb.start()
    # Recovery ran before the API answered: the run is failed, its objects are gone.
    run = run_by_id(kb, run_id)
    assert run["status"] == "failed"
    assert run["error"].startswith("interrupted")
    backup = kb.ctl_json("show", run_id)
    assert backup["status"] == "failed"
    assert "interrupted" in backup["error"]
    assert store_files(kb) == []
    assert not list(kb.store.rglob(run_id)), "no manifest-less backup directory may remain"
    removed = [line for line in kb.logs().splitlines() if "event=partial.removed" in line]
    assert len(removed) == len(leftovers), removed
    for path in leftovers:
        key = path.relative_to(kb.store).as_posix()
        assert any(line.endswith(f"key={key}") for line in removed), (key, removed)
    assert [b["status"] for b in kb.ctl_json("backups")["items"]] == ["failed"]

    # And the next backup works.
    gated.release()
    backup = kb.run_backup()
    assert backup["status"] == "complete"
    assert (kb.backup_dir(backup) / "manifest.json").is_file()
    assert [p.name for p in store_files(kb) if p.name.endswith(".partial")] == []
    assert not list(kb.store.rglob(run_id))


# ---------------------------------------------------------------------- (e) failing jobs


def assert_run_fails(kb: KbEnv, reason: str, job: str = "shop") -> str:
    """`run --wait` exits 1 with one stderr line giving the reason; status and show agree;
    nothing is left in storage and the daemon still answers. Returns the run id."""
    result = kb.ctl("run", job, "--wait")
    assert result.returncode == 1, f"{result.stdout}\n{result.stderr}\n{kb.logs()}"
    lines = result.stderr.strip().splitlines()
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1, lines
    assert reason in failed[0], (reason, failed)
    assert sum(reason in line for line in lines) == 1, lines
    assert "Traceback" not in result.stderr
    run_id = failed[0].split()[1]
    assert failed[0].startswith(f"backup {run_id} of job {job} FAILED: ")

    assert kb.proc is not None and kb.proc.poll() is None, kb.logs()
    status = kb.ctl_json("status")
    entry = next(j for j in status["jobs"] if j["job"] == job)
    assert entry["last_run"]["id"] == run_id
    assert entry["last_run"]["status"] == "failed"
    assert reason in entry["last_run"]["error"]
    text = kb.ctl("status")
    assert text.returncode == 0
    assert f"{job}: last run {run_id} failed: " in text.stdout
    assert reason in text.stdout

    backup = kb.ctl_json("show", run_id)
    assert backup["status"] == "failed"
    assert reason in backup["error"]
    shown = kb.ctl("show", run_id)
    assert shown.returncode == 0
    assert any(line.startswith("error ") and reason in line for line in shown.stdout.splitlines())

    assert not [p for p in store_files(kb) if p.name == "manifest.json" and run_id in str(p)]
    assert not list(kb.store.rglob(run_id)), store_files(kb)
    assert not [p for p in store_files(kb) if p.name.endswith(".partial")]
    assert any("event=run.failed" in line and f"job={job}" in line and f"run={run_id}" in line
               for line in kb.logs().splitlines()), kb.logs()
    return run_id


FAILING_PG_DUMP = """#!/bin/sh
[ "$1" = --version ] && exec pg_dump --version
printf 'PGDMP partial output'
echo "pg_dump: error: simulated failure" >&2
exit 1
"""


@pytest.mark.parametrize("case", ["missing-database", "missing-files-path", "missing-pg_dump",
                                  "pg_dump-not-executable", "pg_dump-exits-1"])
def test_failing_job_does_not_crash_the_daemon(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, tmp_path: Path, case: str
) -> None:
    source = f'[[postgres]]\nname = "shop"\ndsn = "{pg.dsn(shop_db)}"\n'
    if case == "missing-database":
        missing = f"kbt_missing_{uuid.uuid4().hex[:8]}"
        source = f'[[postgres]]\nname = "shop"\ndsn = "{pg.dsn(missing)}"\n'
        reason = f'database "{missing}" does not exist'
    elif case == "missing-files-path":
        # The database part succeeds first: its committed object must be discarded too.
        source += f'[[files]]\nname = "pdfs"\npath = "{tmp_path / "no-such-dir"}"\n'
        reason = f"files pdfs: {tmp_path / 'no-such-dir'} does not exist"
    elif case == "missing-pg_dump":
        source += 'pg_dump = "/nonexistent/pg_dump"\n'
        reason = "database shop: /nonexistent/pg_dump not found"
    elif case == "pg_dump-not-executable":
        script = tmp_path / "pg_dump-no-x"
        script.write_text(FAILING_PG_DUMP)
        script.chmod(0o644)
        source += f'pg_dump = "{script}"\n'
        reason = f"database shop: {script} not found or not executable"
    else:
        script = tmp_path / "pg_dump-fails.sh"
        script.write_text(FAILING_PG_DUMP)
        script.chmod(0o755)
        source += f'pg_dump = "{script}"\n'
        reason = "database shop: pg_dump failed (exit 1): pg_dump: error: simulated failure"
    kb.write_job("shop", f'targets = ["local"]\ntimeout = "5m"\n\n{source}')
    kb.start()
    assert_run_fails(kb, reason)
    # Twice in a row: the daemon is still fully functional after a failure.
    assert_run_fails(kb, reason)
    assert len(kb.ctl_json("runs")["items"]) == 2


@pytest.mark.parametrize("what", ["file", "directory"])
def test_unreadable_file_fails_the_run(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, what: str
) -> None:
    """The daemon runs as root in tests, so it is started without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH: root then obeys file modes like any service user would."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the DAC capabilities")
    folder = pdf_tree / "2026" / "03"
    target = folder / "inv-2.pdf" if what == "file" else folder
    target.chmod(0)
    try:
        kb.shop_job(pg, shop_db, pdf_tree)
        log = open(kb.log, "ab")  # noqa: SIM115 - owned by the process
        kb.proc = subprocess.Popen(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", KBACKUPD,
             "--config-dir", str(kb.config_dir)],
            env=kb.env, stdout=log, stderr=log)
        log.close()
        kb.wait_ready()
        caps = Path(f"/proc/{kb.proc.pid}/status").read_text()
        bounding = int(next(line for line in caps.splitlines()
                            if line.startswith("CapBnd:")).split()[1], 16)
        assert not bounding & (1 << 1 | 1 << 2), "CAP_DAC_OVERRIDE/READ_SEARCH still present"
        if what == "file":
            reason = f"files pdfs: cannot read {target}: Permission denied"
        else:
            reason = f"files pdfs: cannot read directory {target}: Permission denied"
        assert_run_fails(kb, reason)
    finally:
        target.chmod(0o755 if what == "directory" else 0o644)


# ---------------------------------------------------------------------- wrong password


@pytest.fixture(scope="module")
def password_pg() -> Iterator[PgServer]:
    """A private cluster that really checks passwords (scram-sha-256 on TCP), with a role
    kbt_pw whose password is `right-pass`. The shared server trusts everyone."""
    bindir = pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="kbpw", dir="/tmp"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "pgdata", free_port()
    try:
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                        "-l", str(base / "pg.log"), "-o",
                        f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start a private PostgreSQL cluster with password auth: {exc}")
    try:
        with psycopg.connect(host=str(base), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE ROLE kbt_pw LOGIN PASSWORD 'right-pass'")
            conn.execute("CREATE DATABASE kbt_pwdb OWNER kbt_pw")
        with psycopg.connect(host=str(base), port=port, user="kbt_pw", dbname="kbt_pwdb",
                             autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
        yield PgServer("127.0.0.1", port, "kbt_pw")
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_wrong_password_fails_the_run(kb: KbEnv, password_pg: PgServer, tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text("wrong-pass\n")
    secret.chmod(0o600)
    kb.write_job("shop", f"""
targets = ["local"]

[[postgres]]
name = "shop"
dsn = "{password_pg.dsn("kbt_pwdb")}"
password_file = "{secret}"
""")
    kb.start()
    assert_run_fails(kb, 'password authentication failed for user "kbt_pw"')

    # The right password (re-read at each run) makes the same job work, pg_dump included.
    secret.write_text("right-pass\n")
    backup = kb.run_backup()
    assert backup["status"] == "complete"
    assert backup["components"][0]["database"]["rows"] == 10
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    assert manifest["components"][0]["database"]["row_counts"] == {"public.t": 10}

    # The password never reaches the log, the catalog or the stored config snapshot.
    assert "wrong-pass" not in kb.logs() and "right-pass" not in kb.logs()
    assert "-pass" not in json.dumps(kb.ctl_json("runs")["items"])
    snapshot = zstandard.ZstdDecompressor().decompressobj().decompress(
        (kb.backup_dir(backup) / "config.json.zst").read_bytes())
    assert str(secret).encode() in snapshot  # the path is recorded, the content is not
    assert b"right-pass" not in snapshot and b"wrong-pass" not in snapshot
