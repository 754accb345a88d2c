"""The benchmark's results: one Case per measured thing, and the report run.py prints."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from kbenv import KbRun
from machine import describe_busy
from restorebench import format_table, mb, render_restores, versus

BUSY_WARNING_PCT = 20.0  # machine CPU use, outside the benchmark, above which times are suspect


@dataclass
class Case:
    """One measured thing: its wall times, and what the runs stored and peaked at."""

    key: str
    label: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # machine-wide, see cpu_busy_seconds
    daemon_cpu_seconds: list[float] = field(default_factory=list)  # kbackupd's own threads
    children_cpu_seconds: list[float] = field(default_factory=list)  # pg_dump, gpg
    stored_bytes: list[int] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)
    rss_of: str = ""
    raw_bytes: int | None = None
    daemon_seconds: list[float] = field(default_factory=list)
    idle_rss_bytes: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def minimum(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def add_kb(self, run: KbRun) -> None:
        self.seconds.append(run.seconds)
        self.cpu_seconds.append(run.cpu_seconds)
        self.daemon_cpu_seconds.append(run.daemon_cpu_seconds)
        self.children_cpu_seconds.append(run.children_cpu_seconds)
        self.stored_bytes.append(run.stored_bytes)
        self.peak_rss_bytes.append(run.peak_rss_bytes)
        self.raw_bytes = run.raw_bytes
        self.idle_rss_bytes.append(run.idle_rss_bytes)
        if run.daemon_seconds is not None:
            self.daemon_seconds.append(run.daemon_seconds)

    def as_json(self, fc: Case, floor: Case) -> dict[str, Any]:
        return {
            "label": self.label,
            "runs": len(self.seconds),
            "seconds": [round(s, 3) for s in self.seconds],
            "min_s": round(self.minimum, 3),
            "median_s": round(self.median, 3),
            "machine_cpu_seconds": [round(s, 2) for s in self.cpu_seconds],
            "median_machine_cpu_s": round(statistics.median(self.cpu_seconds), 2)
            if self.cpu_seconds else None,
            "median_kbackupd_cpu_s": _median(self.daemon_cpu_seconds),
            "median_children_cpu_s": _median(self.children_cpu_seconds),
            "speedup_vs_pg_dump_fc": round(fc.median / self.median, 3),
            "over_floor_pct": round((self.median / floor.median - 1) * 100, 1),
            "stored_bytes": max(self.stored_bytes) if self.stored_bytes else None,
            "raw_bytes": self.raw_bytes,
            "peak_rss_bytes": max(self.peak_rss_bytes) if self.peak_rss_bytes else None,
            "peak_rss_of": self.rss_of,
            "daemon_idle_rss_bytes": max(self.idle_rss_bytes) if self.idle_rss_bytes else None,
            "daemon_recorded_seconds": [round(s, 3) for s in self.daemon_seconds] or None,
            "note": self.note or None,
        }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def paired_ratios(cases: list[Case], floor: Case) -> list[str]:
    """Each round's time over that same round's floor: the host's slow and fast spells then
    hit both sides of a ratio, where medians taken apart can pair a slow case with a fast
    floor."""
    lines = []
    for case in cases[2:]:
        if len(case.seconds) != len(floor.seconds) or len(case.seconds) < 2:
            continue
        over = sorted((c / f - 1) * 100 for c, f in zip(case.seconds, floor.seconds, strict=True))
        lines.append(f"{case.label}: per-round time over that round's floor: median"
                     f" {statistics.median(over):+.0f}% (rounds {over[0]:+.0f}%"
                     f" to {over[-1]:+.0f}%)")
    return lines


def render_table(cases: list[Case], fc: Case, floor: Case) -> str:
    headers = ["case", "runs", "min", "median", "vs pg_dump -Fc", "vs floor", "CPU",
               "kbackupd + children", "stored", "peak RSS"]
    rows = []
    for case in cases:
        over = (case.median / floor.median - 1) * 100
        mark = "*" if case.note else ""
        rss = max(case.peak_rss_bytes) if case.peak_rss_bytes else None
        rows.append(
            [
                case.label,
                str(len(case.seconds)),
                f"{case.minimum:.1f} s",
                f"{case.median:.1f} s",
                "baseline" if case is fc else versus(fc.median, case.median) + mark,
                "floor" if case is floor else f"{over:+.0f}%" + mark,
                f"{statistics.median(case.cpu_seconds):.1f} s" if case.cpu_seconds else "-",
                f"{_median(case.daemon_cpu_seconds):.1f} + "
                f"{_median(case.children_cpu_seconds):.1f} s" if case.daemon_cpu_seconds else "-",
                mb(max(case.stored_bytes)) if case.stored_bytes else "- (/dev/null)",
                f"{mb(rss)} ({case.rss_of})" if rss else "-",
            ]
        )
    return format_table(headers, rows, {1, 2, 3, 6, 7})


def report(result: dict[str, Any]) -> str:
    cases: list[Case] = result.pop("_cases")
    fc, floor = cases[0], cases[1]
    host, data, rc = result["host"], result["dataset"], result["row_count_overhead"]
    enc = result["encryption_overhead"]
    level = result["options"]["zstd_level"]
    idle_rss = max(b for c in cases for b in c.idle_rss_bytes)
    lines = [
        "",
        f"kbackup {host['kbackup']} benchmark, {result['finished_at']}",
        f"host: {host['cpus']} CPUs ({host['cpu_model']}), {mb(host['mem_total_bytes'])} RAM;"
        f" PostgreSQL {host['postgres_server']}; {host['pg_dump']}",
        f"data: pgbench scale {data['pgbench_scale']} + {data['text_mb']} MB text rows ="
        f" database {mb(data['database_size_bytes'])} on disk, raw dump (-Z0)"
        f" {mb(data['raw_dump_bytes'])}; files {data['files_count']} x 50-500 KB ="
        f" {mb(data['files_bytes'])}",
        f"kbackup zstd level: {'default' if level is None else level};"
        f" ratios use medians; times are wall clock, page cache warm",
        f"machine CPU busy while the benchmark idled: before {describe_busy(result['cpu_before'])},"
        f" after the backups {describe_busy(result['cpu_after'])},"
        f" after the restores {describe_busy(result['cpu_after_restores'])}",
        "",
        render_table(cases, fc, floor),
        "",
        f"exact row counts cost {rc['overhead_s']:+.1f} s ({rc['overhead_pct']:+.0f}%) on the"
        f' database-only backup (median with counts vs one run with row_counts="none")'
        + (": negative, so within this run's noise" if rc["overhead_s"] < 0 else ""),
        f"gpg-symmetric encryption costs {enc['overhead_s']:+.1f} s ({enc['overhead_pct']:+.0f}%)"
        " on the database-only backup (medians, same rounds)"
        + (": negative, so within this run's noise" if enc["overhead_s"] < 0 else ""),
        "vs pg_dump -Fc = median(pg_dump -Fc) / median(case) (below 1: shown as x slower);"
        " vs floor = time over pg_dump -Fc -Z0 > /dev/null",
        *paired_ratios(cases, floor),
        "CPU = median CPU-seconds the whole machine was busy during the case (all processes,"
        " PostgreSQL's backend included): steadier than wall time on a shared machine;"
        " kbackupd + children = the daemon's own CPU-seconds (its threads, zstd's included)"
        " + those of its children (pg_dump, gpg)",
        "peak RSS: kbackupd = VmHWM of the daemon process (a fresh daemon per run; its pg_dump"
        f" and gpg children not included; {mb(idle_rss)} before the run); pg_dump = its VmHWM,"
        " sampled",
        "* the database + files backup does more work than the pg_dump baselines",
        *render_restores(result["restore"]),
    ]
    busiest = max(
        result[key]["busy_pct"] for key in ("cpu_before", "cpu_after", "cpu_after_restores")
    )
    if busiest > BUSY_WARNING_PCT:
        lines.append(
            f"WARNING: other work kept the machine {busiest:.0f}% busy: these times are inflated"
            " and noisy; re-run on an idle machine (or with more --runs) before quoting them"
        )
    return "\n".join(lines)
