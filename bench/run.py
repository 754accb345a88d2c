"""kbackup benchmark: is a kbackup backup as fast as pg_dump itself, on the same data?

One run builds a throwaway PostgreSQL cluster and a files folder, then times, interleaved
round by round so drift hits every case alike:
  (a) pg_dump -Fc db > file           what most people do today
  (b) pg_dump -Fc -Z0 db > /dev/null  the floor: no compression, no storage
  (c) kbackupctl run JOB --wait       database only (like-for-like with a/b), the same with
                                      gpg-symmetric encryption, and database + files; each on
                                      a fresh kbackupd, whose VmHWM is its peak
plus one database-only kbackup run with row_counts = "none", to price the exact row counts.
Then the restores of the last round's dump and backups, and the CLI's start-up time
(restorebench.py). It prints tables, writes JSON to --output and removes everything it built
(unless --keep).

    make bench BENCH_ARGS="--quick"
    .venv/bin/python bench/run.py --scale 100 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbenv import KbEnv, vm_hwm  # noqa: E402
from machine import cpu_busy_seconds, host_info, other_cpu_busy  # noqa: E402
from pgcluster import (  # noqa: E402
    Cluster,
    database_size,
    load_database,
    load_indexed_database,
    log,
    make_files,
    pg_bindir,
)
from report import Case, report  # noqa: E402
from restorebench import (  # noqa: E402
    RestoreInputs,
    mb,
    measure_restores,
)

DBNAME = "bench"
INDEXED_DBNAME = "bench_indexed"
QUICK = {"scale": 5, "text_mb": 20, "files_mb": 20, "runs": 1, "indexed_scale": 1}
# Five rounds: on a shared 2-core host one round's floor alone varies by a third.
DEFAULTS = {"scale": 100, "text_mb": 200, "files_mb": 200, "runs": 5, "indexed_scale": 5}
RESTORE_RUNS = 2  # restores take 20-30 s each: two rounds unless --runs is lower or told


# ----------------------------------------------------------------------------- measuring


def timed(argv: list[str], stdout: IO[bytes] | int) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in bytes.

    Not wait4's ru_maxrss: Linux carries the forking parent's RSS into the child's maxrss at
    exec, so it would report this Python process's size. VmHWM, sampled until the child
    exits, is the child's own high-water mark (it only grows, so the last sample is ~exact).
    """
    peak = 0
    with tempfile.TemporaryFile() as errors:
        begin = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=errors)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, vm_hwm(proc.pid) or 0)
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            seconds = time.perf_counter() - begin
            done.set()
            sampler.join()
        if proc.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {message}")
    return seconds, peak


def pg_dump_fc(cluster: Cluster, out: Path, keep: bool = False) -> tuple[float, int, int]:
    """keep=True leaves the file for the pg_restore cases."""
    argv = [cluster.tool("pg_dump"), "-Fc", "--no-password", f"--dbname={cluster.dsn(DBNAME)}"]
    with open(out, "wb") as fh:
        seconds, rss = timed(argv, fh)
    size = out.stat().st_size
    if not keep:
        out.unlink()
    return seconds, rss, size


def pg_dump_floor(cluster: Cluster) -> tuple[float, int]:
    argv = [
        cluster.tool("pg_dump"),
        "-Fc",
        "-Z0",
        "--no-password",
        f"--dbname={cluster.dsn(DBNAME)}",
    ]
    return timed(argv, subprocess.DEVNULL)


