"""Run limits, through the real daemon: max_concurrent_jobs, no self-overlap, timeouts."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from conftest import KbEnv, PgServer

PG_DUMP = shutil.which("pg_dump") or "/usr/bin/pg_dump"


def slow_pg_dump(base: Path, delay: float, log: Path) -> Path:
    """A pg_dump that logs start/end and sleeps first, in a child process (a real tree)."""
    script = base / "slow_pg_dump"
    script.write_text(f"""#!/bin/sh
[ "$1" = --version ] && exec pg_dump --version
echo "start $$ $(date +%s.%N)" >> {log}
sleep {delay} &
echo $! > {base}/sleep-$$.pid
wait
{PG_DUMP} "$@"
status=$?
echo "end $$ $(date +%s.%N)" >> {log}
exit $status
""")
    script.chmod(0o755)
    return script


def max_overlap(log: Path) -> int:
    events = []
    for line in log.read_text().splitlines():
        kind, _pid, when = line.split()
        events.append((float(when), 1 if kind == "start" else -1))
    current = peak = 0
    for _when, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak


def wait_idle(kb: KbEnv, timeout: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = kb.ctl_json("runs")["items"]
        if runs and all(r["status"] != "running" for r in runs):
            return runs
        time.sleep(0.2)
    raise AssertionError(f"runs still active after {timeout}s:\n{kb.logs()}")


def test_max_concurrent_jobs_queues_extra_runs(kb: KbEnv, pg: PgServer, shop_db: str,
                                               tmp_path: Path) -> None:
    log = tmp_path / "dumps.log"
    wrapper = slow_pg_dump(tmp_path, 1.5, log)
    assert "max_concurrent_jobs = 2" in (kb.config_dir / "kbackupd.toml").read_text()
    for name in ("a", "b", "c", "d"):
        kb.shop_job(pg, shop_db, None, name=name)
        path = kb.jobs_dir / f"{name}.toml"
        path.write_text(path.read_text() + f'pg_dump = "{wrapper}"\n')
    kb.start()
    for name in ("a", "b", "c", "d"):
        assert kb.ctl("run", name).returncode == 0
    runs = wait_idle(kb)
    assert [r["status"] for r in runs] == ["complete"] * 4
    assert log.read_text().count("start") == 4
    assert max_overlap(log) == 2


def test_a_job_never_overlaps_itself(kb: KbEnv, pg: PgServer, shop_db: str,
                                     tmp_path: Path) -> None:
    log = tmp_path / "dumps.log"
    wrapper = slow_pg_dump(tmp_path, 1.5, log)
    path = kb.shop_job(pg, shop_db, None)
    path.write_text(path.read_text() + f'pg_dump = "{wrapper}"\n')
    kb.start()
    first = kb.ctl_json("run", "shop")
    second = kb.ctl_json("run", "shop")
    assert first["coalesced"] is False
    assert second["coalesced"] is True
    assert second["run_id"] == first["run_id"]
    runs = wait_idle(kb)
    assert len(runs) == 1 and runs[0]["status"] == "complete"
    assert log.read_text().count("start") == 1
    assert "event=run.coalesced job=shop" in kb.logs()


def test_timeout_kills_the_whole_process_tree(kb: KbEnv, pg: PgServer, shop_db: str,
                                              tmp_path: Path) -> None:
    log = tmp_path / "dumps.log"
    wrapper = slow_pg_dump(tmp_path, 120, log)
    path = kb.shop_job(pg, shop_db, None)
    text = path.read_text().replace('timeout = "10m"', 'timeout = "2s"')
    path.write_text(text + f'pg_dump = "{wrapper}"\n')
    kb.start()
    began = time.monotonic()
    result = kb.ctl("run", "shop", "--wait")
    assert time.monotonic() - began < 30
    assert result.returncode == 1
    assert "timed out after 2s" in result.stderr
    sleeper = int(next(tmp_path.glob("sleep-*.pid")).read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{sleeper}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{sleeper}").exists(), "the grandchild survived the timeout"
    assert not list(kb.store.rglob("manifest.json"))
    assert not list(kb.store.rglob("*.partial"))
    [backup] = kb.ctl_json("backups")["items"]
    assert backup["status"] == "failed"
    assert "timed out" in backup["error"]
    assert kb.ctl("status").returncode == 0
