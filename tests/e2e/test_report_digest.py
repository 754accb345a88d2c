"""The report of a real daemon's real backups: `kbackupctl report` counts what was made,
failed and verified and shows the size and the restore-test's time; GET /v1/report answers it
as JSON; a bad --since is one line. Sent through real channels: a mail over STARTTLS to
aiosmtpd with an HTML table and PNG charts by Content-ID, the text to a webhook. On a digest
cron the daemon (driven by a fake clock) sends at the time, not again after a restart, and a
digest missed while it was down once at start."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alert_servers import (
    SMTP_PASSWORD,
    CertFiles,
    HttpRecorder,
    SmtpServer,
    email_channel,
    http_recorder,
    smtp_server,
    test_cert,
)
from conftest import KbEnv, request, wait_for, write_fake_now
from kbackup.times import format_duration
from kbackup.units import format_size

__all__ = ["http_recorder", "smtp_server", "test_cert"]  # fixtures, for pytest


def webhook(recorder: HttpRecorder, extra: str = "") -> str:
    return f"""
[alerts.hook]
type = "webhook"
url = "{recorder.url('/kbackup')}"
retry_delay = "0.05s"
{extra}
"""


def docs_job(kb: KbEnv, tree: Path) -> None:
    tree.mkdir(exist_ok=True)
    (tree / "a.txt").write_text("hello\n")
    kb.write_job("docs", f'targets = ["local"]\n\n[[files]]\nname = "docs"\npath = "{tree}"\n')


def test_report_of_real_backups_on_the_terminal_the_api_and_through_channels(
        kb: KbEnv, tmp_path: Path, smtp_server: SmtpServer, test_cert: CertFiles,
        http_recorder: HttpRecorder) -> None:
    password = tmp_path / "smtp-password"
    password.write_text(SMTP_PASSWORD + "\n")
    kb.write_daemon(email_channel(smtp_server, test_cert, password) + webhook(http_recorder))
    tree = tmp_path / "docs"
    docs_job(kb, tree)
    kb.start()
    backups = []
    for round_ in range(3):
        (tree / f"more-{round_}.bin").write_bytes(bytes(range(256)) * 200 * (round_ + 1))
        backups.append(kb.run_backup("docs"))
    (tree / "a.txt").rename(tmp_path / "a.txt")
    tree.rename(tmp_path / "gone")  # the next run cannot read its source
    failed = kb.ctl("run", "docs", "--wait")
    assert failed.returncode != 0, failed.stdout
    (tmp_path / "gone").rename(tree)
    verified = kb.ctl("verify", backups[-1]["id"], "--level", "restore-test", "--wait")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    data = kb.ctl_json("report", "--since", "1d")
    [job] = data["jobs"]
    assert (job["job"], job["made"], job["failed"], job["partial"]) == ("docs", 3, 1, 0)
    assert job["verified_ok"] == 4 and job["verified_failed"] == 0  # 3 checksums after backup
    assert job["size_bytes"] == backups[-1]["size_bytes"]
    assert job["trend_percent"] == round((backups[-1]["size_bytes"] - backups[0]["size_bytes"])
                                         * 100 / backups[0]["size_bytes"], 1)
    assert job["restore_seconds"] > 0
    assert data["targets"] == [{"target": "local", "type": "local", "backups": 3,
                                "stored_bytes": sum(b["size_bytes"] for b in backups)}]

    text = kb.ctl("report", "--since", "1d")
    assert text.returncode == 0, text.stderr
    row = next(line for line in text.stdout.splitlines() if line.startswith("docs "))
    assert row.split()[:4] == ["docs", "3", "1", "0"]
    assert format_size(backups[-1]["size_bytes"]) in row
    assert format_duration(job["restore_seconds"]) in row
    assert format_size(data["targets"][0]["stored_bytes"]) in text.stdout

    bad = kb.ctl("report", "--since", "soon")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "--since" in bad.stderr
    status, _, body = request(kb, "GET", "/v1/report?since=soon")
    assert status == 400 and json.loads(body)["error"].startswith("since: ")
    status, _, body = request(kb, "GET", "/v1/report?until=1d")
    assert status == 400 and "until: unknown parameter" in json.loads(body)["error"]

    sent = kb.ctl("report", "--since", "1d", "--send", "mail")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    mail = wait_for(lambda: next((m for _, _, m in smtp_server.mails
                                  if m["Subject"].startswith("[kbackup REPORT]")), None),
                    10, "the report mail")  # beside the failed run's alert
    assert mail["Subject"].startswith("[kbackup REPORT] ")
    assert "1 jobs, 3 backups, 1 failed" in mail["Subject"]
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(preferencelist=("plain",))
    assert plain is not None
    mailed = next(line for line in plain.get_content().splitlines() if line.startswith("docs "))
    assert mailed.split()[:6] == row.split()[:6]
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert "<td style" in html and ">docs</td>" in html
    assert f">{format_size(backups[-1]['size_bytes'])}</td>" in html
    images = [p for p in mail.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0].get_content().startswith(b"\x89PNG\r\n\x1a\n")
    assert f'src="cid:{images[0]["Content-ID"].strip("<>")}"' in html

    sent = kb.ctl("report", "--send", "hook")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    [hook] = wait_for(lambda: [r for r in http_recorder.received()
                               if r.json["kind"] == "digest"], 10, "the webhook's report")
    assert hook.headers["X-Kbackup-Event"] == "digest"
    assert hook.json["kind"] == "digest" and "html" not in hook.json
    assert any(line.startswith("docs ") for line in hook.json["body"].splitlines())
    assert hook.json["report"]["jobs"][0]["made"] == 3

    missing = kb.ctl("report", "--send", "pager")
    assert missing.returncode == 1 and "no alert channel named 'pager'" in missing.stderr
    assert "event=digest.sent channel=mail type=email" in kb.logs()


def next_monday_8(after: datetime) -> datetime:
    day = after.replace(hour=8, minute=0, second=0, microsecond=0)
    day += timedelta(days=(7 - day.weekday()) % 7)
    return day if day > after else day + timedelta(days=7)


def digests(recorder: HttpRecorder) -> list[dict[str, object]]:
    return [r.json for r in recorder.received() if r.json.get("kind") == "digest"]


@pytest.mark.timeout(180)
def test_digest_on_its_cron_once_and_caught_up_after_downtime(
        kb: KbEnv, tmp_path: Path, http_recorder: HttpRecorder) -> None:
    monday = next_monday_8(datetime.now(UTC))  # the window holds the real backup below
    fake_now = tmp_path / "now"
    write_fake_now(fake_now, monday - timedelta(seconds=30))
    env = {"KBACKUP_FAKE_NOW_FILE": str(fake_now)}
    kb.write_daemon(webhook(http_recorder, 'digest = "0 8 * * 1"\nmin_severity = "critical"'))
    docs_job(kb, tmp_path / "docs")
    kb.start(env)
    kb.run_backup("docs")
    time.sleep(1)
    assert digests(http_recorder) == []
    write_fake_now(fake_now, monday + timedelta(seconds=40))
    [first] = wait_for(lambda: digests(http_recorder), 30, "the Monday digest")
    report = first["report"]
    assert isinstance(report, dict)
    assert report["since"] == (monday - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report["jobs"][0]["made"] == 1

    wait_for(lambda: "event=digest.sent channel=hook" in kb.logs(), 10, "the log line")
    kb.stop()  # (the fire time is recorded right after that line, before any stop is seen)
    kb.start(env)  # the same Monday: nothing again
    write_fake_now(fake_now, monday + timedelta(minutes=3))
    time.sleep(3)
    assert len(digests(http_recorder)) == 1

    kb.stop()
    write_fake_now(fake_now, monday + timedelta(days=14, hours=2))  # two Mondays missed
    kb.start(env)
    wait_for(lambda: len(digests(http_recorder)) == 2, 30, "the catch-up digest")
    time.sleep(3)
    found = digests(http_recorder)
    assert len(found) == 2
    caught_up = found[1]["report"]
    assert isinstance(caught_up, dict)
    assert caught_up["since"] == (monday + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "event=digest.sent channel=hook type=webhook" in kb.logs()
