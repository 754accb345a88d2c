"""kbackupd as a user runs it: a config dir, the daemon process, kbackupctl calls.

A fresh daemon per measured run gives a clean VmHWM (peak RSS) for that run alone, and the
time measured is the one a person sees: `kbackupctl run JOB --wait` from call to exit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from machine import cpu_busy_seconds, process_cpu

BIN = Path(sys.executable).parent
KBACKUPD = str(BIN / "kbackupd")
KBACKUPCTL = str(BIN / "kbackupctl")
COMPONENT = "bench"  # the [[postgres]] name of every bench job: `restore --component bench`


@dataclass
class KbRun:
    """One measured `kbackupctl run --wait`."""

    job: str
    seconds: float
    peak_rss_bytes: int
    idle_rss_bytes: int
    backup_id: str
    backup: dict[str, Any]
    cpu_seconds: float = 0.0
    daemon_cpu_seconds: float = 0.0  # kbackupd's own threads (zstd included)
    children_cpu_seconds: float = 0.0  # its children that ended in the run (pg_dump, gpg)

    @property
    def stored_bytes(self) -> int:
        return int(self.backup["size_bytes"])

    @property
    def raw_bytes(self) -> int:
        return sum(int(c["raw_bytes"] or 0) for c in self.backup["components"])

    @property
    def daemon_seconds(self) -> float | None:
        """Start to end as the daemon recorded it (no kbackupctl polling granularity)."""
        start, end = self.backup.get("started_at"), self.backup.get("finished_at")
        if not start or not end:
            return None
        begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
        return (datetime.fromisoformat(end.replace("Z", "+00:00")) - begin).total_seconds()


def vm_hwm(pid: int) -> int | None:
    """VmHWM (peak RSS of the process's own address space) in bytes; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class KbEnv:
    def __init__(self, base: Path):
        self.base = base
        self.config_dir = base / "conf"
        self.jobs_dir = self.config_dir / "jobs.d"
        self.store = base / "store"
        self.state = base / "state"
        self.log = base / "kbackupd.log"
        # A short path of its own: Unix socket paths are limited to 107 bytes.
        self.sockdir = Path(tempfile.mkdtemp(prefix="kbbs", dir="/tmp"))
        self.socket = self.sockdir / "kbackupd.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.daemon_env: dict[str, str] = {}  # added to the daemon's environment (compare.py)
        self.jobs_dir.mkdir(parents=True)
        (self.config_dir / "kbackupd.toml").write_text(
            f"""[daemon]
socket = "{self.socket}"
socket_group = ""
admin_group = ""
state_dir = "{self.state}"

[storage.local]
type = "local"
path = "{self.store}"
"""
        )

    def write_passphrase(self) -> Path:
        """A gpg-symmetric passphrase file, 0600 from its creation (never world-readable)."""
        path = self.base / "backup-pass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        return path

    def write_job(
        self,
        name: str,
        dsn: str,
        pg_dump: str,
        files: Path | None = None,
        row_counts: str | None = None,
        zstd_level: int | None = None,
        passphrase_file: Path | None = None,
    ) -> None:
        text = 'targets = ["local"]\ntimeout = "6h"\n'
        if zstd_level is not None:
            text += f"\n[compression]\nlevel = {zstd_level}\n"
        if passphrase_file is not None:
            text += (
                f'\n[encryption]\nmode = "gpg-symmetric"\npassphrase_file = "{passphrase_file}"\n'
            )
        # The same pg_dump (and pg_restore) binaries as the baselines, not /usr/bin's
        # pg_wrapper script.
        pg_restore = str(Path(pg_dump).with_name("pg_restore"))
        text += (
            f'\n[[postgres]]\nname = "{COMPONENT}"\ndsn = "{dsn}"\npg_dump = "{pg_dump}"\n'
            f'pg_restore = "{pg_restore}"\n'
        )
        if row_counts is not None:
            text += f'row_counts = "{row_counts}"\n'
        if files is not None:
            text += f'\n[[files]]\nname = "pdfs"\npath = "{files}"\n'
        (self.jobs_dir / f"{name}.toml").write_text(text)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KBACKUPCTL, "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def timed_ctl(self, *args: str) -> tuple[float, str]:
        """Wall seconds of one kbackupctl call, from call to exit, and its stdout.

        A failure raises with the daemon's log tail: a benchmark of a failed run means nothing.
        """
        begin = time.perf_counter()
        result = self.ctl(*args, timeout=6 * 3600)
        seconds = time.perf_counter() - begin
        if result.returncode != 0:
            raise RuntimeError(
                f"kbackupctl {' '.join(args)} failed ({result.returncode}):"
                f" {result.stderr.strip()}\n--- kbackupd log ---\n{self.logs()}"
            )
        return seconds, result.stdout

    def peak_rss(self) -> int:
        """The running daemon's VmHWM so far."""
        peak = vm_hwm(self.proc.pid) if self.proc is not None else None
        if peak is None:
            raise RuntimeError(f"kbackupd is not running:\n{self.logs()}")
        return peak

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [KBACKUPD, "--config-dir", str(self.config_dir)], stdout=log, stderr=log,
                env={**os.environ, **self.daemon_env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kbackupd exited {self.proc.returncode}:\n{self.logs()}")
            if self.socket.exists() and self.ctl("status").returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"kbackupd not ready after {timeout}s:\n{self.logs()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def logs(self, tail: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-tail:])

    def measure(self, job: str, keep: bool = False) -> KbRun:
        """Fresh daemon, one timed backup, its peak RSS, then the daemon is stopped again.

        keep=True leaves the backup in the storage, for the restore cases to restore.
        """
        self.start()
        try:
            idle = self.peak_rss()  # started and answering, nothing run yet
            assert self.proc is not None
            cpu_before, own_before = cpu_busy_seconds(), process_cpu(self.proc.pid)
            seconds, stdout = self.timed_ctl("run", job, "--wait")
            cpu = cpu_busy_seconds() - cpu_before
            own_after = process_cpu(self.proc.pid)
            own = [after - before for before, after in zip(own_before, own_after, strict=True)]
            peak = self.peak_rss()
            backup_id = stdout.strip().splitlines()[-1]
            shown = self.ctl("--json", "show", backup_id)
            if shown.returncode != 0:
                raise RuntimeError(f"kbackupctl show {backup_id} failed: {shown.stderr.strip()}")
            backup = json.loads(shown.stdout)
        finally:
            self.stop()
        if not keep:  # keep the disk use flat over many runs: the size is in the manifest
            shutil.rmtree(self.store / job, ignore_errors=True)
        return KbRun(job, seconds, peak, idle, backup_id, backup, cpu, own[0], own[1])

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        # gpg may have started an agent in the daemon's keyring dir: stop it by its homedir.
        gnupg = self.state / "gnupg"
        if gnupg.is_dir() and shutil.which("gpgconf"):
            subprocess.run(
                ["gpgconf", "--homedir", str(gnupg), "--kill", "all"],
                capture_output=True,
                check=False,
            )
