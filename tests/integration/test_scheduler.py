"""Cron timing in the job's timezone (DST days included) and catch-up after downtime."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alert_servers import FakeClock
from kbackup.catalog import Catalog
from kbackup.config import load_config
from kbackup.scheduler import Scheduler, next_fire

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def fires_between(cron: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    fires = []
    when = start
    while True:
        when = next_fire(cron, tz, when)
        if when >= end:
            return fires
        fires.append(when)


@pytest.mark.parametrize(
    ("tz", "cron", "start"),
    [
        # Spring forward: 01:30 does not exist in London on 2026-03-29.
        (LONDON, "30 1 * * *", datetime(2026, 3, 26, 12, tzinfo=UTC)),
        # Fall back: 01:30 happens twice in London on 2026-10-25.
        (LONDON, "30 1 * * *", datetime(2026, 10, 22, 12, tzinfo=UTC)),
        (LONDON, "0 2 * * *", datetime(2026, 3, 26, 12, tzinfo=UTC)),
        (LONDON, "0 1 * * *", datetime(2026, 10, 22, 12, tzinfo=UTC)),
        (NEW_YORK, "30 2 * * *", datetime(2026, 3, 6, 12, tzinfo=UTC)),
        (NEW_YORK, "30 1 * * *", datetime(2026, 10, 30, 12, tzinfo=UTC)),
    ],
)
def test_daily_job_runs_exactly_once_per_day_across_dst(tz: ZoneInfo, cron: str,
                                                        start: datetime) -> None:
    fires = fires_between(cron, tz, start, start + timedelta(days=7))
    local_days = [f.astimezone(tz).date() for f in fires]
    assert len(fires) == 7
    assert len(set(local_days)) == 7
    assert fires == sorted(fires)


def test_spring_forward_gap_runs_just_after_the_gap() -> None:
    fires = fires_between("30 1 * * *", LONDON, datetime(2026, 3, 28, 12, tzinfo=UTC),
                          datetime(2026, 3, 30, 12, tzinfo=UTC))
    assert fires[0] == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 BST, once
    assert fires[0].astimezone(LONDON).date() == date(2026, 3, 29)


def test_fall_back_runs_at_first_occurrence_only() -> None:
    fires = fires_between("30 1 * * *", LONDON, datetime(2026, 10, 24, 12, tzinfo=UTC),
                          datetime(2026, 10, 26, 0, tzinfo=UTC))
    assert fires == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]  # 01:30 BST


def test_hourly_job_never_fires_twice_at_the_same_instant() -> None:
    start = datetime(2026, 3, 28, 20, tzinfo=UTC)
    fires = fires_between("0 * * * *", LONDON, start, start + timedelta(hours=12))
    # Start excluded: 21:00 .. 07:00 UTC, one per real hour, the skipped local hour included.
    assert len(fires) == len(set(fires)) == 11
    assert all(b - a == timedelta(hours=1) for a, b in zip(fires, fires[1:], strict=False))


def test_utc_default_and_weekday_fields() -> None:
    after = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
    assert next_fire("30 3 * * 0", ZoneInfo("UTC"), after) == datetime(2026, 11, 29, 3, 30,
                                                                        tzinfo=UTC)


def write_config(base: Path, cron: str, timezone: str = "UTC") -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base / "state"}"\n'
        f'[storage.local]\ntype = "local"\npath = "{base / "store"}"\n')
    (conf / "jobs.d" / "shop.toml").write_text(
        f'schedules = [{{ cron = "{cron}", tag = "daily" }}]\ntimezone = "{timezone}"\n'
        f'targets = ["local"]\n[[files]]\nname = "pdfs"\npath = "{base}"\n')
    return conf


def test_scheduler_fires_on_time_and_only_once(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "0 2 * * *", "Europe/London"))
    catalog = Catalog(tmp_path / "state")
    clock = FakeClock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    launched: list[tuple[str, str, datetime]] = []
    scheduler = Scheduler(catalog,
                          lambda job, trig, *_: launched.append((job, trig, clock.now())),
                          clock)
    scheduler.configure(config)
    assert scheduler.next_run("shop") == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 GMT
    # Walk minute by minute through the DST weekend.
    while clock.current < datetime(2026, 3, 31, 12, 0, tzinfo=UTC):
        clock.current += timedelta(minutes=1)
        scheduler.tick()
    assert [(j, t) for j, t, _ in launched] == [("shop", "scheduled")] * 3
    assert [w.astimezone(LONDON).date() for _, _, w in launched] == [
        date(2026, 3, 29), date(2026, 3, 30), date(2026, 3, 31)]
    # 02:00 does not exist on the 29th: it ran right after the gap, at 02:00 GMT = 03:00 BST.
    assert launched[0][2] == datetime(2026, 3, 29, 2, 0, tzinfo=UTC) - timedelta(hours=1)


def test_catch_up_once_after_downtime_and_not_for_new_jobs(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "0 2 * * *"))
    catalog = Catalog(tmp_path / "state")
    clock = FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    launched: list[tuple[str, str]] = []
    first = Scheduler(catalog, lambda job, trig, *_: launched.append((job, trig)), clock)
    first.configure(config)
    first.tick()
    assert launched == []  # a new job waits for its first scheduled time

    # The daemon is down for three days, over three 02:00 runs.
    clock.current = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    second = Scheduler(catalog, lambda job, trig, *_: launched.append((job, trig)), clock)
    second.configure(config)
    second.tick()
    second.tick()
    assert launched == [("shop", "catch-up")]
    assert second.next_run("shop") == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)

    # Restarting again the same day does not catch up twice.
    third = Scheduler(catalog, lambda job, trig, *_: launched.append((job, trig)), clock)
    third.configure(config)
    third.tick()
    assert launched == [("shop", "catch-up")]


async def test_scheduler_loop_launches_due_jobs(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "* * * * *"))
    catalog = Catalog(tmp_path / "state")
    clock = FakeClock(datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC))
    launched: list[str] = []
    scheduler = Scheduler(catalog, lambda job, trig, *_: launched.append(job), clock)
    scheduler.configure(config)
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.05)
    assert launched == []
    clock.current = datetime(2026, 11, 23, 9, 1, 1, tzinfo=UTC)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if launched:
            break
    task.cancel()
    assert launched == ["shop"]


def test_verify_schedule_launches_a_verification(tmp_path: Path) -> None:
    conf = write_config(tmp_path, "0 2 * * *")
    job = conf / "jobs.d" / "shop.toml"
    job.write_text(job.read_text() + '[verify]\nschedule = "0 4 * * 0"\n')
    catalog = Catalog(tmp_path / "state")
    clock = FakeClock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))  # a Saturday
    launched: list[tuple[str, str, datetime]] = []
    scheduler = Scheduler(catalog, lambda job, trig, kind, _tag: launched.append((job, kind,
                                                                             clock.now())), clock)
    scheduler.configure(load_config(conf))
    assert scheduler.next_run("shop", "verify") == datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
    while clock.current < datetime(2026, 11, 23, 12, 0, tzinfo=UTC):
        clock.current += timedelta(minutes=5)
        scheduler.tick()
    assert [(j, k, w.hour) for j, k, w in launched] == [
        ("shop", "backup", 2), ("shop", "verify", 4), ("shop", "backup", 2)]
