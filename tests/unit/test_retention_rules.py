"""Retention decisions tests/test_retention.py and tests/test_labels.py leave out: which backup
represents a period, ISO weeks across New Year, months in the job's timezone, keep_within
measured from the newest backup, how reasons add up, partial and pre-restore backups against
the guards, min_keep = 0, input order and an empty list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kbackup.config import RetentionConfig
from kbackup.retention import Candidate, Decision, decide

pytestmark = pytest.mark.unit

UTC_TZ = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def every(step: timedelta, count: int, start: datetime = START, **kw: object) -> list[Candidate]:
    return [Candidate(f"b{i:04d}", start + i * step, str(kw.get("status", "complete")),
                      str(kw.get("trigger", "scheduled"))) for i in range(count)]


def kept(decisions: list[Decision]) -> list[str]:
    return [d.backup.id for d in decisions if d.keep]


def reasons(decisions: list[Decision]) -> dict[str, list[str]]:
    return {d.backup.id: d.reasons for d in decisions}


def test_the_newest_backup_of_each_period_represents_it() -> None:
    backups = every(timedelta(hours=6), 4 * 5)  # four a day for five days
    decisions = decide(backups, RetentionConfig(keep_daily=3, min_keep=0), UTC_TZ, START)
    assert kept(decisions) == ["b0019", "b0015", "b0011"]  # 18:00 of the three newest days
    assert reasons(decisions)["b0015"] == ["keep_daily 3 (2026-03-05)"]


def test_iso_weeks_span_new_year() -> None:
    # 28 Dec 2026 to 10 Jan 2027: 1 Jan 2027 (a Friday) belongs to week 53 of 2026.
    backups = every(timedelta(days=1), 14, start=datetime(2026, 12, 28, 3, tzinfo=UTC))
    decisions = decide(backups, RetentionConfig(keep_weekly=2, min_keep=0), UTC_TZ, START)
    by_id = reasons(decisions)
    assert kept(decisions) == ["b0013", "b0006"]
    assert by_id["b0013"] == ["keep_weekly 2 (2027-W01)"]
    assert by_id["b0006"] == ["keep_weekly 2 (2026-W53)"]  # Sunday 3 Jan 2027


def test_months_are_taken_in_the_job_timezone() -> None:
    # 31 January 23:30 UTC is already 1 February in Berlin.
    late = Candidate("late", datetime(2026, 1, 31, 23, 30, tzinfo=UTC), "complete", "scheduled")
    early = Candidate("early", datetime(2026, 1, 31, 12, 0, tzinfo=UTC), "complete", "scheduled")
    policy = RetentionConfig(keep_monthly=2, min_keep=0)
    assert reasons(decide([late, early], policy, BERLIN, START)) == {
        "late": ["keep_monthly 2 (2026-02)"], "early": ["keep_monthly 2 (2026-01)"]}
    in_utc = reasons(decide([late, early], policy, UTC_TZ, START))
    assert in_utc == {"late": ["keep_monthly 2 (2026-01)"], "early": []}


def test_keep_within_counts_back_from_the_newest_backup_not_from_now() -> None:
    backups = every(timedelta(days=1), 10)
    long_after = START + timedelta(days=400)  # backups stopped long ago
    decisions = decide(backups, RetentionConfig(keep_within="3d", min_keep=0), UTC_TZ,
                       long_after)
    assert kept(decisions) == ["b0009", "b0008", "b0007", "b0006"]  # 3 days back, inclusive
    assert reasons(decisions)["b0006"] == ["keep_within 3d"]


def test_reasons_add_up_in_rule_order() -> None:
    backups = every(timedelta(days=1), 40)
    policy = RetentionConfig(keep_last=1, keep_daily=2, keep_weekly=1, keep_monthly=1,
                             keep_yearly=1, keep_within="1d")
    newest = decide(backups, policy, UTC_TZ, START)[0]
    assert newest.backup.id == "b0039"
    assert newest.reasons == ["keep_last 1", "keep_daily 2 (2026-04-10)",
                              "keep_weekly 1 (2026-W15)", "keep_monthly 1 (2026-04)",
                              "keep_yearly 1 (2026)", "keep_within 1d"]


def test_decisions_come_newest_first_whatever_the_input_order() -> None:
    backups = every(timedelta(days=1), 6)
    shuffled = [backups[i] for i in (3, 0, 5, 1, 4, 2)]
    decisions = decide(shuffled, RetentionConfig(keep_last=2), UTC_TZ, START)
    assert [d.backup.id for d in decisions] == ["b0005", "b0004", "b0003", "b0002", "b0001",
                                                "b0000"]
    assert kept(decisions) == ["b0005", "b0004"]
    assert decide([], RetentionConfig(keep_last=2), UTC_TZ, START) == []


def test_min_keep_zero_lets_the_rules_alone_decide() -> None:
    backups = every(timedelta(days=1), 5)
    decisions = decide(backups, RetentionConfig(keep_within="1h", min_keep=0), UTC_TZ,
                       START + timedelta(days=30))
    assert kept(decisions) == ["b0004"]  # only the newest is within 1h of the newest
    decisions = decide(backups, RetentionConfig(keep_within="1h", min_keep=3), UTC_TZ,
                       START + timedelta(days=30))
    assert kept(decisions) == ["b0004", "b0003", "b0002"]
    assert reasons(decisions)["b0002"] == ["min_keep 3"]


def test_partial_backups_take_rule_slots_but_not_the_guards() -> None:
    """keep_last counts partial backups (they exist on some targets); min_keep and the
    verified guard count complete backups only."""
    backups = every(timedelta(days=1), 6)
    for candidate in backups[-2:]:
        candidate.status = "partial"
        candidate.verified = True
    decisions = decide(backups, RetentionConfig(keep_last=2, min_keep=2), UTC_TZ, START)
    by_id = reasons(decisions)
    assert by_id["b0005"] == by_id["b0004"] == ["keep_last 2"]
    assert by_id["b0003"] == by_id["b0002"] == ["min_keep 2"]
    assert not by_id["b0001"] and not by_id["b0000"]


def test_an_old_verified_safety_backup_is_not_the_verified_guard() -> None:
    now = START + timedelta(days=30)
    backups = every(timedelta(days=1), 10)
    backups[9].trigger = "pre-restore"  # newest, verified, but 21 days old
    backups[9].verified = True
    backups[2].verified = True
    decisions = decide(backups, RetentionConfig(keep_last=1, keep_pre_restore="7d"), UTC_TZ,
                       now)
    by_id = reasons(decisions)
    assert by_id["b0009"] == []  # older than keep_pre_restore: removed
    assert by_id["b0008"] == ["keep_last 1"]  # the safety backup took no keep_last slot
    assert by_id["b0002"] == ["newest verified backup"]
    assert kept(decisions) == ["b0008", "b0002"]


def test_without_rules_every_regular_backup_is_kept_but_old_safety_backups_go() -> None:
    now = START + timedelta(days=30)
    backups = every(timedelta(days=1), 4)
    backups[0].trigger = "pre-restore"
    decisions = decide(backups, RetentionConfig(), UTC_TZ, now)
    by_id = reasons(decisions)
    assert by_id["b0000"] == []
    assert all(by_id[b] == ["no rule covers untagged backups"] for b in ("b0001", "b0002"))
    assert kept(decisions) == ["b0003", "b0002", "b0001"]