def read_tree(root: Path) -> None:
    """Pull the files into the page cache, as the database's pages are after the warm-up."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(1 << 20):
                    pass


# ----------------------------------------------------------------------------- options


def resolve_options(args: argparse.Namespace) -> dict[str, int]:
    """Explicit option > --quick > BENCH_SCALE (scale only) > default."""
    chosen = dict(DEFAULTS)
    if os.environ.get("BENCH_SCALE"):
        chosen["scale"] = int(os.environ["BENCH_SCALE"])
    if args.quick:
        chosen.update(QUICK)
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            chosen[key] = value
    chosen["restore_runs"] = (min(chosen["runs"], RESTORE_RUNS) if args.restore_runs is None
                              else args.restore_runs)
    if min(chosen["scale"], chosen["runs"], chosen["restore_runs"],
           chosen["indexed_scale"]) < 1 or min(
        chosen["text_mb"], chosen["files_mb"]
    ) < 0:
        raise SystemExit("bench: --scale, --indexed-scale, --runs and --restore-runs must be"
                         " >= 1, sizes >= 0")
    return chosen


def check_disk(workdir: Path, opts: dict[str, int]) -> None:
    """Fail early rather than after ten minutes of loading: roughly data + dumps + backups,
    plus the restored copy of the database and the WAL its restore writes."""
    need = (opts["scale"] * 16 * 4.5 + opts["text_mb"] * 5 + opts["files_mb"] * 2.2
            + opts["indexed_scale"] * 180 * 3) * 1e6
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise SystemExit(f"bench: {workdir} has {mb(free)} free, this run needs about {mb(need)}")


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Time kbackup against pg_dump on the same throwaway database.",
    )
    p.add_argument("--scale", type=int, help="pgbench scale (default $BENCH_SCALE or 100)")
    p.add_argument("--text-mb", type=int, help="MB of text rows added (default 200)")
    p.add_argument("--files-mb", type=int, help="MB of PDF-sized random files (default 200)")
    p.add_argument("--runs", type=int, help="measured runs per backup case (default 5)")
    p.add_argument("--indexed-scale", type=int,
                   help="size of the indexed database restored too (default 5, ~180 MB per unit)")
    p.add_argument(
        "--restore-runs", type=int,
        help="measured runs per restore case (default: 2, or --runs if lower)",
    )
    p.add_argument(
        "--zstd-level", type=int, help="kbackup [compression] level (default: kbackup's)"
    )
    p.add_argument(
        "--quick", action="store_true", help="scale 5, 20 MB text, 20 MB files, 1 run of each"
    )
    p.add_argument("--keep", action="store_true", help="leave the cluster and temp dir behind")
    p.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    p.add_argument(
        "--output", type=Path, default=Path("/tmp/kbackup-bench.json"), help="JSON results path"
    )
    return p.parse_args(argv)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    log(f"{signal.Signals(signum).name}: cleaning up")
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: cleanup runs


def benchmark(args: argparse.Namespace, opts: dict[str, int], base: Path) -> dict[str, Any]:
    cluster = Cluster(base / "pg", pg_bindir())
    kb: KbEnv | None = None
    try:
        log(f"starting a throwaway cluster in {cluster.base} on 127.0.0.1:{cluster.port}")
        cluster.start()
        load_start = time.perf_counter()
        load_database(cluster, DBNAME, opts["scale"], opts["text_mb"])
        load_indexed_database(cluster, INDEXED_DBNAME, opts["indexed_scale"])
        files = base / "files"
        log(f"writing {opts['files_mb']} MB of PDF-sized files")
        file_count, file_bytes = make_files(files, opts["files_mb"])
        db_bytes = database_size(cluster, DBNAME)
        log(
            f"data ready in {time.perf_counter() - load_start:.0f} s: database {mb(db_bytes)},"
            f" {file_count} files {mb(file_bytes)}"
        )

        kb = KbEnv(base / "kb")
        dsn, pg_dump = cluster.dsn(DBNAME), cluster.tool("pg_dump")
        level = args.zstd_level
        kb.write_job("bench-db", dsn, pg_dump, zstd_level=level)
        kb.write_job("bench", dsn, pg_dump, files=files, zstd_level=level)
        kb.write_job("bench-db-nocount", dsn, pg_dump, row_counts="none", zstd_level=level)
        passphrase = kb.write_passphrase()
        kb.write_job("bench-db-gpg", dsn, pg_dump, zstd_level=level, passphrase_file=passphrase)
        kb.write_job("bench-indexed", cluster.dsn(INDEXED_DBNAME), pg_dump, zstd_level=level)

        busy_before = other_cpu_busy()
        log("warm-up: one untimed pg_dump -Z0 and a read of the files (page cache)")
        pg_dump_floor(cluster)
        read_tree(files)
        # gpg's first use of a keyring starts its agent (0.5-2 s): a running daemon pays that
        # once, so the measured rounds should not.
        log("warm-up: one untimed gpg-symmetric backup (starts gpg-agent)")
        kb.measure("bench-db-gpg")

        fc = Case("pg_dump_fc", "pg_dump -Fc > file", rss_of="pg_dump")
        floor = Case("pg_dump_z0_devnull", "pg_dump -Fc -Z0 > /dev/null (floor)", rss_of="pg_dump")
        kb_db = Case("kbackup_db", "kbackup, database only", rss_of="kbackupd")
        kb_gpg = Case(
            "kbackup_db_gpg", "kbackup, database only, gpg-symmetric", rss_of="kbackupd"
        )
        kb_nocount = Case(
            "kbackup_db_no_row_counts",
            'kbackup, database only, row_counts="none"',
            rss_of="kbackupd",
        )
        kb_all = Case(
            "kbackup_db_files",
            f"kbackup, database + {mb(file_bytes)} files",
            rss_of="kbackupd",
            note="not like-for-like: also backs up the files folder",
        )
        kept: dict[str, str] = {}  # job -> the last round's backup id, for the restores
        dump = base / "pg_dump.fc"
        for round_no in range(1, opts["runs"] + 1):
            tag = f"round {round_no}/{opts['runs']}"
            last = round_no == opts["runs"]
            log(f"{tag}: pg_dump -Fc > file")
            cpu = cpu_busy_seconds()
            seconds, rss, size = pg_dump_fc(cluster, dump, keep=last)
            fc.cpu_seconds.append(cpu_busy_seconds() - cpu)
            fc.seconds.append(seconds)
            fc.peak_rss_bytes.append(rss)
            fc.stored_bytes.append(size)
            log(f"{tag}:   {seconds:.1f} s, {mb(size)}")
            log(f"{tag}: pg_dump -Fc -Z0 > /dev/null")
            cpu = cpu_busy_seconds()
            seconds, rss = pg_dump_floor(cluster)
            floor.cpu_seconds.append(cpu_busy_seconds() - cpu)
            floor.seconds.append(seconds)
            floor.peak_rss_bytes.append(rss)
            log(f"{tag}:   {seconds:.1f} s")
            for case, job in ((kb_db, "bench-db"), (kb_gpg, "bench-db-gpg"), (kb_all, "bench")):
                log(f"{tag}: kbackupctl run {job} --wait")
                restored_later = last and job != "bench"
                run = kb.measure(job, keep=restored_later)
                case.add_kb(run)
                if restored_later:
                    kept[job] = run.backup_id
                log(
                    f"{tag}:   {run.seconds:.1f} s, {mb(run.stored_bytes)},"
                    f" peak RSS {mb(run.peak_rss_bytes)}"
                )
        log('once: kbackupctl run bench-db-nocount --wait (row_counts = "none")')
        run = kb.measure("bench-db-nocount")
        kb_nocount.add_kb(run)
        log(f"  {run.seconds:.1f} s")
        floor.raw_bytes = kb_db.raw_bytes  # what -Z0 wrote to /dev/null, as kbackup counted it
        cpu_after = other_cpu_busy()  # before the restores: they leave the server writing

        indexed_dump = base / "indexed.fc"
        log(f"untimed: pg_dump -Fc and a kbackup backup of {INDEXED_DBNAME}, for the restores")
        with open(indexed_dump, "wb") as fh:
            timed([pg_dump, "-Fc", "--no-password",
                   f"--dbname={cluster.dsn(INDEXED_DBNAME)}"], fh)
        indexed = kb.measure("bench-indexed", keep=True)
        inputs = RestoreInputs(dump, kept["bench-db"], kept["bench-db-gpg"], indexed_dump,
                               indexed.backup_id)
        restores = measure_restores(cluster, kb, inputs, opts["restore_runs"])
        cpu_end = other_cpu_busy()

        cases = [fc, floor, kb_db, kb_gpg, kb_nocount, kb_all]
        overhead = kb_db.median - kb_nocount.median
        gpg_cost = kb_gpg.median - kb_db.median
        return {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": host_info(cluster),
            # Other work on the machine skews wall times: say whether there was any.
            "cpu_before": busy_before,
            "cpu_after": cpu_after,
            "cpu_after_restores": cpu_end,
            "options": {**opts, "zstd_level": level, "zstd_level_note": "None = kbackup default"},
            "dataset": {
                "pgbench_scale": opts["scale"],
                "indexed_scale": opts["indexed_scale"],
                "indexed_database_size_bytes": database_size(cluster, INDEXED_DBNAME),
                "text_mb": opts["text_mb"],
                "database_size_bytes": db_bytes,
                "raw_dump_bytes": kb_db.raw_bytes,
                "files_count": file_count,
                "files_bytes": file_bytes,
            },
            "ratios_from": "medians",
            "results": {c.key: c.as_json(fc, floor) for c in cases},
            "row_count_overhead": {
                "exact_median_s": round(kb_db.median, 3),
                "none_s": round(kb_nocount.median, 3),
                "overhead_s": round(overhead, 3),
                "overhead_pct": round(overhead / kb_nocount.median * 100, 1),
                "note": "row_counts=none measured once; compare with care when runs == 1",
            },
            "encryption_overhead": {
                "plain_median_s": round(kb_db.median, 3),
                "gpg_symmetric_median_s": round(kb_gpg.median, 3),
                "overhead_s": round(gpg_cost, 3),
                "overhead_pct": round(gpg_cost / kb_db.median * 100, 1),
                "note": "AES256 via a gpg child process (not in peak RSS); same rounds, same data",
            },
            "restore": restores,
            "_cases": cases,
        }
    finally:
        if kb is not None:
            kb.cleanup()
        if args.keep:
            log(
                f"--keep: cluster still running on port {cluster.port}; stop it with:"
                f" {' '.join(cluster.prefix)} {cluster.tool('pg_ctl')} -D {cluster.data} stop"
            )
        else:
            log("stopping the throwaway cluster")
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = resolve_options(args)
    workdir = args.workdir or Path(tempfile.gettempdir())
    check_disk(workdir, opts)
    signal.signal(signal.SIGTERM, _terminate)
    base = Path(tempfile.mkdtemp(prefix="kbbench-", dir=workdir))
    os.chmod(base, 0o755)  # the postgres user must reach the cluster dir below it
    log(f"kbackup benchmark: {opts}, zstd level {args.zstd_level or 'default'}; work dir {base}")
    try:
        result = benchmark(args, opts, base)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None)
        log(f"FAILED: {exc}" + (f"\n{detail.decode(errors='replace')}" if detail else ""))
        return 1
    finally:
        if args.keep:
            log(f"--keep: work dir left at {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    text = report(result)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result["table"] = text
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
