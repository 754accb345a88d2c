"""Is a change faster? kbackup from this tree against kbackup from another tree, same rounds.

On a shared machine one round's floor varies by a tenth or more, so two separate `make bench`
runs cannot tell a 3% change from noise. This runs both versions of the daemon in every round,
in alternating order, beside the floor (`pg_dump -Fc -Z0 > /dev/null`), and reports paired
differences: in how many rounds this tree was faster, and by how much wall time and daemon CPU.

    git worktree add /tmp/kb-main main
    .venv/bin/python bench/compare.py --other /tmp/kb-main/src --runs 6

The other tree's daemon runs with this venv's dependencies (PYTHONPATH=OTHER), and both are
driven by this tree's kbackupctl: compare versions whose dependencies and API agree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbenv import KbEnv, KbRun  # noqa: E402
from pgcluster import Cluster, load_database, log, pg_bindir  # noqa: E402
from run import DBNAME, pg_dump_floor  # noqa: E402

JOBS = ("db", "gpg", "nocount")


@dataclass
class Side:
    """One tree's runs of one job, index-aligned with the floor's rounds."""

    seconds: list[float] = field(default_factory=list)
    daemon_cpu: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)

    def add(self, run: KbRun) -> None:
        self.seconds.append(run.seconds)
        self.daemon_cpu.append(run.daemon_cpu_seconds)
        self.peak_rss.append(run.peak_rss_bytes)


def write_jobs(kb: KbEnv, cluster: Cluster, jobs: list[str]) -> None:
    dsn, pg_dump = cluster.dsn(DBNAME), cluster.tool("pg_dump")
    if "db" in jobs:
        kb.write_job("db", dsn, pg_dump)
    if "gpg" in jobs:
        kb.write_job("gpg", dsn, pg_dump, passphrase_file=kb.write_passphrase())
    if "nocount" in jobs:
        kb.write_job("nocount", dsn, pg_dump, row_counts="none")


def summarize(job: str, floor: list[float], this: Side, other: Side) -> str:
    def over_floor(side: Side) -> str:
        ratios = [s / f for s, f in zip(side.seconds, floor, strict=True)]
        return f"{statistics.median(ratios) - 1:+.1%}"

    faster = sum(a < b for a, b in zip(this.seconds, other.seconds, strict=True))
    wall = statistics.median(a - b for a, b in zip(this.seconds, other.seconds, strict=True))
    cpu = statistics.median(a - b for a, b in zip(this.daemon_cpu, other.daemon_cpu,
                                                  strict=True))
    rss = (statistics.median(this.peak_rss) - statistics.median(other.peak_rss)) / 2**20
    return (f"{job:8} over the floor: this {over_floor(this)}, other {over_floor(other)};"
            f" this faster in {faster}/{len(floor)} rounds; median paired difference"
            f" {wall:+.2f} s wall, {cpu:+.2f} s daemon CPU; peak RSS {rss:+.0f} MB")


def compare(args: argparse.Namespace, base: Path) -> list[str]:
    cluster = Cluster(base / "pg", pg_bindir())
    kb: KbEnv | None = None
    try:
        cluster.start()
        load_database(cluster, DBNAME, args.scale, args.text_mb)
        kb = KbEnv(base / "kb")
        write_jobs(kb, cluster, args.jobs)
        log("warm-up: one pg_dump -Z0 and one untimed run of each job (page cache, gpg-agent)")
        pg_dump_floor(cluster)
        for job in args.jobs:
            kb.measure(job)
        trees = {"this": {}, "other": {"PYTHONPATH": str(args.other)}}
        sides = {(job, tree): Side() for job in args.jobs for tree in trees}
        floor: list[float] = []
        for round_no in range(args.runs):
            seconds, _ = pg_dump_floor(cluster)
            floor.append(seconds)
            line = f"round {round_no + 1}/{args.runs}: floor {seconds:.2f} s"
            for job in args.jobs:
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for tree in order:
                    kb.daemon_env = trees[tree]
                    run = kb.measure(job)
                    sides[job, tree].add(run)
                    line += f" | {job} {tree} {run.seconds:.2f} s"
            log(line)
        return [summarize(job, floor, sides[job, "this"], sides[job, "other"])
                for job in args.jobs]
    finally:
        if kb is not None:
            kb.cleanup()
        cluster.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/compare.py", description=__doc__.splitlines()[0])
    p.add_argument("--other", type=Path, required=True,
                   help="the other tree's src directory (holding kbackup/)")
    p.add_argument("--jobs", default="db,gpg",
                   help=f"comma-separated, from {', '.join(JOBS)} (default db,gpg)")
    p.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100)")
    p.add_argument("--text-mb", type=int, default=200, help="MB of text rows (default 200)")
    p.add_argument("--runs", type=int, default=6, help="rounds (default 6)")
    p.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR)")
    args = p.parse_args(argv)
    args.other = args.other.resolve()
    if not (args.other / "kbackup" / "__init__.py").is_file():
        p.error(f"--other {args.other}: expected a src directory holding kbackup/__init__.py")
    args.jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in args.jobs if j not in JOBS]
    if unknown or not args.jobs:
        p.error(f"--jobs: unknown {', '.join(unknown) or '(none given)'}; expected some of"
                f" {', '.join(JOBS)}")
    if args.runs < 1 or args.scale < 1 or args.text_mb < 0:
        p.error("--runs and --scale must be >= 1, --text-mb >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="kbcompare-", dir=args.workdir))
    os.chmod(base, 0o755)  # the postgres user must reach the cluster dir below it
    log(f"this tree against {args.other}: jobs {', '.join(args.jobs)}, {args.runs} rounds")
    try:
        lines = compare(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
