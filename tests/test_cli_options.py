"""kbackupctl's global options work before and after the command, and --json always prints
one JSON document: answers, errors and commands that used to print plain text."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import KbEnv, PgServer
from kbackup.cli import build_parser


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
