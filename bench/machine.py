"""What the benchmark ran on, and whether someone else's work competed with it.

Times from a shared machine are only worth quoting with these beside them: the host, the
versions, and how busy the CPUs were while the benchmark itself ran nothing.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pgcluster import Cluster


def _stat_ticks(text: str) -> tuple[str, list[int]]:
    """A /proc/PID/stat line: (comm, [utime, stime, cutime, cstime]) in clock ticks."""
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return comm, [int(v) for v in text[text.rindex(")") + 2 :].split()[11:15]]


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """utime + stime of every process (all its threads), by pid."""
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, fields = _stat_ticks(stat.read_text())
        except OSError:
            continue
        ticks[int(stat.parent.name)] = (comm, fields[0] + fields[1])
    return ticks


def process_cpu(pid: int) -> tuple[float, float]:
    """(own, waited-for children's) CPU-seconds of one process."""
    _comm, fields = _stat_ticks(Path(f"/proc/{pid}/stat").read_text())
    hz = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1]) / hz, (fields[2] + fields[3]) / hz


def _cpu_totals() -> tuple[int, int]:
    """Machine-wide ticks since boot: (all, idle + iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def cpu_busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy since boot (all cores; not idle, not
    iowait). The difference over a case is what it cost the server, PostgreSQL's backend
    included: steadier than wall time on a noisy shared machine."""
    total, idle = _cpu_totals()
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def other_cpu_busy(seconds: float = 2.0) -> dict[str, Any]:
    """Machine-wide CPU use over a moment when the benchmark runs nothing, and who used it:
    other people's work on the machine would otherwise silently inflate the wall times."""
    (total0, idle0), procs0 = _cpu_totals(), _cpu_ticks()
    time.sleep(seconds)
    (total1, idle1), procs1 = _cpu_totals(), _cpu_ticks()
    total = max(total1 - total0, 1)
    hz = os.sysconf("SC_CLK_TCK")
    users = []
    for pid, (comm, ticks) in procs1.items():
        used = ticks - procs0.get(pid, (comm, ticks))[1]
        if used > 0:
            users.append({"pid": pid, "comm": comm, "cpu_pct": round(100 * used / hz / seconds)})
    users.sort(key=lambda u: -u["cpu_pct"])
    return {
        "busy_pct": round(100.0 * (total - (idle1 - idle0)) / total, 1),
        "top": [u for u in users[:3] if u["cpu_pct"] >= 5],
    }


def describe_busy(busy: dict[str, Any]) -> str:
    top = ", ".join(f"{u['comm']} {u['cpu_pct']}%" for u in busy["top"])
    return f"{busy['busy_pct']:.0f}%" + (f" ({top} of one core)" if top else "")


def _command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def host_info(cluster: Cluster) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_bytes": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres_server": cluster.server_version(),
        "pg_dump": _command_output([cluster.tool("pg_dump"), "--version"]),
        "kbackup": metadata.version("kbackupd"),
        "zstandard": metadata.version("zstandard"),
    }
