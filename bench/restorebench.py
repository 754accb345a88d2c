"""Restore and CLI start-up cases: how long until the data is back, and is the CLI snappy?

A backup is only worth what its restore costs. After the backup rounds, on the last round's
`pg_dump -Fc` file and database-only kbackup backups (same data as every backup case), and
interleaved round by round like the backup cases:
  (a) pg_restore -d NEWDB FILE          what most people do; the baseline
  (b) pg_restore -j2 -d NEWDB FILE      pg_restore at its best on 2 cores
  (c) kbackupctl verify ID --level restore-test --wait
  (d) kbackupctl restore ID --component bench --to-database NEWDB --yes
  (e) the same restore of the gpg-symmetric backup: what decryption costs
and the same three restores of a second database with many indexes and foreign keys (where
restores spend their time building those):
  (f) pg_restore, (g) pg_restore -j2, (h) kbackupctl restore --to-database
NEWDB is created empty before each pg_restore run (kbackupctl restore creates it itself, as
it does for a new name: timed) and dropped after each restore (untimed), with a CHECKPOINT
after the drop so no run pays for the previous run's dirty pages. One kbackupd
serves (c)-(e) and (h); its VmHWM is read after each in the first round (so cumulative).

Then `kbackupctl --help` and `kbackupctl status` are timed CLI_CALLS times each: a person
types these, and a slow start-up is what they notice first.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbenv import COMPONENT, KBACKUPCTL, KbEnv
from pgcluster import Cluster, log

NEWDB = "bench_restored"
CLI_CALLS = 20
CLI_TARGET_MS = 150.0


def format_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    """Plain aligned columns with a rule under the headers (columns in `right` right-aligned)."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def mb(n: int | float | None) -> str:
    """Decimal megabytes (10^6), as everywhere in this report."""
    return "-" if n is None else f"{n / 1e6:,.0f} MB"


def versus(base: float, case: float) -> str:
    """How a case compares with a baseline, in words that need no sign convention."""
    speed = base / case
    return f"{speed:.2f}x faster" if speed >= 1 else f"{1 / speed:.2f}x slower"


@dataclass
class RestoreCase:
    """One restore method: its wall times and, for kbackup, the daemon's VmHWM after it."""

    key: str
    label: str
    note: str
    seconds: list[float] = field(default_factory=list)
    daemon_rss_after: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_json(self, single: RestoreCase, parallel: RestoreCase) -> dict[str, Any]:
        return {
            "label": self.label,
            "runs": len(self.seconds),
            "seconds": [round(s, 3) for s in self.seconds],
            "min_s": round(min(self.seconds), 3),
            "median_s": round(self.median, 3),
            "speedup_vs_pg_restore": round(single.median / self.median, 3),
            "speedup_vs_pg_restore_j2": round(parallel.median / self.median, 3),
            "daemon_vmhwm_after_bytes": self.daemon_rss_after,
            "note": self.note,
        }


@dataclass
class RestoreInputs:
    """What the restores start from: the last round's outputs, all of the same data."""

    dump: Path  # pg_dump -Fc file
    backup_id: str  # database-only kbackup backup
    gpg_backup_id: str  # the same, gpg-symmetric
    indexed_dump: Path  # pg_dump -Fc file of the indexed database
    indexed_backup_id: str  # a kbackup backup of it


# ----------------------------------------------------------------------------- helpers


def _run(argv: list[str]) -> float:
    """Wall seconds of one command; a failure raises with its stderr."""
    begin = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - begin
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return seconds


def _conn_args(cluster: Cluster) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "--no-password"]


def create_db(cluster: Cluster, name: str) -> None:
    _run([cluster.tool("createdb"), *_conn_args(cluster), name])


def drop_db(cluster: Cluster, name: str) -> None:
    """Drop (if there) and CHECKPOINT: the next run starts without this one's dirty pages."""
    _run([cluster.tool("dropdb"), *_conn_args(cluster), "--if-exists", name])
    with cluster.connect() as conn:
        conn.execute("CHECKPOINT")


# ----------------------------------------------------------------------------- measuring


