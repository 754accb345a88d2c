"""The report's numbers from a catalog (counts in the window, the newest size and its trend,
sizes per day, storage per target), its text and PNG forms, and when digests are due: at the
cron's time in the channel's timezone, once, not again after a restart, one catch-up after
downtime."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kbackup.alerts.digest import Digests
from kbackup.alerts.store import AlertStore
from kbackup.catalog import Catalog
from kbackup.config import Config, load_config
from kbackup.report.build import build_report
from kbackup.report.chart import BAR_COLOUR, HEIGHT, bar_chart
from kbackup.report.text import render_text, sparkline, summary
from kbackup.scheduler import Clock
from kbackup.times import iso

pytestmark = pytest.mark.unit
NOW = datetime.now(UTC).replace(microsecond=0)
MONDAY_8 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # a Monday


class ManualClock(Clock):
    def __init__(self, now: datetime):
        self.current = now

    def now(self) -> datetime:
        return self.current


def config(tmp_path: Path, channel_extra: str = "") -> Config:
    conf = tmp_path / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(f"""
[daemon]
socket = "{tmp_path}/sock"
state_dir = "{tmp_path}/state"

[storage.local]
type = "local"
path = "{tmp_path}/store"

[storage.offsite]
type = "local"
path = "{tmp_path}/offsite"

