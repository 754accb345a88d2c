"""Which backups a retention policy keeps: restic's `forget` semantics, plus kbackup's guards.

A backup kept by any rule is kept. keep_hourly/daily/weekly/monthly/yearly keep the newest
backup of each of the N newest periods that have one, with periods taken in the job's
timezone (so a DST day is still one day). keep_within keeps everything within that duration
of the newest backup. Guards on top: the newest complete, verified backup is never removed;
min_keep complete, non-corrupt backups always stay; safety backups taken before a restore are
kept for keep_pre_restore and are not counted by the period rules. A backup whose objects are
under S3 Object Lock on the target is kept until the lock ends ("locked until DATE").

Rules per schedule tag ([retention.tags.weekly] keep_last = 8) apply the same way to the
backups recorded with that tag only (keep_last 8 = the 8 newest weekly backups). A backup no
rule covers (the job has no job-wide rules and its tag, or lack of one, has none either) is
kept: rules for one tag never remove the backups of another, nor manual ones.
Each reason names the rule: "keep_last 7", "tag weekly: keep_weekly 8 (2026-W47)".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kbackup.config import RetentionConfig
from kbackup.config.jobs import RetentionRules


@dataclass
class Candidate:
    id: str
    started: datetime  # aware
    status: str  # complete, partial, corrupt
    trigger: str
    verified: bool = False
    tag: str | None = None  # the schedule tag it was taken for
    locked_until: datetime | None = None  # S3 Object Lock on this target: kept till then


@dataclass
class Decision:
    backup: Candidate
    keep: bool
    reasons: list[str] = field(default_factory=list)


def _periods(tz: ZoneInfo) -> list[tuple[str, Callable[[datetime], str]]]:
    def local(when: datetime) -> datetime:
        return when.astimezone(tz)

    return [
        ("hourly", lambda w: local(w).strftime("%Y-%m-%d %H:00")),
        ("daily", lambda w: local(w).strftime("%Y-%m-%d")),
        ("weekly", lambda w: "{:04d}-W{:02d}".format(*local(w).isocalendar()[:2])),
        ("monthly", lambda w: local(w).strftime("%Y-%m")),
        ("yearly", lambda w: local(w).strftime("%Y")),
    ]


def _apply(rules: RetentionRules, pool: list[Decision], within_pool: list[Decision],
           tz: ZoneInfo, prefix: str) -> None:
    """One set of rules over `pool` (newest first); reasons are prefixed (the tag)."""
    for index, decision in enumerate(pool):
        if rules.keep_last and index < rules.keep_last:
            decision.reasons.append(f"{prefix}keep_last {rules.keep_last}")

    for name, bucket_of in _periods(tz):
        limit = getattr(rules, f"keep_{name}")
        if not limit:
            continue
        seen: list[str] = []
        for decision in pool:  # newest first: the first backup of a period represents it
            bucket = bucket_of(decision.backup.started)
            if bucket in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(bucket)
            decision.reasons.append(f"{prefix}keep_{name} {limit} ({bucket})")

    if rules.within_seconds and within_pool:
        newest = within_pool[0].backup.started
        for decision in within_pool:
            if newest - decision.backup.started <= timedelta(seconds=rules.within_seconds):
                decision.reasons.append(f"{prefix}keep_within {rules.keep_within}")


def decide(backups: Sequence[Candidate], policy: RetentionConfig, tz: ZoneInfo,
           now: datetime) -> list[Decision]:
    """Keep/remove for every backup, newest first, each with the rules that kept it."""
    ordered = sorted(backups, key=lambda b: b.started, reverse=True)
    decisions = [Decision(b, False) for b in ordered]
    regular = [d for d in decisions if d.backup.trigger != "pre-restore"
               and d.backup.status != "corrupt"]

    _apply(policy, regular, decisions, tz, "")
    ruled_tags = {tag for tag, rules in policy.tags.items() if rules.has_rules}
    for tag in sorted(ruled_tags):
        pool = [d for d in regular if d.backup.tag == tag]
        _apply(policy.tags[tag], pool, pool, tz, f"tag {tag}: ")
    if not policy.has_rules:
        for decision in decisions:
            backup_tag = decision.backup.tag
            if decision.backup.trigger != "pre-restore" and backup_tag not in ruled_tags:
                what = f"tag {backup_tag}" if backup_tag else "untagged"
                decision.reasons.append(f"no rule covers {what}"
                                        " backups")

    for decision in decisions:
        if decision.backup.trigger == "pre-restore":
            age = now - decision.backup.started
            if age <= timedelta(seconds=policy.pre_restore_seconds):
                decision.reasons.append(f"safety backup younger than {policy.keep_pre_restore}")

    good = [d for d in regular if d.backup.status == "complete"]
    verified = next((d for d in good if d.backup.verified), None)
    if verified is not None:
        verified.reasons.append("newest verified backup")
    kept_good = sum(1 for d in good if d.reasons)
    for decision in good:
        if kept_good >= policy.min_keep:
            break
        if not decision.reasons:
            decision.reasons.append(f"min_keep {policy.min_keep}")
            kept_good += 1

    for decision in decisions:  # last: a lock keeps a backup, it counts for no rule
        until = decision.backup.locked_until
        if until is not None and until > now:
            decision.reasons.append(f"locked until {until:%Y-%m-%dT%H:%M:%SZ}")
        decision.keep = bool(decision.reasons)
    return decisions