def _cases(pg_restore: str, dsn: str, inputs: RestoreInputs
           ) -> tuple[list[RestoreCase], list[tuple[RestoreCase, list[str], bool]]]:
    """Every restore case and how to run it: (case, argv, through the daemon)."""
    def case(key: str, label: str, note: str) -> RestoreCase:
        return RestoreCase(key, label, note)

    def restore(backup_id: str) -> list[str]:
        return ["restore", backup_id, "--component", COMPONENT, "--to-database", NEWDB, "--yes"]

    def local(dump: Path, jobs: list[str]) -> list[str]:
        return [pg_restore, *jobs, "--no-password", f"--dbname={dsn}", str(dump)]

    cases = [
        case("pg_restore", "(a) pg_restore -d NEWDB file", "one connection; the file is local"),
        case("pg_restore_j2", "(b) pg_restore -j2 -d NEWDB file",
             "two connections: tables and indexes in parallel"),
        case("kbackup_verify_restore_test", "(c) kbackupctl verify --level restore-test",
             "restores into a scratch database, counts every table's rows, drops it"),
        case("kbackup_restore", "(d) kbackupctl restore --to-database NEWDB",
             "checks the stored backup, then restores (staged: pg_restore -j, see the log)"),
        case("kbackup_restore_gpg", "(e) (d) of the gpg-symmetric backup",
             "as (d), and gpg decrypts both reads"),
        case("indexed_pg_restore", "(f) pg_restore -d NEWDB file", "the indexed database"),
        case("indexed_pg_restore_j2", "(g) pg_restore -j2 -d NEWDB file",
             "the indexed database, two connections"),
        case("indexed_kbackup_restore", "(h) kbackupctl restore --to-database NEWDB",
             "the indexed database, as (d)"),
    ]
    argvs: list[tuple[list[str], bool]] = [
        (local(inputs.dump, []), False),
        (local(inputs.dump, ["-j2"]), False),
        (["verify", inputs.backup_id, "--level", "restore-test", "--wait"], True),
        (restore(inputs.backup_id), True),
        (restore(inputs.gpg_backup_id), True),
        (local(inputs.indexed_dump, []), False),
        (local(inputs.indexed_dump, ["-j2"]), False),
        (restore(inputs.indexed_backup_id), True),
    ]
    return cases, [(c, argv, daemon) for c, (argv, daemon) in zip(cases, argvs, strict=True)]


def measure_restores(
    cluster: Cluster, kb: KbEnv, inputs: RestoreInputs, runs: int
) -> dict[str, Any]:
    """Every restore case `runs` times, interleaved; then the CLI timings on the same daemon."""
    cases, steps = _cases(cluster.tool("pg_restore"), cluster.dsn(NEWDB), inputs)
    kb.start()
    try:
        idle = kb.peak_rss()
        drop_db(cluster, NEWDB)  # a clean start, and no run pays for the backups' checkpoint
        for round_no in range(1, runs + 1):
            tag = f"restore round {round_no}/{runs}"
            for case, argv, daemon in steps:
                log(f"{tag}: {case.label}")
                uses_newdb = case.key != "kbackup_verify_restore_test"
                if uses_newdb and not daemon:  # kbackup creates the database it restores to
                    create_db(cluster, NEWDB)
                seconds = kb.timed_ctl(*argv)[0] if daemon else _run(argv)
                case.seconds.append(seconds)
                if daemon and case.daemon_rss_after is None:  # first round: later rounds
                    case.daemon_rss_after = kb.peak_rss()  # would include the other cases
                if uses_newdb:
                    drop_db(cluster, NEWDB)
                log(f"{tag}:   {seconds:.1f} s")
        peak = kb.peak_rss()
        log(f"CLI start-up: kbackupctl --help and status, {CLI_CALLS} times each")
        cli = cli_startup(kb)
    finally:
        kb.stop()
    main, indexed = cases[:5], cases[5:]
    return {
        "runs": runs,
        "new_database": NEWDB,
        "from": {
            "pg_dump_fc_bytes": inputs.dump.stat().st_size,
            "kbackup_backup_id": inputs.backup_id,
            "kbackup_gpg_backup_id": inputs.gpg_backup_id,
            "indexed_pg_dump_fc_bytes": inputs.indexed_dump.stat().st_size,
            "indexed_kbackup_backup_id": inputs.indexed_backup_id,
        },
        "ratios_from": "medians; speedup = median(baseline) / median(case), below 1 = slower",
        "results": {c.key: c.as_json(main[0], main[1]) for c in main}
        | {c.key: c.as_json(indexed[0], indexed[1]) for c in indexed},
        "kbackup_restore_over_pg_restore_j2": {
            "bench": round(main[3].median / main[1].median, 3),
            "indexed": round(indexed[2].median / indexed[1].median, 3),
        },
        "daemon": {
            "idle_rss_bytes": idle,
            "peak_rss_bytes": peak,
            "note": "one kbackupd for (c)-(e) and (h), VmHWM read after each in round 1"
            " (cumulative); its pg_restore, zstd and gpg children not included",
        },
        "cli_startup": cli,
        "_cases": cases,
    }


