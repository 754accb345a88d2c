"""Alerts through real channels: mail to an aiosmtpd server over STARTTLS with a password,
Slack and webhook payloads to a local HTTP server (retried after a 500, HMAC-signed), driven by
a fake clock: an alert fires at the right minute, repeats after repeat_interval, resolves when a
backup completes, survives a restart without being sent twice, and a silence holds it back
until it expires. Last, the same through a real kbackupd process and kbackupctl.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alert_servers import (
    QUIET,
    SMTP_PASSWORD,
    SMTP_USER,
    CertFiles,
    HealthEnv,
    HttpRecorder,
    SmtpServer,
    email_channel,
    henv,
    http_recorder,
    smtp_server,
    test_cert,
)
from conftest import KbEnv, free_port, wait_for, write_fake_now
from kbackup.alerts.webhook import SIGNATURE_HEADER, sign
from kbackup.config import load_config
from kbackup.ctl.client import http_request

__all__ = ["henv", "http_recorder", "smtp_server", "test_cert"]  # fixtures, for pytest

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ON_CALL = ["oncall@shop.example", "boss@shop.example"]
AGE_LIMIT = '[thresholds]\nmax_backup_age = "26h"'


def webhook_channel(recorder: HttpRecorder, name: str = "hook", extra: str = "") -> str:
    return f"""
[alerts.{name}]
type = "webhook"
url = "{recorder.url('/kbackup')}"
retry_delay = "0.05s"
{extra}
"""


def kinds(recorder: HttpRecorder) -> list[tuple[str, str]]:
    return [(r.json["kind"], r.json["key"]) for r in recorder.received()]


async def test_mail_over_starttls_says_what_since_when_and_what_next(
        henv: HealthEnv, smtp_server: SmtpServer, test_cert: CertFiles,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password = tmp_path / "smtp-password"
    password.write_text(SMTP_PASSWORD + "\n")
    henv.daemon_toml(QUIET + email_channel(smtp_server, test_cert, password, ON_CALL))
    henv.job(extra=AGE_LIMIT)
    henv.clock.current = T0 - timedelta(hours=31)
    henv.backup("shop", henv.clock.current)
    henv.run("shop", T0 - timedelta(hours=7), "failed",
             "pg_dump: error: connection to server on socket failed: No such file")
    henv.clock.current = T0
    await henv.evaluate()
    mails = smtp_server.wait_for(2)  # the age, and the failed run since (shop/last_run)
    sender, recipients, mail = next(m for m in mails if "shop/backup_age" in m[2].get_content())
    assert smtp_server.logins == [(SMTP_USER, True)] * 2
    assert sender == "kbackup@shop.example"
    assert recipients == ["oncall@shop.example", "boss@shop.example"]
    assert mail["Subject"] == "[kbackup CRITICAL] shop: last good backup is 31h old (limit 26h)"
    body = mail.get_content()
    assert "CRITICAL: shop: last good backup is 31h old (limit 26h)" in body
    assert "Since:      2026-11-23 12:00 UTC" in body
    assert "Last errors:" in body and "connection to server on socket failed" in body
    assert "kbackupctl runs shop" in body
    assert 'kbackupctl alerts silence shop/backup_age --for 2h --reason "..."' in body
    henv.clock.advance(minutes=5)
    henv.backup("shop", henv.clock.current)
    await henv.evaluate()
    resolved = next(m for _, _, m in smtp_server.wait_for(4)[2:]
                    if "shop/backup_age" in m.get_content())
    assert resolved["Subject"] == "[kbackup RESOLVED] shop: last good backup is 0s old" \
                                  " (limit 26h)"
    assert "Was:        CRITICAL: last good backup is 31h old (limit 26h)" in \
        resolved.get_content()
    assert SMTP_PASSWORD not in caplog.text


async def test_wrong_smtp_password_is_a_recorded_channel_failure_shown_elsewhere(
        henv: HealthEnv, smtp_server: SmtpServer, test_cert: CertFiles,
        http_recorder: HttpRecorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    password = tmp_path / "smtp-password"
    password.write_text("wrong password\n")
    henv.daemon_toml(QUIET + email_channel(smtp_server, test_cert, password, ON_CALL)
                     + webhook_channel(http_recorder))
    henv.job(extra=AGE_LIMIT)
    await henv.evaluate()  # the job is known from T0 on
    henv.clock.advance(hours=27)  # and has no backup after 27h
    await henv.evaluate()
    logins = len(smtp_server.logins)  # aiosmtplib tries PLAIN, then LOGIN; 535 is final
    assert logins and all(user == SMTP_USER and not ok for user, ok in smtp_server.logins)
    assert smtp_server.mails == []
    alert = henv.monitor.manager.listing()["firing"][0]
    assert alert["key"] == "shop/backup_age"
    error = alert["deliveries"]["mail"]["error"]
    assert error == (f"127.0.0.1:{smtp_server.port}: SMTP 535 5.7.8 Authentication credentials"
                     f" invalid (login {SMTP_USER})")
    assert alert["last_error"] == f"mail: {error}"
    assert alert["deliveries"]["hook"]["notified_at"] is not None
    # The next evaluation reports the failing channel, through the other channels only.
    henv.clock.advance(seconds=30)
    await henv.evaluate()
    assert kinds(http_recorder) == [("firing", "shop/backup_age"),
                                    ("firing", "daemon/channel/mail")]
    assert http_recorder.received()[1].json["reason"].startswith(
        "alert channel mail is failing since 2026-11-24 15:00 UTC (1 failed sends): 127.0.0.1:")
    assert len(smtp_server.logins) == logins  # a failed delivery waits before the next try
    tested = await henv.monitor.manager.test("mail")
    assert tested == [{"channel": "mail", "type": "email", "ok": False, "error": error}]
    assert "wrong password" not in caplog.text
    assert "event=alert.channel_failed channel=mail" in caplog.text


async def test_slack_gets_a_coloured_message_and_a_500_is_retried(
        henv: HealthEnv, http_recorder: HttpRecorder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    url_file = tmp_path / "slack-url"
    url_file.write_text(http_recorder.url("/services/T0000/B0000/s3cr3tt0k3n") + "\n")
    henv.daemon_toml(QUIET + f"""
