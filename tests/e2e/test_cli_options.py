"""kbackupctl's global options work before and after the command, and --json always prints
one JSON document: answers, errors and commands that used to print plain text."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_daemon_lifecycle import GatedPgDump, gated

from conftest import KbEnv, PgServer
from kbackup.cli import build_parser

__all__ = ["gated"]  # the fixture, imported for pytest


def test_global_options_parse_in_any_position() -> None:
    parser = build_parser()
    after = parser.parse_args(["backups", "shop", "--json", "--socket", "/s"])
    before = parser.parse_args(["--json", "--socket", "/s", "backups", "shop"])
    assert (after.json, after.socket, after.job) == (True, "/s", "shop")
    assert (before.json, before.socket, before.job) == (True, "/s", "shop")
    plain = parser.parse_args(["status"])
    assert (plain.json, plain.socket, plain.config_dir) == (False, None, None)
    config = parser.parse_args(["config", "check", "--config-dir", "/etc/x"])
    assert config.config_dir == "/etc/x"
    # Given twice, the later one wins, as with any argparse option.
    assert parser.parse_args(["--socket", "/a", "runs", "--socket", "/b"]).socket == "/b"


def test_json_after_the_command_against_the_daemon(kb: KbEnv, pg: PgServer,
                                                   shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    status = kb.ctl("status", "--json")
    assert status.returncode == 0, status.stderr
    assert [j["job"] for j in json.loads(status.stdout)["jobs"]] == ["shop"]
    reloaded = kb.ctl("reload", "--json")
    assert reloaded.returncode == 0, reloaded.stderr
    assert json.loads(reloaded.stdout) == {"reloaded": True}
    backups = kb.ctl("backups", "shop", "--json")
    assert backups.returncode == 0, backups.stderr
    json.loads(backups.stdout)


def test_an_error_with_json_is_a_json_document_too(kb: KbEnv, pg: PgServer,
                                                   shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    result = kb.ctl("show", "no-such-backup", "--json")
    assert result.returncode != 0
    answer = json.loads(result.stdout)
    assert "no backup with id 'no-such-backup'" in answer["error"]
    assert answer["exit_code"] == result.returncode
    assert "no backup with id" in result.stderr


def test_config_check_takes_config_dir_after_the_command(kb: KbEnv, tmp_path: Path) -> None:
    good = kb.ctl("config", "check", "--config-dir", str(kb.config_dir), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    bad = tmp_path / "bad"
    (bad / "jobs.d").mkdir(parents=True)
    (bad / "kbackupd.toml").write_text("[daemon]\nmax_concurrent_jobs = 0\n")
    result = kb.ctl("config", "check", "--config-dir", str(bad), "--json")
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "max_concurrent_jobs" in answer["error"]


def read_pty(fd: int, until: Callable[[str], bool], timeout: float = 15.0) -> str:
    """What a program wrote to its terminal, read until `until` holds (or the time is up)."""
    out = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(out):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 65536).decode(errors="replace")
            except OSError:  # the program closed its terminal
                break
    return out


def test_status_watch_redraws_with_the_running_backup_and_stops_on_ctrl_c(
        kb: KbEnv, pg: PgServer, shop_db: str, gated: GatedPgDump) -> None:
    kb.write_job("shop", f"""
targets = ["local"]

[[postgres]]
name = "shop"
dsn = "{pg.dsn(shop_db)}"
pg_dump = "{gated.path}"
""")
    kb.start()
    run_id = kb.ctl("run", "shop").stdout.strip()
    gated.wait_started()
    primary, secondary = pty.openpty()
    watch = subprocess.Popen([*kb.ctl_argv(), "status", "--watch", "0.2"], env=kb.env,
                             stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    try:
        screen = read_pty(primary, lambda out: out.count("\x1b[H\x1b[2J") >= 3)
        assert screen.count("\x1b[H\x1b[2J") >= 3, screen  # redrawn in place, again and again
        last = screen.split("\x1b[H\x1b[2J")[-2]  # a whole screen: another clear followed it
        assert "every 0.2s, Ctrl-C to stop" in last
        assert f"shop backup {run_id} (manual" in last and "running:" in last, last
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        os.close(primary)
        gated.release()


def test_status_watch_json_prints_one_document_per_refresh(kb: KbEnv, pg: PgServer,
                                                           shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    watch = subprocess.Popen([*kb.ctl_argv(), "status", "--watch", "0.2", "--json"],
                             env=kb.env, stdout=subprocess.PIPE, text=True)
    assert watch.stdout is not None
    lines = [watch.stdout.readline() for _ in range(3)]
    watch.send_signal(signal.SIGINT)
    assert watch.wait(10) == 0
    for line in lines:
        assert [j["job"] for j in json.loads(line)["jobs"]] == ["shop"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "99999"])
def test_status_watch_rejects_a_bad_interval(kb: KbEnv, value: str) -> None:
    result = kb.ctl("status", f"--watch={value}")
    assert result.returncode == 2
    assert "expected seconds between 0.1 and 3600" in result.stderr