[alerts.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
{channel_extra}
""")
    for job in ("crm", "shop"):
        (conf / "jobs.d" / f"{job}.toml").write_text(
            f'targets = ["local"]\n[[files]]\nname = "f"\npath = "{tmp_path}"\n')
    return load_config(conf)


def backup(catalog: Catalog, job: str, hours_ago: float, size: int, status: str = "complete",
           targets: dict[str, str] | None = None, run: str | None = "complete",
           *, now: datetime) -> str:
    started = now - timedelta(hours=hours_ago)
    backup_id = f"{job}-{hours_ago}"
    if run is not None:
        catalog.add_run(backup_id, job, "backup", "manual", started)
        catalog.db.execute("UPDATE runs SET status=? WHERE id=?", (run, backup_id))
    catalog.upsert_backup(backup_id, job, status, "manual", iso(started) or "",
                          iso(started + timedelta(minutes=1)), size,
                          targets or {"local": "complete"}, None)
    return backup_id


def test_report_counts_the_window_and_compares_sizes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    catalog = Catalog(cfg.daemon.state_dir)
    now = datetime.now(UTC).replace(microsecond=0)  # the verifications get the real time
    backup(catalog, "shop", 24 * 9, 1000, now=now)  # before the window: the trend's base
    backup(catalog, "shop", 24 * 5 + 1, 1100, now=now,
           targets={"local": "complete", "offsite": "complete"})
    backup(catalog, "shop", 24 * 3, 0, status="failed", run="failed", now=now)
    catalog.add_run("shop-failed-early", "shop", "backup", "manual", now - timedelta(days=2))
    catalog.db.execute("UPDATE runs SET status='failed' WHERE id='shop-failed-early'")
    backup(catalog, "shop", 30, 1150, status="partial", run="failed", now=now)
    newest = backup(catalog, "shop", 2, 1250, now=now)
    catalog.add_run("stopped", "shop", "backup", "manual", now - timedelta(hours=1))
    catalog.finish_run("stopped", "failed", "aborted: daemon shutting down")
    catalog.add_verification("v1", newest, "shop", "restore-test", now, True, None, {},
                             restore_seconds=42.5)
    catalog.add_verification("v2", newest, "shop", "checksum", now, False, "bad", {})
    backup(catalog, "crm", 3, 500, now=now)

    until = now + timedelta(minutes=1)
    report = build_report(cfg, catalog, [], until - timedelta(days=7), until).as_dict()
    crm, shop = report["jobs"]
    assert (shop["made"], shop["failed"], shop["partial"]) == (2, 2, 1)  # no abort counted
    assert (shop["verified_ok"], shop["verified_failed"]) == (1, 1)
    assert shop["size_bytes"] == 1250 and shop["trend_percent"] == 25.0  # against 1000
    assert shop["restore_seconds"] == 42.5
    assert shop["last_good_age_seconds"] == 7200  # finished a minute after its start
    assert len(shop["sizes"]) == 7 and shop["sizes"][-1] == 1250
    assert shop["sizes"][1] == 1100 and shop["sizes"][0] is None
    assert crm["trend_percent"] is None and crm["made"] == 1  # nothing to compare with
    assert report["targets"] == [
        {"target": "local", "type": "local", "backups": 5, "stored_bytes": 5000},
        {"target": "offsite", "type": "local", "backups": 1, "stored_bytes": 1100}]
    text = render_text(report)
    row = next(line for line in text.splitlines() if line.startswith("shop "))
    assert row.split()[:4] == ["shop", "2", "2", "1"]
    assert "1.2 KiB" in row and "+25%" in row and "42s" in row
    assert "No open alerts." in text
    assert "2 jobs, 3 backups, 2 failed, 0 open alerts" in summary(report)


def test_open_alerts_are_in_the_report(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    catalog = Catalog(cfg.daemon.state_dir)
    store = AlertStore(catalog)
    store.open_alert("shop/backup_age", "shop", "backup_age", None, "critical",
                     "last good backup is 31h old (limit 26h)", "", [], NOW)
    report = build_report(cfg, catalog, store.firing(), NOW - timedelta(days=1),
                          NOW).as_dict()
    assert report["alerts"][0]["key"] == "shop/backup_age"
    assert "CRITICAL shop/backup_age: last good backup is 31h old" in render_text(report)


def test_sparkline_scales_between_the_smallest_and_largest() -> None:
    assert sparkline([1, None, 8, 4]) == "▁ █▄"
    assert sparkline([5, 5]) == "▁▁"
    assert sparkline([None, None]) == ""


def test_bar_chart_is_a_png_with_one_bar_per_point() -> None:
    data = bar_chart([10, None, 5])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind = struct.unpack(">I4s", data[8:16])
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (kind, width, height, depth, colour) == (b"IHDR", 24, HEIGHT, 8, 2)
    idat = data.index(b"IDAT")
    size = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = zlib.decompress(data[idat + 4:idat + 4 + size])
    rows = [raw[y * (1 + width * 3) + 1:(y + 1) * (1 + width * 3)] for y in range(height)]
    assert rows[0][0:3] == bytes(BAR_COLOUR)  # the largest bar reaches the top
    assert rows[0][16 * 3:16 * 3 + 3] != bytes(BAR_COLOUR)  # the half one does not
    assert rows[-1][16 * 3:16 * 3 + 3] == bytes(BAR_COLOUR)


async def test_digest_is_due_at_its_time_once_and_not_again_after_a_restart(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, 'digest = "0 8 * * 1"')
    catalog = Catalog(cfg.daemon.state_dir)
    clock = ManualClock(MONDAY_8 - timedelta(days=1))  # first seen on a Sunday
    digests = Digests(cfg, catalog, AlertStore(catalog), lambda: {}, clock)
    assert digests.due() == []
    clock.current = MONDAY_8 + timedelta(seconds=20)
    [(entry, fire, since)] = digests.due()
    assert (fire, since) == (MONDAY_8, MONDAY_8 - timedelta(days=7))
    assert digests.due() == []  # moved on: next Monday
    assert entry.next_at == MONDAY_8 + timedelta(days=7)
    await digests._fire(entry, fire, since)  # delivered (here: no such channel) and recorded
    restarted = Digests(cfg, catalog, AlertStore(catalog), lambda: {}, clock)
    assert restarted.due() == []


def test_a_missed_digest_is_sent_once_at_start(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'digest = "0 8 * * 1"')
    catalog = Catalog(cfg.daemon.state_dir)
    clock = ManualClock(MONDAY_8 - timedelta(hours=1))
    Digests(cfg, catalog, AlertStore(catalog), lambda: {}, clock)  # seen, then down 3 weeks
    clock.current = MONDAY_8 + timedelta(days=21, hours=3)
    digests = Digests(cfg, catalog, AlertStore(catalog), lambda: {}, clock)
    [(_entry, fire, since)] = digests.due()
    assert fire == MONDAY_8 + timedelta(days=21)  # the most recent only
    assert since == MONDAY_8 + timedelta(days=14)
    assert digests.due() == []


def test_digest_time_is_in_its_timezone(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'digest = "0 8 * * 1"\ndigest_timezone = "Europe/Berlin"')
    catalog = Catalog(cfg.daemon.state_dir)
    clock = ManualClock(MONDAY_8 - timedelta(days=1))
    digests = Digests(cfg, catalog, AlertStore(catalog), lambda: {}, clock)
    assert digests.entries[0].next_at == MONDAY_8 - timedelta(hours=1)  # 08:00 CET


def test_digest_settings_are_checked(tmp_path: Path) -> None:
    from kbackup.errors import ConfigError

    with pytest.raises(ConfigError, match="digest.*not a cron expression"):
        config(tmp_path, 'digest = "every monday"')
    with pytest.raises(ConfigError, match="digest_timezone.*unknown timezone"):
        config(tmp_path / "b", 'digest = "0 8 * * 1"\ndigest_timezone = "Mars/Base"')


def test_html_escapes_what_comes_from_config_and_alerts() -> None:
    from kbackup.report.html import render_html

    job = {"job": "crm<b>", "made": 0, "partial": 0, "failed": 0, "verified_ok": 0,
           "verified_failed": 0, "size_bytes": None, "trend_percent": None, "sizes": [None],
           "last_good_at": None, "last_good_age_seconds": None, "restore_seconds": None,
           "restore_tested_at": None}
    report = {"host": "vm", "since": iso(NOW - timedelta(days=1)), "until": iso(NOW),
              "point_seconds": 86400.0, "jobs": [job], "targets": [],
              "alerts": [{"key": "crm/x", "job": "crm", "severity": "warning",
                          "reason": "<script>alert(1)</script>", "since": iso(NOW)}]}
    html, images = render_html(report)
    assert "crm&lt;b&gt;" in html and "<script>" not in html
    assert list(images) == ["sizes-0@kbackup"] and 'src="cid:sizes-0@kbackup"' in html
    assert "never" in render_text(report)
