"""Bad configuration gets one clear line naming the file, the field and what is expected."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import KBACKUPCTL, KBACKUPD

GOOD_JOB = """
schedules = [ { cron = "0 2 * * *", tag = "daily" } ]
targets = ["local"]
[[postgres]]
name = "shop"
dsn = "host=/var/run/postgresql dbname=shop user=kbackup"
[[files]]
name = "pdfs"
path = "/srv/shop/pdfs"
"""


def make_config(base: Path, job: str = GOOD_JOB, daemon: str = "") -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base}/state"\n{daemon}\n'
        f'[storage.local]\ntype = "local"\npath = "{base}/store"\n')
    (conf / "jobs.d" / "shop.toml").write_text(job)
    return conf


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KBACKUPCTL, "--config-dir", str(conf), "config", "check"],
                          capture_output=True, text=True)


def test_good_config_passes(tmp_path: Path) -> None:
    result = check(make_config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "shop" in result.stdout


def test_environment_variable_selects_config_dir(tmp_path: Path) -> None:
    conf = make_config(tmp_path)
    result = subprocess.run([KBACKUPCTL, "config", "check"], capture_output=True, text=True,
                            env={"KBACKUP_CONFIG_DIR": str(conf), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert str(conf) in result.stdout


PG_LINE = 'dsn = "host=/var/run/postgresql dbname=shop user=kbackup"'
BAD_JOBS = [
    ("databases not a list", GOOD_JOB.replace(PG_LINE, PG_LINE + "\ndatabases = 5"),
     'shop.toml: postgres.0.databases: expected "*" or a non-empty list of'
     " database names, got 5"),
    ("databases empty", GOOD_JOB.replace(PG_LINE, PG_LINE + "\ndatabases = []"),
     "shop.toml: postgres.0.databases: expected \"*\" or a non-empty list"),
    ("exclude without databases", GOOD_JOB.replace(PG_LINE, PG_LINE + '\nexclude = ["t*"]'),
     "shop.toml: postgres.0: exclude needs databases"),
    ("bad exclude pattern", GOOD_JOB.replace(
        PG_LINE, PG_LINE + '\ndatabases = "*"\nexclude = ["test_[a"]'),
     "shop.toml: postgres.0.exclude: pattern 'test_[a' has an unclosed [ ]"),
    ("empty exclude pattern", GOOD_JOB.replace(
        PG_LINE, PG_LINE + '\ndatabases = "*"\nexclude = [""]'),
     "shop.toml: postgres.0.exclude: expected non-empty shell patterns, got ''"),
    ("not toml", "schedules = [", "shop.toml: not valid TOML"),
    ("typo", GOOD_JOB.replace("targets", "target"), "shop.toml: target: unknown field"),
    ("missing targets", GOOD_JOB.replace('targets = ["local"]', ""),
     "shop.toml: targets: required field is missing"),
    ("bad cron", GOOD_JOB.replace("0 2 * * *", "0 25 * * *"),
     "shop.toml: schedules.0.cron: '0 25 * * *' is not a cron expression"),
    ("bad timezone", 'timezone = "Mars/Olympus"\n' + GOOD_JOB,
     "shop.toml: timezone: unknown timezone 'Mars/Olympus'"),
    ("unknown target", GOOD_JOB.replace('["local"]', '["local", "offsite"]'),
     "shop.toml: targets.1: unknown storage target 'offsite' (kbackupd.toml defines: local)"),
    ("inline password", GOOD_JOB.replace("user=kbackup", "user=kbackup password=hunter2"),
     "shop.toml: postgres.0.dsn: the DSN contains a password; put it in a file"),
    ("url password", GOOD_JOB.replace('"host=/var/run/postgresql dbname=shop user=kbackup"',
                                      '"postgresql://kbackup:hunter2@db/shop"'),
     "shop.toml: postgres.0.dsn: the DSN contains a password"),
    ("missing password file",
     GOOD_JOB.replace('user=kbackup"', 'user=kbackup"\npassword_file = "/nonexistent/pw"'),
     "shop.toml: postgres.shop.password_file: /nonexistent/pw does not exist"),
    ("no sources", 'targets = ["local"]\n',
     "shop.toml: -: a job needs at least one [[postgres]] or [[mysql]] or [[sqlite]] or"
     " [[files]] source"),
    ("duplicate component", GOOD_JOB.replace('name = "pdfs"', 'name = "shop"'),
     "component names must be unique within a job: shop"),
    ("relative path", GOOD_JOB.replace('"/srv/shop/pdfs"', '"srv/pdfs"'),
     "shop.toml: files.0.path: expected an absolute path to a directory or a file, got"
     " 'srv/pdfs'"),
    ("unknown redact", GOOD_JOB.replace('path = "/srv/shop/pdfs"',
                                        'path = "/srv/shop/.env"\nredact = "yaml"'),
     "shop.toml: files.0.redact: Input should be 'env' (got 'yaml')"),
    ("redact on postgres", GOOD_JOB.replace(PG_LINE, PG_LINE + '\nredact = "env"'),
     "shop.toml: postgres.0.redact: unknown field (check the spelling)"),
    ("files without path", GOOD_JOB.replace('path = "/srv/shop/pdfs"', ""),
     "shop.toml: files.0.path: required field is missing"),
    ("redact_glob without redact",
     GOOD_JOB.replace('path = "/srv/shop/pdfs"', 'path = "/srv/shop"\nredact_glob = [".env"]'),
     'shop.toml: files.0: redact_glob is set but redact is not; add redact = "env"'),
    ("bad timeout", 'timeout = "2 hours"\n' + GOOD_JOB,
     "shop.toml: timeout: '2 hours' is not a duration"),
    ("bad name", GOOD_JOB.replace('name = "pdfs"', 'name = "../pdfs"'),
     "shop.toml: files.0.name: String should match pattern"),
]


@pytest.mark.parametrize(("label", "job", "expected"), BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
def test_bad_job_file_is_named_with_field(tmp_path: Path, label: str, job: str,
                                          expected: str) -> None:
    conf = make_config(tmp_path, job=job)
    result = check(conf)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert str(conf / "jobs.d" / "shop.toml") in result.stderr
    assert "Traceback" not in result.stderr
    # The daemon refuses the same config at start, with the same message.
    daemon = subprocess.run([KBACKUPD, "--config-dir", str(conf), "--check"],
                            capture_output=True, text=True)
    assert daemon.returncode == 1 and expected in daemon.stderr


BAD_DAEMON = [
    ("zero concurrency", "max_concurrent_jobs = 0",
     "kbackupd.toml: daemon.max_concurrent_jobs: Input should be greater than or equal to 1"),
    ("unknown daemon field", "sockett = '/tmp/x'", "kbackupd.toml: daemon.sockett: unknown field"),
    ("bad log level", "log_level = 'loud'", "kbackupd.toml: daemon.log_level:"),
    ("relative storage path", "[storage.rel]\ntype = 'local'\npath = 'rel/dir'",
     "kbackupd.toml: storage.rel.path: expected an absolute directory path, got 'rel/dir'"),
]


@pytest.mark.parametrize(("label", "line", "expected"), BAD_DAEMON, ids=[b[0] for b in BAD_DAEMON])
def test_bad_daemon_config(tmp_path: Path, label: str, line: str, expected: str) -> None:
    result = check(make_config(tmp_path, daemon=line))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    conf = make_config(tmp_path, job=GOOD_JOB.replace("0 2 * * *", "nope"))
    (conf / "jobs.d" / "other.toml").write_text(GOOD_JOB.replace('["local"]', '["cloud"]'))
    result = check(conf)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "shop.toml: schedules.0.cron" in lines[1]
    assert "other.toml: targets.0: unknown storage target 'cloud'" in lines[0]


def test_missing_config_dir(tmp_path: Path) -> None:
    result = check(tmp_path / "nowhere")
    assert result.returncode == 1
    assert "config directory does not exist" in result.stderr


def test_storage_needs_absolute_path(tmp_path: Path) -> None:
    conf = make_config(tmp_path)
    text = (conf / "kbackupd.toml").read_text().replace(f'path = "{tmp_path}/store"',
                                                        'path = "relative/store"')
    (conf / "kbackupd.toml").write_text(text)
    result = check(conf)
    assert result.returncode == 1
    assert "kbackupd.toml: storage.local.path: expected an absolute" in result.stderr


def test_unknown_storage_type(tmp_path: Path) -> None:
    conf = make_config(tmp_path)
    text = (conf / "kbackupd.toml").read_text().replace('type = "local"', 'type = "tape"')
    (conf / "kbackupd.toml").write_text(text)
    result = check(conf)
    assert result.returncode == 1
    assert "kbackupd.toml: storage.local: Input tag 'tape'" in result.stderr
