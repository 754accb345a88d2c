"""The dead-man's switch through a real kbackupd process: a local HTTP server stands in for
healthchecks.io and receives the job's /start, success and /fail pings and the daemon's
heartbeat every second; a hanging or broken ping server never holds up a backup, becomes a
WARNING mail on a real SMTP server, and resolves when pings get through again. The ping URLs
(secrets) never reach the daemon's log nor the mails."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from alert_servers import (
    QUIET,
    SMTP_PASSWORD,
    CertFiles,
    HttpRecorder,
    Recorded,
    SmtpServer,
    email_channel,
    http_recorder,
    smtp_server,
    test_cert,
)
from conftest import KbEnv, free_port, wait_for
from kbackup.alerts.heartbeat import Heartbeats
from kbackup.config import load_config

__all__ = ["http_recorder", "smtp_server", "test_cert"]  # fixtures, for pytest

JOB_TOKEN = "5b8f7c1e-job-secret"
DAEMON_TOKEN = "d4e1a9-daemon-secret"


def files_job(kb: KbEnv, name: str, path: Path, ping_file: Path, extra: str = "") -> None:
    kb.write_job(name, f"""
targets = ["local"]
[heartbeat]
url_file = "{ping_file}"
retry_delay = "0.1s"
{extra}

[[files]]
name = "docs"
path = "{path}"
""")


def secret_file(base: Path, name: str, url: str) -> Path:
    path = base / name
    path.write_text(url + "\n")
    return path


def test_job_pings_start_success_fail_and_the_daemon_beats(
        kb: KbEnv, http_recorder: HttpRecorder, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "letter.txt").write_text("dear customer\n")
    ping = secret_file(tmp_path, "docs.ping", http_recorder.url(f"/ping/{JOB_TOKEN}"))
    beat = secret_file(tmp_path, "daemon.ping",
                       http_recorder.url(f"/beat/{DAEMON_TOKEN}?key=hunter2"))
    kb.write_daemon(extra=QUIET + f'\n[heartbeat]\nurl_file = "{beat}"\nevery = "1s"\n')
    files_job(kb, "docs", docs, ping)
    files_job(kb, "broken", tmp_path / "no-such-dir", ping)
    kb.start()

    backup = kb.run_backup("docs")
    failed = kb.ctl("run", "broken", "--wait")
    assert failed.returncode != 0
    wait_for(lambda: len(job_pings(http_recorder)) >= 4, timeout=15, what="4 job pings")
    pings = job_pings(http_recorder)
    broken = kb.ctl_items("runs", "broken")[0]
    assert [(r.method, r.path, r.body.decode()) for r in pings] == [
        ("POST", f"/ping/{JOB_TOKEN}/start", f"backup {backup['id']} started (manual)"),
        ("POST", f"/ping/{JOB_TOKEN}", f"backup {backup['id']} complete"),
        ("POST", f"/ping/{JOB_TOKEN}/start", f"backup {broken['id']} started (manual)"),
        ("POST", f"/ping/{JOB_TOKEN}/fail",
         f"backup {broken['id']} failed: {broken['error'].splitlines()[0]}"),
    ]
    assert broken["status"] == "failed" and broken["error"]

    count = len(beats(http_recorder))
    wait_for(lambda: len(beats(http_recorder)) >= count + 2, timeout=10, what="2 more beats")
    first = beats(http_recorder)[0]
    assert (first.method, first.path, first.query, first.body) == (
        "GET", f"/beat/{DAEMON_TOKEN}", "key=hunter2", b"")
    kb.stop()
    logs = kb.logs()
    assert "event=run.start" in logs
    for secret in (JOB_TOKEN, DAEMON_TOKEN, "hunter2", str(ping.read_text().strip())):
        assert secret not in logs


def job_pings(recorder: HttpRecorder) -> list[Recorded]:
    return [r for r in recorder.received() if r.path.startswith("/ping/")]


def beats(recorder: HttpRecorder) -> list[Recorded]:
    return [r for r in recorder.received() if r.path.startswith("/beat/")]


def test_a_broken_ping_server_never_holds_a_backup_and_is_a_warning_until_it_works(
        kb: KbEnv, http_recorder: HttpRecorder, smtp_server: SmtpServer,
        test_cert: CertFiles, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "letter.txt").write_text("dear customer\n")
    password = secret_file(tmp_path, "smtp-password", SMTP_PASSWORD)
    ping = secret_file(tmp_path, "docs.ping", http_recorder.url(f"/ping/{JOB_TOKEN}"))
    down = secret_file(tmp_path, "daemon.ping",
                       f"http://127.0.0.1:{free_port()}/beat/{DAEMON_TOKEN}")  # nobody there
    kb.write_daemon(extra=QUIET + email_channel(smtp_server, test_cert, password)
                    + f'\n[heartbeat]\nurl_file = "{down}"\nevery = "1s"\nretries = 0\n')
    files_job(kb, "docs", docs, ping, 'timeout = "3s"\nretries = 1')
    http_recorder.failures = 10**6  # 500 to every ping ...
    http_recorder.delay = 4.0  # ... after hanging beyond the ping's timeout
    kb.start()

    began = time.monotonic()
    backup = kb.run_backup("docs")
    took = time.monotonic() - began
    assert backup["status"] == "complete"
    assert took < 3.0, f"the backup waited for its ping: {took:.1f}s"
    mails = smtp_server.wait_for(2, timeout=30)
    subjects = sorted(m[2]["Subject"] for m in mails)
    assert subjects[0].startswith("[kbackup WARNING] kbackupd: job docs's heartbeat pings fail"
                                  " since ")
    assert subjects[0].endswith(": no answer within 3s (after 2 attempts)")
    assert subjects[1].startswith("[kbackup WARNING] kbackupd: the daemon's heartbeat pings"
                                  " fail since ")
    assert "ClientConnectorError" in subjects[1]
    assert len(http_recorder.received()) >= 2  # tried, and tried again

    http_recorder.failures, http_recorder.delay = 0, 0.0  # the monitor is back
    kb.run_backup("docs")
    mails = smtp_server.wait_for(3, timeout=30)
    resolved = [m[2] for m in mails if m[2]["Subject"].startswith("[kbackup RESOLVED]")]
    assert [m["Subject"] for m in resolved] == [
        "[kbackup RESOLVED] kbackupd: job docs's heartbeat pings get through"]
    alerts = kb.ctl_json("alerts")
    assert [a["key"] for a in alerts["firing"]] == ["daemon/heartbeat/daemon"]
    kb.stop()
    everything = kb.logs() + "".join(m[2].get_content() for m in smtp_server.mails)
    assert JOB_TOKEN not in everything and DAEMON_TOKEN not in everything
    assert "event=heartbeat.failed name=docs url=http://127.0.0.1/***" in everything


async def test_plain_style_pings_success_and_the_fail_url_only(
        http_recorder: HttpRecorder, tmp_path: Path) -> None:
    """style = "plain" (Uptime Kuma push, Cronitor): no /start; success GETs the URL with its
    query; a failure GETs fail_url_file's URL; a run a daemon stop aborted pings nothing."""
    ok = secret_file(tmp_path, "ok.ping", http_recorder.url("/api/push/Tok?status=up&msg=OK"))
    bad = secret_file(tmp_path, "bad.ping", http_recorder.url("/api/push/Tok?status=down"))
    conf = tmp_path / "conf"
    (conf / "jobs.d").mkdir(parents=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n'
        f'[storage.local]\ntype = "local"\npath = "{tmp_path}/store"\n')
    (conf / "jobs.d" / "shop.toml").write_text(f"""
targets = ["local"]
[heartbeat]
url_file = "{ok}"
style = "plain"
fail_url_file = "{bad}"
[[files]]
name = "docs"
path = "{tmp_path}"
""")
    pinger = Heartbeats(load_config(conf))

    def run(run_id: str) -> SimpleNamespace:
        return SimpleNamespace(job="shop", kind="backup", id=run_id, trigger="manual")

    pinger.run_started(run("r1"))
    pinger.run_finished(run("r1"), "complete", None)
    await pinger.flush()
    pinger.run_finished(run("r2"), "failed", "tar: /srv: Cannot open\nmore")
    await pinger.flush()
    pinger.run_finished(run("r3"), "failed", "aborted: daemon shutting down")
    pinger.run_finished(SimpleNamespace(job="shop", kind="restore", id="r4", trigger="x"),
                        "complete", None)
    await pinger.flush()
    assert [(r.method, r.path, r.query) for r in http_recorder.received()] == [
        ("GET", "/api/push/Tok", "status=up&msg=OK"),
        ("GET", "/api/push/Tok", "status=down"),
    ]
    assert pinger.states["shop"].failures == 0