def cli_startup(kb: KbEnv) -> dict[str, Any]:
    """`--help` (no daemon involved: pure start-up) and `status` (one round trip), alternated."""
    commands = {
        "help": ("kbackupctl --help", [KBACKUPCTL, "--help"]),
        "status": ("kbackupctl status", [KBACKUPCTL, "--socket", str(kb.socket), "status"]),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(CLI_CALLS):
        for name, (_shown, argv) in commands.items():
            times[name].append(_run(argv) * 1000)
    return {
        "calls": CLI_CALLS,
        "target_ms": CLI_TARGET_MS,
        "commands": {
            name: {
                "command": commands[name][0],
                "median_ms": round(statistics.median(ms), 1),
                "max_ms": round(max(ms), 1),
                "ms": [round(m, 1) for m in ms],
                "median_within_target": statistics.median(ms) < CLI_TARGET_MS,
            }
            for name, ms in times.items()
        },
    }


# ----------------------------------------------------------------------------- report


def _restore_rows(cases: list[RestoreCase]) -> list[list[str]]:
    """One row per case; the first two are the baselines the others are compared with."""
    single, parallel = cases[0], cases[1]
    return [
        [
            case.label,
            str(len(case.seconds)),
            f"{min(case.seconds):.1f} s",
            f"{case.median:.1f} s",
            "baseline" if case is single else versus(single.median, case.median),
            "baseline" if case is parallel else versus(parallel.median, case.median),
            mb(case.daemon_rss_after) if case.daemon_rss_after else "-",
        ]
        for case in cases
    ]


def render_restores(result: dict[str, Any]) -> list[str]:
    """The restore and CLI sections of the printed report."""
    cases: list[RestoreCase] = result.pop("_cases")
    headers = ["restore", "runs", "min", "median", "vs (a)", "vs (b) -j2", "kbackupd VmHWM"]
    daemon = result["daemon"]
    source = result["from"]
    over = result["kbackup_restore_over_pg_restore_j2"]
    lines = [
        "",
        f"restores of the last round's backups (pg_dump -Fc file {mb(source['pg_dump_fc_bytes'])};"
        f" kbackup {source['kbackup_backup_id']}, gpg {source['kbackup_gpg_backup_id']}),"
        f" into an empty new database {result['new_database']}",
        "",
        format_table(headers, _restore_rows(cases[:5]), {1, 2, 3}),
        "",
        f"the indexed database (pg_dump -Fc file {mb(source['indexed_pg_dump_fc_bytes'])};"
        f" kbackup {source['indexed_kbackup_backup_id']}): many indexes and foreign keys",
        "",
        format_table(["restore", "runs", "min", "median", "vs (f)", "vs (g) -j2",
                      "kbackupd VmHWM"], _restore_rows(cases[5:]), {1, 2, 3}),
        "",
        f"kbackupctl restore / pg_restore -j2 (medians): {over['bench']:.2f}x on the bench"
        f" database, {over['indexed']:.2f}x on the indexed one (target: <= 1.00x)",
        "(a), (b), (f), (g): pg_dump -Fc files; (c)-(e), (h): kbackup backups of the same data",
        f"kbackupd VmHWM: one daemon for (c)-(e) and (h), {mb(daemon['idle_rss_bytes'])} at start,"
        f" {mb(daemon['peak_rss_bytes'])} at the end, read after each in round 1 (cumulative);"
        " its pg_restore and gpg children not included",
        "(c) also counts every table's rows; (d), (e), (h) read the backup once, checked while"
        " it loads beside the target, and rename it in",
    ]
    cli = result["cli_startup"]
    rows = []
    for entry in cli["commands"].values():
        verdict = "ok" if entry["median_within_target"] else "OVER"
        rows.append(
            [
                entry["command"],
                f"{entry['median_ms']:.0f} ms",
                f"{entry['max_ms']:.0f} ms",
                f"< {cli['target_ms']:.0f} ms: {verdict}",
            ]
        )
    lines += [
        "",
        format_table([f"CLI start-up ({cli['calls']} calls each)", "median", "max", "target"],
                     rows, {1, 2}),
        "status: against the running daemon (one API round trip); --help: start-up alone",
    ]
    return lines