[alerts.chat]
type = "slack"
webhook_url_file = "{url_file}"
retry_delay = "0.05s"
""")
    henv.job(extra=AGE_LIMIT)
    henv.backup("shop", T0 - timedelta(hours=31))
    http_recorder.failures = 1
    await henv.evaluate()
    first, second = http_recorder.wait_for(2)
    assert first.body == second.body and first.path == "/services/T0000/B0000/s3cr3tt0k3n"
    payload = second.json
    assert payload["text"] == "[kbackup CRITICAL] shop: last good backup is 31h old (limit 26h)"
    attachment = payload["attachments"][0]
    assert attachment["color"] == "#d0021b"
    assert {"title": "Job", "value": "shop", "short": True} in attachment["fields"]
    assert "last good backup is 31h old" in attachment["text"]
    assert "Next step: `kbackupctl runs shop`" in attachment["text"]
    assert henv.monitor.manager.listing()["channels"][0]["failures"] == 0
    # A broken endpoint: the error is exact and the token stays out of it and of the logs.
    http_recorder.failures, http_recorder.fail_with = 10, 404
    result = (await henv.monitor.manager.test("chat"))[0]
    assert result["error"] == "Slack webhook answered HTTP 404 Not Found: temporarily broken"
    assert "s3cr3tt0k3n" not in caplog.text


async def test_webhook_body_is_signed_with_hmac(henv: HealthEnv, http_recorder: HttpRecorder,
                                                tmp_path: Path) -> None:
    secret = tmp_path / "webhook-secret"
    secret.write_text("hmac key 42\n")
    henv.daemon_toml(QUIET + webhook_channel(http_recorder, extra=f'secret_file = "{secret}"'))
    henv.job(extra=AGE_LIMIT)
    henv.backup("shop", T0 - timedelta(hours=30))
    http_recorder.failures = 2  # two 500s, then accepted (3 retries allowed)
    await henv.evaluate()
    requests = http_recorder.wait_for(3)
    request = requests[-1]
    assert request.headers[SIGNATURE_HEADER] == sign("hmac key 42", request.body)
    assert request.headers["X-Kbackup-Event"] == "firing"
    body = request.json
    assert {k: body[k] for k in ("kind", "key", "job", "check", "severity", "reason",
                                 "first_seen")} == {
        "kind": "firing", "key": "shop/backup_age", "job": "shop", "check": "backup_age",
        "severity": "critical", "reason": "last good backup is 30h old (limit 26h)",
        "first_seen": "2026-11-23T12:00:00Z"}
    assert body["subject"] == "[kbackup CRITICAL] shop: last good backup is 30h old (limit 26h)"


async def test_age_alert_fires_on_the_minute_repeats_and_resolves(
        henv: HealthEnv, http_recorder: HttpRecorder) -> None:
    henv.daemon_toml(QUIET + webhook_channel(http_recorder))
    henv.job(extra=AGE_LIMIT)
    henv.backup("shop", T0)
    henv.clock.current = T0 + timedelta(hours=26)
    await henv.evaluate()
    assert kinds(http_recorder) == []
    henv.clock.advance(minutes=1)
    await henv.evaluate()
    assert kinds(http_recorder) == [("firing", "shop/backup_age")]
    assert http_recorder.received()[0].json["reason"] == \
        "last good backup is 26h01m old (limit 26h)"
    fired = henv.clock.current
    for hours in (1, 12, 23):
        henv.clock.current = fired + timedelta(hours=hours, minutes=59)
        await henv.evaluate()
    assert len(http_recorder.received()) == 1
    henv.clock.current = fired + timedelta(hours=24)  # repeat_interval (default 24h)
    await henv.evaluate()
    assert kinds(http_recorder)[1] == ("repeat", "shop/backup_age")
    henv.clock.advance(minutes=3)
    henv.backup("shop", henv.clock.current)
    await henv.evaluate()
    resolved = http_recorder.received()[2].json
    assert (resolved["kind"], resolved["severity"]) == ("resolved", "ok")
    assert resolved["subject"].startswith("[kbackup RESOLVED] shop: last good backup is 0s old")
    henv.clock.advance(hours=48)
    henv.backup("shop", henv.clock.current)
    await henv.evaluate()
    assert len(http_recorder.received()) == 3
    listing = henv.monitor.manager.listing()
    assert listing["firing"] == [] and listing["resolved"][0]["key"] == "shop/backup_age"


async def test_restart_neither_forgets_nor_resends(henv: HealthEnv,
                                                   http_recorder: HttpRecorder) -> None:
    henv.daemon_toml(QUIET + webhook_channel(http_recorder))
    henv.job(extra=AGE_LIMIT)
    henv.backup("shop", T0 - timedelta(hours=27))
    await henv.evaluate()
    assert len(http_recorder.received()) == 1
    first_seen = henv.monitor.manager.listing()["firing"][0]["first_seen"]
    await henv.close()  # the daemon stops ...
    henv.clock.advance(minutes=2)
    await henv.evaluate()  # ... and a new one starts on the same catalog
    assert len(http_recorder.received()) == 1
    firing = henv.monitor.manager.listing()["firing"]
    assert [(a["key"], a["first_seen"]) for a in firing] == [("shop/backup_age", first_seen)]
    henv.clock.advance(hours=24)
    await henv.evaluate()
    assert kinds(http_recorder)[-1] == ("repeat", "shop/backup_age")


async def test_a_silence_holds_alerts_back_until_it_expires(
        henv: HealthEnv, http_recorder: HttpRecorder) -> None:
    henv.daemon_toml(QUIET + webhook_channel(http_recorder))
    henv.job(extra=AGE_LIMIT)
    henv.backup("shop", T0 - timedelta(hours=25))
    manager = henv.monitor.manager
    with pytest.raises(ValueError, match="neither a job"):
        manager.silence("nosuchjob", 3600, "typo", "root")
    manager.silence("shop", 2 * 3600, "database migration", "root")
    henv.clock.advance(hours=1, minutes=1)
    await henv.evaluate()
    firing = manager.listing()["firing"]
    assert firing[0]["silenced"]["reason"] == "database migration"
    assert http_recorder.received() == []
    henv.clock.advance(minutes=58)
    await henv.evaluate()
    assert http_recorder.received() == []
    henv.clock.advance(minutes=2)  # the silence has expired
    await henv.evaluate()
    assert kinds(http_recorder) == [("firing", "shop/backup_age")]
    # A silence on the key holds back the repeat; lifting it sends what is due at once.
    manager.silence("shop/backup_age", 48 * 3600, "known, fixing", "root")
    henv.clock.advance(hours=25)
    await henv.evaluate()
    assert len(http_recorder.received()) == 1
    assert manager.unsilence("shop/backup_age") and not manager.unsilence("shop/backup_age")
    await manager.flush()
    assert kinds(http_recorder)[-1] == ("repeat", "shop/backup_age")


async def test_run_notifications_follow_notify_on(henv: HealthEnv,
                                                  http_recorder: HttpRecorder) -> None:
    henv.daemon_toml(QUIET + webhook_channel(http_recorder, extra='min_severity = "info"'))
    henv.job()  # notify_on defaults to failure + recovery
    monitor = henv.monitor

    def finished(run_id: str, status: str, error: str | None = None) -> None:
        monitor.run_finished(SimpleNamespace(job="shop", kind="backup", id=run_id), status,
                             error)

    good = henv.backup("shop", T0 - timedelta(days=1))
    finished(good, "complete")
    failed = henv.run("shop", T0 - timedelta(hours=2), "failed", "pg_dump: connection refused")
    finished(failed, "failed", "pg_dump: connection refused")
    henv.run("shop", T0 - timedelta(hours=1), "failed", "aborted: daemon shutting down")
    finished("x", "failed", "aborted: daemon shutting down")
    again = henv.backup("shop", T0)
    finished(again, "complete")
    await monitor.manager.flush()
    messages = [r.json for r in http_recorder.received()]
    assert [m["kind"] for m in messages] == ["failure", "recovery"]
    assert messages[0]["subject"] == \
        f"[kbackup FAILED] shop: backup {failed} failed: pg_dump: connection refused"
    assert messages[1]["subject"].startswith(f"[kbackup RECOVERED] shop: backup {again}"
                                             " complete again (16.7 MiB in 5m)")
    henv.job(extra='notify_on = ["success"]')
    monitor.reconfigure(load_config(henv.conf), monitor.storages)
    finished(henv.backup("shop", T0 + timedelta(hours=1)), "complete")
    await monitor.manager.flush()
    assert [r.json["kind"] for r in http_recorder.received()][-1] == "success"


async def test_a_hanging_channel_never_blocks_the_daemon(henv: HealthEnv,
                                                         http_recorder: HttpRecorder) -> None:
    http_recorder.delay = 1.0
    henv.daemon_toml(QUIET + webhook_channel(http_recorder,
                                             extra='timeout = "0.2s"\nretries = 0'))
    henv.job(extra=AGE_LIMIT)
    henv.backup("shop", T0 - timedelta(hours=27))
    started = time.monotonic()
    await henv.monitor.evaluate()  # sending happens in the background
    assert time.monotonic() - started < 0.2
    await henv.monitor.manager.flush()
    alert = henv.monitor.manager.listing()["firing"][0]
    assert alert["deliveries"]["hook"]["error"] == "no answer within 0.2s"
    assert henv.monitor.store.channel_states()["hook"].failures == 1


# ---------------------------------------------------------------------- a real daemon


def parse_metrics(text: str) -> dict[str, list[object]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_daemon_health_alerts_check_and_metrics(kb: KbEnv, http_recorder: HttpRecorder,
                                                tmp_path: Path) -> None:
    now_file = tmp_path / "fake-now"
    real = datetime.now(UTC)
    now_file.write_text(real.isoformat())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "letter.txt").write_text("dear customer\n")
    metrics_port = free_port()
    kb.write_daemon(extra=QUIET + webhook_channel(http_recorder)
                    + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    kb.write_job("docs", f"""
