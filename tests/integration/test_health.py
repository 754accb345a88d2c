"""Health checks on a real catalog with chosen history and a fake clock: backup age (per job
and per target), failure rate, duration (while running), size drops, missed schedules,
verification, storage and channel failures, disk space on a real small filesystem and its
forecast, the config that drives them, and the Prometheus output.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alert_servers import HealthEnv, MiB, henv
from kbackup.alerts.monitor import disk_roles, stat_disks
from kbackup.config import ConfigError, ThresholdsConfig, load_config
from kbackup.health import largest_gap
from kbackup.health_daemon import check_disk, evaluate_daemon
from kbackup.health_facts import (
    CRITICAL,
    OK,
    WARNING,
    ChannelState,
    DiskStat,
    Facts,
    RunningRun,
)
from kbackup.scheduler import prev_fire

__all__ = ["henv"]  # the fixture, imported for pytest

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_default_age_limit_is_the_largest_schedule_gap_plus_25_percent() -> None:
    daily = largest_gap(("0 2 * * *",), "UTC", T0)
    assert daily == 24 * 3600
    weekdays = largest_gap(("0 2 * * 1-5",), "UTC", T0)
    assert weekdays == 72 * 3600  # Friday 02:00 to Monday 02:00
    both = largest_gap(("0 2 * * 1-5", "0 3 * * 6"), "UTC", T0)
    assert both == 47 * 3600  # Saturday 03:00 to Monday 02:00
    # Across the autumn clock change one "day" in London is 25 hours long.
    london = largest_gap(("30 1 * * *",), "Europe/London", datetime(2026, 10, 20, tzinfo=UTC))
    assert london == 25 * 3600


def test_prev_fire_matches_the_scheduler() -> None:
    tz = ZoneInfo("Europe/London")
    at = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert prev_fire("0 2 * * *", tz, at) == at
    assert prev_fire("0 2 * * *", tz, at - timedelta(seconds=1)) == at - timedelta(days=1)


async def test_age_alert_turns_critical_at_the_right_minute(henv: HealthEnv) -> None:
    henv.job(schedules='[ { cron = "0 2 * * *", tag = "daily" } ]')
    finished = datetime(2026, 11, 23, 2, 10, tzinfo=UTC)
    henv.clock.current = finished
    henv.backup("shop", finished)
    henv.clock.current = finished + timedelta(hours=30)  # default limit: 24h gap + 25%
    age = henv.by_key(await henv.evaluate())["shop/backup_age"]
    assert age.severity == OK, age
    henv.clock.advance(minutes=1)
    age = henv.by_key(await henv.evaluate())["shop/backup_age"]
    assert age.severity == CRITICAL
    assert age.reason == "last good backup is 30h01m old (limit 30h)"
    assert age.next_step == "kbackupctl runs shop"


async def test_age_of_a_job_without_any_backup_counts_from_when_it_was_configured(
        henv: HealthEnv) -> None:
    henv.job(extra='[thresholds]\nmax_backup_age = "26h"')
    assert henv.by_key(await henv.evaluate())["shop/backup_age"].severity == OK
    henv.clock.advance(hours=26, minutes=1)
    age = henv.by_key(await henv.evaluate())["shop/backup_age"]
    assert age.severity == CRITICAL
    assert age.reason.startswith("no complete backup yet (job configured since 2026-11-23")


async def test_a_target_that_lags_behind_gets_its_own_age(henv: HealthEnv) -> None:
    (henv.conf / "kbackupd.toml").write_text((henv.conf / "kbackupd.toml").read_text()
                                             + f'\n[storage.offsite]\ntype = "local"\n'
                                               f'path = "{henv.base}/offsite"\n')
    henv.job(targets='["local", "offsite"]', extra='[thresholds]\nmax_backup_age = "26h"')
    henv.backup("shop", T0 - timedelta(hours=30),
                targets={"local": "complete", "offsite": "complete"})
    partial = henv.backup("shop", T0 - timedelta(hours=2), status="partial",
                          targets={"local": "complete", "offsite": "failed: connection refused"})
    results = henv.by_key(await henv.evaluate())
    assert results["shop/backup_age"].severity == OK
    assert results["shop/backup_age/offsite"].severity == CRITICAL
    assert results["shop/backup_age/offsite"].reason == (
        "last good backup on target offsite is 30h old (limit 26h);"
        f" newest backup {partial} failed there: connection refused")
    assert "shop/backup_age/local" not in results  # same as the job: said once


async def test_failure_rate_over_the_window_with_a_minimum_of_runs(henv: HealthEnv) -> None:
    henv.job()
    for day in range(1, 4):
        henv.backup("shop", T0 - timedelta(days=day))
    henv.run("shop", T0 - timedelta(hours=5), "failed", "pg_dump: connection refused")
    henv.run("shop", T0 - timedelta(days=8), "failed", "too old to count")
    henv.run("shop", T0 - timedelta(hours=4), "failed", "aborted: daemon shutting down")
    rate = henv.by_key(await henv.evaluate())["shop/failure_rate"]
    assert rate.severity == OK, rate  # 1 of 4: fewer runs than failure_min_runs (5)
    henv.backup("shop", T0 - timedelta(hours=1))
    rate = henv.by_key(await henv.evaluate())["shop/failure_rate"]
    assert rate.severity == WARNING
    assert rate.reason == "1 of 5 backup runs failed in the last 7d (20%, limit 10%)"
    assert any("pg_dump: connection refused" in line for line in rate.details)
    for minutes in (30, 20, 10):
        henv.run("shop", T0 - timedelta(minutes=minutes), "failed", "disk full")
    assert henv.by_key(await henv.evaluate())["shop/failure_rate"].severity == CRITICAL


async def test_max_duration_fires_while_the_run_is_still_going(henv: HealthEnv) -> None:
    henv.job(extra='[thresholds]\nmax_duration = "1h"')
    henv.backup("shop", T0 - timedelta(days=1), took=timedelta(minutes=20))
    assert henv.by_key(await henv.evaluate())["shop/duration"].severity == OK
    henv.active = [RunningRun("20261123T100000Z-abcdef", "shop", "backup",
                              T0 - timedelta(hours=2, minutes=10))]
    duration = henv.by_key(await henv.evaluate())["shop/duration"]
    assert duration.severity == WARNING
    assert duration.reason == \
        "backup 20261123T100000Z-abcdef has been running for 2h10m (limit 1h)"
    henv.active = []
    henv.backup("shop", T0, took=timedelta(minutes=90))
    duration = henv.by_key(await henv.evaluate())["shop/duration"]
    assert duration.severity == WARNING and "took 1h30m (limit 1h)" in duration.reason


async def test_a_component_far_below_its_usual_size(henv: HealthEnv) -> None:
    henv.job()
    for day in range(5, 0, -1):
        henv.backup("shop", T0 - timedelta(days=day),
                    sizes={"shop": 10 * MiB + day * 1000, "pdfs": 40 * MiB})
    henv.backup("shop", T0, sizes={"shop": int(1.2 * MiB), "pdfs": 40 * MiB})
    results = henv.by_key(await henv.evaluate())
    assert results["shop/size_ratio/pdfs"].severity == OK
    shop = results["shop/size_ratio/shop"]
    assert shop.severity == CRITICAL
    assert shop.reason.startswith("database component 'shop' is 12% of its usual size (1.2 MiB")
    assert "median of the last 5: 10.0 MiB" in shop.reason
    henv.backup("shop", T0 + timedelta(hours=1), sizes={"shop": 4 * MiB, "pdfs": 40 * MiB})
    assert henv.by_key(await henv.evaluate())["shop/size_ratio/shop"].severity == WARNING


async def test_missed_schedule_after_the_grace_time(henv: HealthEnv) -> None:
    henv.job(schedules='[ { cron = "0 2 * * *", tag = "daily" } ]')
    henv.clock.current = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    await henv.evaluate()  # the schedule is known from now on
    due = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    henv.clock.current = due + timedelta(minutes=9)
    assert henv.by_key(await henv.evaluate())["shop/missed_schedule/daily"].severity == OK
    henv.clock.current = due + timedelta(minutes=11)
    missed = henv.by_key(await henv.evaluate())["shop/missed_schedule/daily"]
    assert missed.severity == WARNING
    assert missed.reason == ("scheduled run at 2026-11-23 02:00 UTC (daily) did not start"
                             " (11m late, grace 10m)")
    # A run that was still going at 02:00 took the trigger (coalesced): not missed.
    henv.run("shop", due - timedelta(minutes=30), took=timedelta(minutes=40))
    assert henv.by_key(await henv.evaluate())["shop/missed_schedule/daily"].severity == OK


async def test_a_failed_verification_is_critical_until_one_passes(henv: HealthEnv) -> None:
    henv.job()
    backup_id = henv.backup("shop", T0 - timedelta(hours=1))
    henv.db.add_verification("v1", backup_id, "shop", "restore-test", T0, False,
                             "table public.invoices: 2500 rows in manifest, 2000 restored", {})
    result = henv.by_key(await henv.evaluate())["shop/verification"]
    assert result.severity == CRITICAL
    assert result.reason == (f"backup {backup_id} is corrupt: restore-test verification failed:"
                             " table public.invoices: 2500 rows in manifest, 2000 restored")
    henv.db.add_verification("v2", backup_id, "shop", "checksum", T0, True, None, {})
    assert henv.by_key(await henv.evaluate())["shop/verification"].severity == OK


def test_unreachable_storage_and_failing_channel(tmp_path: Path) -> None:
    henv = HealthEnv(tmp_path, T0)
    henv.daemon_toml("""
