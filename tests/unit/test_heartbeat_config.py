"""[heartbeat] of a job and of kbackupd.toml: bad values get one line naming the file and the
field; the ping URL's file stays out of a backup's configuration snapshot; the pinger's URL
helpers keep path and query out of what it logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbackup.alerts.heartbeat import mask, one_line, with_suffix
from kbackup.config import ConfigError, load_config

JOB = """
targets = ["local"]
[[files]]
name = "pdfs"
path = "/srv/shop/pdfs"
"""


def make_config(base: Path, job_heartbeat: str = "", daemon: str = "") -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base}/state"\n'
        f'[storage.local]\ntype = "local"\npath = "{base}/store"\n{daemon}\n')
    (conf / "jobs.d" / "shop.toml").write_text(JOB + job_heartbeat)
    return conf


def problems(conf: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(conf)
    return [p.replace(str(conf) + "/", "") for p in caught.value.problems]


@pytest.fixture
def ping_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.ping"
    path.write_text("https://hc-ping.com/0f0e-secret-uuid\n")
    return path


def test_a_good_heartbeat_loads_with_its_defaults(tmp_path: Path, ping_file: Path) -> None:
    conf = make_config(tmp_path, f'[heartbeat]\nurl_file = "{ping_file}"\n',
                       f'[heartbeat]\nurl_file = "{ping_file}"\nevery = "1s"\n')
    config = load_config(conf)
    job = config.jobs["shop"].heartbeat
    assert job is not None and (job.style, job.url_file, job.retries) == (
        "healthchecks", ping_file, 3)
    daemon = config.settings.heartbeat
    assert daemon is not None and daemon.every == 1.0
    snapshot = config.redacted_snapshot(config.jobs["shop"])
    assert "heartbeat" not in snapshot["job"] and str(ping_file) not in str(snapshot)


@pytest.mark.parametrize(("job", "daemon", "expected"), [
    ("[heartbeat]\nstyle = \"plain\"\n", "",
     "jobs.d/shop.toml: heartbeat.url_file: required field is missing"),
    ('[heartbeat]\nurl_file = "{ping}"\nstyle = "cronitor"\n', "",
     "jobs.d/shop.toml: heartbeat.style: Input should be 'healthchecks' or 'plain'"
     " (got 'cronitor')"),
    ('[heartbeat]\nurl_file = "{ping}"\nfail_url_file = "{ping}"\n', "",
     'jobs.d/shop.toml: heartbeat: fail_url_file is for style = "plain"'),
    ('[heartbeat]\nurl_file = "relative.ping"\n', "",
     "jobs.d/shop.toml: heartbeat.url_file: expected an absolute file path, got"
     " 'relative.ping'"),
    ('[heartbeat]\nurl_file = "/nonexistent/shop.ping"\n', "",
     "jobs.d/shop.toml: heartbeat.url_file: /nonexistent/shop.ping does not exist or is"
     " not a file"),
    ("", '[heartbeat]\nurl_file = "{ping}"\nevery = "soon"\n',
     "kbackupd.toml: heartbeat.every: "),
    ("", '[heartbeat]\nurl_file = "{ping}"\nevery = "0.5s"\n',
     "kbackupd.toml: heartbeat.every: Input should be greater than or equal to 1"),
    ("", '[heartbeat]\nurl = "https://hc-ping.com/x"\n',
     "kbackupd.toml: heartbeat.url: unknown field (check the spelling)"),
])
def test_bad_heartbeat_is_one_line_naming_file_and_field(
        tmp_path: Path, ping_file: Path, job: str, daemon: str, expected: str) -> None:
    conf = make_config(tmp_path, job.replace("{ping}", str(ping_file)),
                       daemon.replace("{ping}", str(ping_file)))
    found = problems(conf)
    assert any(p.startswith(expected) for p in found), found
    assert all("\n" not in p for p in found)


def test_logged_urls_show_only_scheme_and_host() -> None:
    url = "https://hc-ping.com/0f0e-secret-uuid?key=hunter2"
    assert mask(url) == "https://hc-ping.com/***"
    assert with_suffix(url, "/start") == "https://hc-ping.com/0f0e-secret-uuid/start?key=hunter2"
    assert with_suffix("http://kuma:3001/api/push/Tok/", "/fail") == \
        "http://kuma:3001/api/push/Tok/fail"
    assert one_line("pg_dump: error: connection refused\nmore detail\n") == \
        "pg_dump: error: connection refused"
    assert one_line(None) == ""