targets = ["local"]
[thresholds]
max_backup_age = "2h"

[[files]]
name = "docs"
path = "{docs}"
""")
    env = {"KBACKUP_FAKE_NOW_FILE": str(now_file)}
    kb.start(env)
    tested = kb.ctl("alerts", "test")
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.strip() == "hook (webhook): OK, test message sent"
    assert http_recorder.received()[0].headers["X-Kbackup-Event"] == "test"
    kb.run_backup("docs")
    check = wait_for(lambda: (r := kb.ctl("check")).returncode == 0 and r, what="check OK")
    assert check.stdout.startswith("KBACKUP OK - kbackupd: ")  # type: ignore[attr-defined]

    write_fake_now(now_file, datetime.now(UTC) + timedelta(hours=3))  # 3h later
    wait_for(lambda: len(http_recorder.received()) >= 2, what="the age alert")
    alert = http_recorder.received()[1].json
    assert (alert["kind"], alert["key"], alert["reason"]) == (
        "firing", "docs/backup_age", "last good backup is 3h old (limit 2h)")
    check = kb.ctl("check", "docs")
    assert check.returncode == 2
    assert check.stdout.startswith("KBACKUP CRITICAL - docs: CRITICAL: last good backup is 3h"
                                   " old (limit 2h) | ok=")
    status = kb.ctl("status").stdout
    assert "HEALTH" in status and "health: CRITICAL" in status
    assert "  docs: CRITICAL: last good backup is 3h old (limit 2h)" in status

    code, body = http_request(str(kb.socket), "GET", "/metrics")
    assert code == 200
    metrics = parse_metrics(body.decode())
    assert metrics["kbackup_alerts_firing"][1].value == 1  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as rsp:
        assert "kbackup_last_success_timestamp_seconds" in parse_metrics(rsp.read().decode())

    # A restart neither forgets the alert nor sends it again.
    kb.stop()
    kb.start(env)
    wait_for(lambda: kb.ctl("check").returncode == 2, what="health after the restart")
    time.sleep(0.5)
    assert len(http_recorder.received()) == 2
    firing = kb.ctl_json("alerts")["firing"]
    assert [a["first_seen"] for a in firing] == [alert["first_seen"]]

    silenced = kb.ctl("alerts", "silence", "docs", "--for", "2h", "--reason", "moving house")
    assert silenced.returncode == 0 and silenced.stdout.startswith("silenced docs until")
    listing = kb.ctl("alerts").stdout
    assert "docs/backup_age" in listing and "silenced until" in listing
    assert "silence: docs until" in listing and "moving house" in listing
    assert kb.ctl("alerts", "unsilence", "docs").returncode == 0
    again = kb.ctl("alerts", "unsilence", "docs")
    assert again.returncode == 1 and "no active silence for 'docs'" in again.stderr
    unknown = kb.ctl("check", "nosuchjob")
    assert (unknown.returncode, unknown.stdout.split(" - ")[0]) == (3, "KBACKUP UNKNOWN")
    health = json.loads(http_request(str(kb.socket), "GET", "/v1/health?job=docs")[1])
    assert health["status"] == "critical"
    kb.stop()
    gone = kb.ctl("check")
    assert gone.returncode == 3 and gone.stdout.startswith("KBACKUP UNKNOWN - kbackupd is not")