[alerts.mail]
type = "webhook"
url = "http://127.0.0.1:9/hook"
""")
    config = load_config(henv.conf)
    facts = Facts(now=T0, storage={"local": "connection refused"},
                  channels={"mail": ChannelState("mail", 2, T0 - timedelta(hours=1),
                                                 "SMTP 535 5.7.8 bad credentials")})
    results = {r.key: r for r in evaluate_daemon(config, facts)}
    assert results["daemon/storage/local"].severity == CRITICAL
    assert results["daemon/storage/local"].reason == \
        "storage target local unreachable: connection refused"
    channel = results["daemon/channel/mail"]
    assert channel.severity == WARNING
    assert channel.reason == ("alert channel mail is failing since 2026-11-23 11:00 UTC"
                              " (2 failed sends): SMTP 535 5.7.8 bad credentials")
    assert channel.next_step == "kbackupctl alerts test mail"


def test_disk_forecast_from_the_growth_of_the_last_days() -> None:
    limits = ThresholdsConfig()
    gib = 1024**3
    samples = [(T0 - timedelta(days=d), (12 + 4 * d) * gib) for d in range(6, 0, -1)]
    disk = DiskStat("local", "/var/backups/kbackup", ["target local"], free=12 * gib,
                    total=100 * gib, samples=samples)
    free, forecast = check_disk(disk, limits, T0)
    assert free.severity == OK
    assert forecast.severity == WARNING
    assert forecast.reason.startswith("at the current growth, the disk of target local fills"
                                      " in 3 days")
    steady = DiskStat("local", "/x", ["target local"], free=12 * gib, total=100 * gib,
                      samples=[(T0 - timedelta(days=d), 12 * gib) for d in range(3)])
    assert check_disk(steady, limits, T0)[1].severity == OK


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the disk check needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="kbdisk"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
                              str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


async def test_disk_check_on_a_real_small_filesystem(tmp_path: Path, small_fs: Path) -> None:
    henv = HealthEnv(tmp_path, T0)
    henv.store_dir = small_fs / "backups"
    henv.daemon_toml('[thresholds]\nmin_free_disk = "10%"\n')
    henv.job()
    try:
        config = load_config(henv.conf)
        disks = {d.key: d for d in stat_disks(disk_roles(config))}
        assert disks["local"].total == 16 * MiB
        assert disks["local"].roles == ["target local"]
        results = henv.by_key(await henv.evaluate())
        assert results["daemon/disk_free/local"].severity == OK
        (small_fs / "filler").write_bytes(b"\0" * (15 * MiB))
        results = henv.by_key(await henv.evaluate())
        free = results["daemon/disk_free/local"]
        assert free.severity == CRITICAL
        assert free.reason.startswith(f"free space on {small_fs}/backups (target local) is")
        assert free.reason.endswith("(limit 10%)")
        assert results["daemon/disk_free/state_dir"].severity == OK  # another filesystem
        # A size limit works the same way.
        (henv.conf / "kbackupd.toml").write_text((henv.conf / "kbackupd.toml").read_text()
                                                 .replace('"10%"', '"512KiB"'))
        henv.monitor.reconfigure(load_config(henv.conf), henv.monitor.storages)
        assert henv.by_key(await henv.evaluate())["daemon/disk_free/local"].severity == OK
    finally:
        await henv.close()


def test_threshold_and_channel_config_errors_name_file_and_field(tmp_path: Path) -> None:
    henv = HealthEnv(tmp_path, T0)
    henv.daemon_toml("""
