"""Retention decisions over synthetic timelines, and prune through the real daemon."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conftest import KbEnv, PgServer
from kbackup.config import RetentionConfig
from kbackup.retention import Candidate, decide

UTC_TZ = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")


def timeline(start: datetime, count: int, step: timedelta, **kw: object) -> list[Candidate]:
    return [Candidate(f"b{i:04d}", start + i * step, str(kw.get("status", "complete")),
                      str(kw.get("trigger", "scheduled"))) for i in range(count)]


def kept(decisions: list) -> list[str]:  # type: ignore[type-arg]
    return [d.backup.id for d in decisions if d.keep]


YEAR_START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
DAILY_YEAR = timeline(YEAR_START, 365, timedelta(days=1))
NOW = YEAR_START + timedelta(days=365)

CASES = [
    # (label, policy, expected number kept, ids that must be kept)
    ("keep_last", dict(keep_last=7), 7, ["b0364", "b0358"]),
    ("daily", dict(keep_daily=10), 10, ["b0364", "b0355"]),
    ("weekly", dict(keep_weekly=4), 4, ["b0364"]),
    ("monthly", dict(keep_monthly=12), 12, ["b0364", "b0030"]),  # b0030 = 31 Jan
    ("yearly", dict(keep_yearly=3), 1, ["b0364"]),  # all in 2026: one year, one backup
    ("within", dict(keep_within="14d"), 15, ["b0350"]),
    # 7 days; weeks W53/W52 fall in those days, W51 and W50 add 2; months add Jul-Nov: 5
    ("combined", dict(keep_daily=7, keep_weekly=4, keep_monthly=6), 7 + 2 + 5,
     ["b0364", "b0353", "b0346", "b0333"]),
    ("nothing kept by rules, min_keep guards", dict(keep_within="1h", min_keep=3), 3,
     ["b0364", "b0363", "b0362"]),
]


@pytest.mark.parametrize(("label", "policy", "count", "must"), CASES, ids=[c[0] for c in CASES])
def test_policies_over_a_year_of_daily_backups(label: str, policy: dict[str, object],
                                               count: int, must: list[str]) -> None:
    decisions = decide(DAILY_YEAR, RetentionConfig(**policy), UTC_TZ, NOW)  # type: ignore[arg-type]
    assert len(kept(decisions)) == count, [(d.backup.id, d.reasons) for d in decisions if d.keep]
    for backup_id in must:
        assert backup_id in kept(decisions)
    assert all(d.reasons for d in decisions if d.keep)
    assert all(not d.reasons for d in decisions if not d.keep)


def test_yearly_counts_calendar_years() -> None:
    start = datetime(2024, 6, 1, tzinfo=UTC)
    backups = timeline(start, 3 * 52, timedelta(weeks=1))
    decisions = decide(backups, RetentionConfig(keep_yearly=5), UTC_TZ, start)
    years = sorted(d.backup.started.year for d in decisions if d.keep)
    assert years == [2024, 2025, 2026, 2027][: len(years)] and len(years) == 4


def test_daily_buckets_follow_the_job_timezone_across_dst() -> None:
    # Hourly backups over the London autumn change (25-hour day on 2026-10-25).
    start = datetime(2026, 10, 23, 0, 0, tzinfo=UTC)
    backups = timeline(start, 24 * 5, timedelta(hours=1))
    decisions = decide(backups, RetentionConfig(keep_daily=5), LONDON, start)
    kept_days = [d.backup.started.astimezone(LONDON).date() for d in decisions if d.keep]
    assert len(kept_days) == len(set(kept_days)) == 5
    # The newest backup of each local day is the one kept: 23:00 local, or the newest overall.
    for decision in decisions:
        if decision.keep and decision is not decisions[0]:
            assert decision.backup.started.astimezone(LONDON).hour == 23
    hourly = decide(backups, RetentionConfig(keep_hourly=30), LONDON, start)
    assert len(kept(hourly)) == 30  # the repeated local hour 01:00 is one bucket


def test_min_keep_does_not_count_corrupt_backups() -> None:
    backups = timeline(YEAR_START, 10, timedelta(days=1))
    for candidate in backups[-3:]:
        candidate.status = "corrupt"
    decisions = decide(backups, RetentionConfig(keep_last=2, min_keep=4), UTC_TZ, NOW)
    good_kept = [d.backup.id for d in decisions if d.keep and d.backup.status == "complete"]
    assert good_kept == ["b0006", "b0005", "b0004", "b0003"]
    assert not any(d.keep for d in decisions if d.backup.status == "corrupt")


def test_newest_verified_backup_is_never_removed() -> None:
    backups = timeline(YEAR_START, 30, timedelta(days=1))
    backups[10].verified = True
    decisions = decide(backups, RetentionConfig(keep_last=3), UTC_TZ, NOW)
    assert "b0010" in kept(decisions)
    reasons = next(d.reasons for d in decisions if d.backup.id == "b0010")
    assert reasons == ["newest verified backup"]


def test_safety_backups_kept_for_keep_pre_restore_only() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    backups = timeline(now - timedelta(days=30), 30, timedelta(days=1))
    backups[-1].trigger = "pre-restore"  # 1 day old
    backups[-15].trigger = "pre-restore"  # 15 days old
    decisions = decide(backups, RetentionConfig(keep_last=2), UTC_TZ, now)
    by_id = {d.backup.id: d for d in decisions}
    assert by_id[backups[-1].id].keep
    assert not by_id[backups[-15].id].keep
    # pre-restore backups do not take a keep_last slot
    assert by_id[backups[-2].id].keep and by_id[backups[-3].id].keep


def test_prune_through_the_daemon(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None, extra="[retention]\nkeep_last = 2\n")
    kb.start()
    first = kb.run_backup()  # retention runs after every backup: never below keep_last
    ids = [first["id"]] + [kb.run_backup()["id"] for _ in range(3)]
    remaining = {b["id"]: b["status"] for b in kb.ctl_json("backups")["items"]}
    assert {i for i, s in remaining.items() if s == "complete"} == set(ids[-2:])
    assert {i for i, s in remaining.items() if s == "pruned"} == set(ids[:2])
    manifests = sorted(p.parent.name for p in kb.store.rglob("manifest.json"))
    assert manifests == sorted(ids[-2:])
    assert not (kb.store / "shop" / ids[0][:4] / ids[0][4:6] / ids[0]).exists()

    # A dry run with a stricter policy says what it would do and does nothing.
    job = kb.jobs_dir / "shop.toml"
    job.write_text(job.read_text().replace("keep_last = 2", "keep_last = 1"))
    assert kb.ctl("reload").returncode == 0
    result = kb.ctl("prune", "shop", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would remove" in result.stdout and "last 1" in result.stdout
    assert sorted(p.parent.name for p in kb.store.rglob("manifest.json")) == sorted(ids[-2:])
    report = json.loads(kb.ctl("--json", "prune", "shop").stdout)
    assert report["removed"] == [{"id": ids[-2], "target": "local"}]
    assert [p.parent.name for p in kb.store.rglob("manifest.json")] == [ids[-1]]