[thresholds]
min_free_disk = "110%"
max_failure_rate = 2

[alerts.mail]
type = "email"
smtp_host = "mail.example.com"
from = "kbackup@example.com"
to = ["not an address"]
password_file = "/nonexistent/smtp-password"

[alerts.chat]
type = "slack"
webhook_url_file = "/nonexistent/slack-url"

[alerts.pager]
type = "pager"

[metrics]
listen = "9187"
""")
    henv.job(extra='notify_on = ["failure", "always"]\n[thresholds]\nmax_backup_age = "soon"')
    with pytest.raises(ConfigError) as info:
        load_config(henv.conf)
    text = str(info.value)
    main, job = henv.conf / "kbackupd.toml", henv.conf / "jobs.d" / "shop.toml"
    assert f"{main}: thresholds.min_free_disk: '110%' is not a percentage" in text
    assert f"{main}: thresholds.max_failure_rate:" in text
    assert f"{main}: alerts.mail.to.0: expected a mail address" in text
    assert f"{main}: alerts.pager:" in text
    assert f"{main}: metrics.listen: expected HOST:PORT" in text
    assert f"{job}: notify_on.1:" in text
    assert f"{job}: thresholds.max_backup_age: 'soon' is not a duration" in text
    (henv.conf / "kbackupd.toml").write_text(f"""
[daemon]
state_dir = "{henv.state}"
[alerts.chat]
type = "slack"
webhook_url_file = "/nonexistent/slack-url"
""")
    (henv.conf / "jobs.d" / "shop.toml").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(henv.conf)
    assert str(info.value) == (f"{main}: alerts.chat.webhook_url_file: /nonexistent/slack-url"
                               " does not exist or is not a file")
    (henv.conf / "kbackupd.toml").write_text(f"""
[daemon]
state_dir = "{henv.state}"
[alerts.mail]
type = "email"
smtp_host = "mail.example.com"
from = "kbackup@example.com"
to = ["oncall@example.com"]
password_file = "{main}"
""")
    with pytest.raises(ConfigError) as info:
        load_config(henv.conf)
    assert str(info.value) == \
        f"{main}: alerts.mail: set both username and password_file, or neither"


async def test_prometheus_metrics_parse(henv: HealthEnv) -> None:
    henv.job(extra='[thresholds]\nmax_backup_age = "26h"')
    henv.backup("shop", T0 - timedelta(hours=31), took=timedelta(minutes=7))
    henv.run("shop", T0 - timedelta(hours=5), "failed", 'quote " and \\ backslash\nnewline')
    await henv.evaluate()
    text = henv.monitor.metrics_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    success = (T0 - timedelta(hours=31)).timestamp()
    assert samples[("kbackup_last_success_timestamp_seconds", (("job", "shop"),))] == success
    assert samples[("kbackup_last_duration_seconds", (("job", "shop"),))] == 300
    assert samples[("kbackup_last_run_success", (("job", "shop"),))] == 0
    assert samples[("kbackup_last_size_bytes", (("component", "shop"), ("job", "shop"),
                                                ("kind", "postgres")))] == 10 * MiB // 3
    assert samples[("kbackup_runs_total", (("job", "shop"), ("kind", "backup"),
                                           ("result", "failed")))] == 1
    assert samples[("kbackup_runs_total", (("job", "shop"), ("kind", "backup"),
                                           ("result", "complete")))] == 1
    assert families["kbackup_runs"].type == "counter"
    assert samples[("kbackup_alerts_firing", (("severity", "critical"),))] == 1
    assert samples[("kbackup_check_status", (("check", "backup_age"), ("job", "shop"),
                                             ("target", "")))] == 2
    assert samples[("kbackup_health_status", (("job", "shop"),))] == 2
    # The failed run since the last good backup: a warning of its own.
    assert samples[("kbackup_check_status", (("check", "last_run"), ("job", "shop"),
                                             ("target", "")))] == 1
    assert samples[("kbackup_alerts_firing", (("severity", "warning"),))] == 1
    free = [v for (name, _labels), v in samples.items() if name == "kbackup_disk_free_bytes"]
    assert free and all(v > 0 for v in free)


async def test_storage_probe_reports_an_unusable_local_target(henv: HealthEnv) -> None:
    henv.job()
    henv.store_dir.parent.mkdir(parents=True, exist_ok=True)
    henv.store_dir.write_text("a file where the backups should go")
    await henv.monitor.probe_storage()
    storage = henv.by_key(await henv.evaluate())["daemon/storage/local"]
    assert storage.severity == CRITICAL
    assert storage.reason == \
        f"storage target local unreachable: {henv.store_dir} is not a directory"
    assert "daemon/storage/local" in {r.key for r in henv.monitor.results
                                      if r.job is None}
    view = henv.monitor.job_health("shop")
    assert view["status"] == "critical"
    assert [p["key"] for p in view["problems"]] == ["daemon/storage/local"]


# ---------------------------------------------------------------------- a failing job is never OK


async def test_a_failed_run_warns_and_failures_in_a_row_are_critical(henv: HealthEnv) -> None:
    henv.job(schedules='[ { cron = "0 2 * * *", tag = "daily" } ]')
    henv.backup("shop", T0 - timedelta(days=1))
    assert henv.by_key(await henv.evaluate())["shop/last_run"].severity == OK
    first = henv.run("shop", T0 - timedelta(hours=3), "failed",
                     'pg_dump: error: connection to server at "db1" failed: Connection refused')
    last_run = henv.by_key(await henv.evaluate())["shop/last_run"]
    assert last_run.severity == WARNING
    assert last_run.reason == (f'backup run {first} failed: pg_dump: error: connection to server'
                               ' at "db1" failed: Connection refused')
    assert last_run.next_step == "kbackupctl runs shop"
    # A run a daemon stop aborted is no failure, and does not break the streak either.
    henv.run("shop", T0 - timedelta(hours=2), "failed", "aborted: daemon shutting down")
    assert henv.by_key(await henv.evaluate())["shop/last_run"].severity == WARNING
    second = henv.run("shop", T0 - timedelta(hours=1), "failed", "timed out after 6h (job"
                      " timeout)\nsecond line")
    last_run = henv.by_key(await henv.evaluate())["shop/last_run"]
    assert last_run.severity == CRITICAL
    assert last_run.reason == (f"2 backup runs failed in a row (limit 2), the last, {second}:"
                               " timed out after 6h (job timeout)")
    assert henv.monitor.job_health("shop")["status"] == "critical"
    # The threshold is per job like the others.
    henv.job(schedules='[ { cron = "0 2 * * *", tag = "daily" } ]',
             extra="[thresholds]\nmax_consecutive_failures = 3")
    henv.monitor.reconfigure(load_config(henv.conf), henv.monitor.storages)
    assert henv.by_key(await henv.evaluate())["shop/last_run"].severity == WARNING
    # The next good run resolves it.
    good = henv.backup("shop", T0 + timedelta(minutes=10))
    henv.clock.advance(minutes=11)
    last_run = henv.by_key(await henv.evaluate())["shop/last_run"]
    assert (last_run.severity, last_run.reason) == (OK, f"last backup run {good} complete")
    resolved = henv.monitor.manager.listing()["resolved"]
    assert [a["key"] for a in resolved] == ["shop/last_run"]


async def test_a_job_that_never_succeeded_is_critical_at_once(henv: HealthEnv) -> None:
    henv.job(schedules='[ { cron = "0 2 * * *", tag = "daily" } ]')
    results = henv.by_key(await henv.evaluate())
    assert results["shop/last_run"].reason == "no finished backup run yet"
    assert results["shop/last_run"].severity == results["shop/backup_age"].severity == OK
    error = 'database shop: connection failed: FATAL:  database "shop" does not exist'
    failed = henv.run("shop", T0 - timedelta(minutes=5), "failed", error)
    results = henv.by_key(await henv.evaluate())
    last_run = results["shop/last_run"]
    assert last_run.severity == CRITICAL
    assert last_run.reason == f"no complete backup yet: backup run {failed} failed: {error}"
    assert any(error in line for line in last_run.details)
    age = results["shop/backup_age"]
    assert age.severity == OK  # last_run owns "never succeeded": one CRITICAL, not two
    assert age.reason.startswith(f"no complete backup yet; backup run {failed} failed (the"
                                 " last_run check reports it) (job configured since 2026-11-23")
    assert results["shop/failure_rate"].severity == OK  # one run: below failure_min_runs
    assert [k for k, r in results.items() if r.severity != OK] == ["shop/last_run"]
    assert henv.monitor.job_health("shop")["status"] == "critical"
    # Still one CRITICAL once the age limit has passed too (days later; the missed
    # schedules warn on their own).
    henv.clock.current = T0 + timedelta(days=3)
    results = henv.by_key(await henv.evaluate())
    assert [k for k, r in results.items() if r.severity == CRITICAL] == ["shop/last_run"]
    firing = henv.monitor.manager.listing()["firing"]
    assert [a["key"] for a in firing if a["severity"] == CRITICAL] == ["shop/last_run"]


async def test_a_partial_backup_warns_naming_the_target_that_has_no_copy(
        henv: HealthEnv) -> None:
    (henv.conf / "kbackupd.toml").write_text((henv.conf / "kbackupd.toml").read_text()
                                             + f'\n[storage.offsite]\ntype = "local"\n'
                                               f'path = "{henv.base}/offsite"\n')
    henv.job(targets='["local", "offsite"]', extra='[thresholds]\nmax_backup_age = "26h"')
    partial = henv.backup("shop", T0 - timedelta(minutes=5), status="partial",
                          targets={"local": "complete",
                                   "offsite": "failed: storage offsite: HTTP 507"})
    results = henv.by_key(await henv.evaluate())
    assert results["shop/backup_age"].severity == OK
    last_run = results["shop/last_run"]
    assert last_run.severity == WARNING
    assert last_run.reason == (f"backup {partial} is partial, not on every target (target"
                               " offsite failed: storage offsite: HTTP 507)")
    offsite = results["shop/backup_age/offsite"]
    assert offsite.severity == WARNING  # at once, not only after the age limit
    assert offsite.reason == ("target offsite holds no complete backup yet (limit 26h);"
                              f" newest backup {partial} failed there: storage offsite: HTTP 507")
    henv.clock.advance(hours=26, minutes=1)
    assert henv.by_key(await henv.evaluate())["shop/backup_age/offsite"].severity == CRITICAL
    henv.backup("shop", henv.clock.current,
                targets={"local": "complete", "offsite": "complete"})
    results = henv.by_key(await henv.evaluate())
    assert results["shop/last_run"].severity == OK
    assert "shop/backup_age/offsite" not in results  # the same as the job's again
    assert henv.monitor.job_health("shop")["status"] == "ok"


async def test_a_job_whose_backups_were_never_verified(henv: HealthEnv) -> None:
    henv.job(extra='[verify]\nafter_backup = "none"\nschedule = "0 4 * * 0"')  # Sundays
    backup_id = henv.backup("shop", T0 - timedelta(days=1), verified=False)
    check = henv.by_key(await henv.evaluate())["shop/verification"]
    assert check.severity == OK
    assert check.reason.startswith(f"no backup of this job verified yet, the oldest ({backup_id})"
                                   " is 24h old")
    henv.clock.advance(days=8)  # a week between verifications + 25% and the grace are over
    check = henv.by_key(await henv.evaluate())["shop/verification"]
    assert check.severity == WARNING
    assert check.reason == (f"never verified: no backup of this job has been verified, the"
                            f" oldest ({backup_id}) is 9d old (verification: restore-test on"
                            " schedule '0 4 * * 0', grace 8d18h)")
    assert check.next_step == f"kbackupctl verify {backup_id}; kbackupctl runs shop"
    henv.db.add_verification("v1", backup_id, "shop", "restore-test", henv.clock.current, True,
                             None, {})
    assert henv.by_key(await henv.evaluate())["shop/verification"].severity == OK
    # Verified after every backup (the default): a backup older than the job's timeout and
    # still unverified means the verification did not happen.
    henv.job(name="docs")
    henv.monitor.reconfigure(load_config(henv.conf), henv.monitor.storages)
    henv.backup("docs", henv.clock.current - timedelta(hours=7), verified=False)
    check = henv.by_key(await henv.evaluate())["docs/verification"]
    assert check.severity == WARNING and "(verification: checksum after each backup, grace" \
        " 6h10m)" in check.reason
    # A job that verifies nothing has no such check.
    henv.job(name="docs", extra='[verify]\nafter_backup = "none"')
    henv.monitor.reconfigure(load_config(henv.conf), henv.monitor.storages)
    assert "docs/verification" not in henv.by_key(await henv.evaluate())
