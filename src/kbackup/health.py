"""Health checks: what is wrong with each job and with the daemon, as OK / WARNING / CRITICAL
with a reason a person can act on.

Evaluation is a function of gathered facts (catalog history through `History`, disk stats,
storage probe results, channel states, running runs) and `now`: it never reads the clock,
the disk or the network itself, so every rule is testable without a daemon. alerts/monitor.py
gathers the facts; alerts/manager.py turns non-OK results into alerts. This module holds the
job checks and `evaluate`; health_facts.py what they are made of, health_daemon.py the
daemon-wide checks (disks, storage targets, channels).
"""

from __future__ import annotations

import functools
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kbackup.config import Config, JobConfig, ThresholdsConfig
from kbackup.health_daemon import evaluate_daemon
from kbackup.health_facts import (
    CRITICAL,
    INFO,
    OK,
    TARGET_CHECKS,
    WARNING,
    CheckResult,
    Facts,
    History,
)
from kbackup.health_facts import make_result as _result
from kbackup.scheduler import next_fire, prev_fire
from kbackup.sources.drivers import driver_for_component
from kbackup.times import format_duration, parse_iso
from kbackup.units import format_size


def _local(when: datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


# ---------------------------------------------------------------------- schedules


@functools.lru_cache(maxsize=256)
def largest_gap(crons: tuple[str, ...], tz_name: str, start: datetime) -> float | None:
    """The longest time between two consecutive fire times of these schedules together.

    Looks 63 days ahead (a monthly job is covered) with at most 4000 fire times per schedule:
    a frequent schedule ends the window early, and then its own gaps dominate anyway.
    """
    if not crons:
        return None
    tz = ZoneInfo(tz_name)
    horizon = start + timedelta(days=63)
    end = horizon
    times: list[datetime] = []
    for cron in crons:
        when = start
        for _ in range(4000):
            when = next_fire(cron, tz, when)
            if when > horizon:
                break
            times.append(when)
        else:
            end = min(end, when)
    times = sorted(t for t in set(times) if t <= end)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    return max(gaps) if gaps else None


def max_backup_age(config: Config, job: JobConfig, limits: ThresholdsConfig,
                   now: datetime) -> float | None:
    """The configured limit, else the job's largest gap between scheduled runs + 25%."""
    if limits.max_backup_age is not None:
        return limits.max_backup_age
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    gap = largest_gap(tuple(sorted(s.cron for s in job.schedules)),
                      job.timezone or config.daemon.timezone, day)
    return None if gap is None else gap * 1.25


# ---------------------------------------------------------------------- job checks


def check_backup_age(config: Config, job: JobConfig, limits: ThresholdsConfig,
                     history: History, facts: Facts, errors: list[str]) -> list[CheckResult]:
    limit = max_backup_age(config, job, limits, facts.now)
    if limit is None:
        return []
    name, now = job.name, facts.now
    step = f"kbackupctl runs {name}"
    newest = history.last_good_backup(name)
    results = []
    if newest is None:
        since = facts.seen.get((name, "job"), now)
        late = (now - since).total_seconds() > limit
        runs = history.last_backup_runs(name, 1)
        failed = (f"; backup run {runs[0]['id']} failed (the last_run check reports it)"
                  if runs else "")
        reason = (f"no complete backup yet{failed} (job configured since "
                  f"{_local(since, config.job_timezone(job))}, limit {format_duration(limit)})")
        # A job that ran and never succeeded is last_run's CRITICAL (with the run's error):
        # one alert, not two. Here only a job that has not run at all, once it is late.
        results.append(_result(name, "backup_age", None, CRITICAL if late and not runs else OK,
                               reason, step, errors))
        newest_at = None
    else:
        newest_at = parse_iso(newest["finished_at"]) or now
        age = (now - newest_at).total_seconds()
        reason = (f"last good backup is {format_duration(age)} old"
                  f" (limit {format_duration(limit)})")
        results.append(_result(name, "backup_age", None, CRITICAL if age > limit else OK,
                               reason, step, errors))
    if len(job.targets) < 2:
        return results
    for target in job.targets:
        row = history.last_good_backup(name, target)
        when = parse_iso(row["finished_at"]) if row else None
        if newest is None or newest_at is None or when == newest_at:
            continue  # same as the job as a whole: reported once, above
        since = when or facts.seen.get((name, f"target:{target}"), now)
        age = (now - since).total_seconds()
        what = (f"last good backup on target {target} is {format_duration(age)} old" if when
                else f"target {target} holds no complete backup yet")
        # The newest backup is partial because this target failed: not OK before the limit.
        missed = str(newest["targets"].get(target, ""))
        severity = CRITICAL if age > limit else WARNING if missed.startswith("failed") else OK
        reason = f"{what} (limit {format_duration(limit)})"
        if missed.startswith("failed"):
            reason += f"; newest backup {newest['id']} failed there: {missed[len('failed: '):]}"
        results.append(_result(name, "backup_age", target, severity, reason,
                               f"kbackupctl backups {name}; kbackupctl storage check {target}",
                               errors))
    return results


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else "no error recorded"


def check_last_run(job: JobConfig, limits: ThresholdsConfig, history: History,
                   errors: list[str]) -> CheckResult:
    """The newest finished backup run: failed is WARNING, CRITICAL when the job has no good
    backup at all (this check, not backup_age, owns a job that never succeeded) or after
    max_consecutive_failures in a row; partial is WARNING naming the
    target. Runs a daemon stop aborted do not count (see the store)."""
    name, most = job.name, limits.max_consecutive_failures
    step = f"kbackupctl runs {name}"
    runs = history.last_backup_runs(name, max(most, 1))
    if not runs:
        return _result(name, "last_run", None, OK, "no finished backup run yet")
    last = runs[0]
    if last["backup_status"] == "partial":
        failed = {t: str(v).removeprefix("failed: ") for t, v in last["backup_targets"].items()
                  if str(v).startswith("failed")}
        where = "; ".join(f"target {t} failed: {why}" for t, why in failed.items())
        if not where:  # a component missing (a database that could not be dumped)
            return _result(name, "last_run", None, WARNING, _first_line(last["error"]),
                           f"{step}; kbackupctl sources check {name}", errors)
        return _result(name, "last_run", None, WARNING,
                       f"backup {last['id']} is partial, not on every target ({where})",
                       f"{step}; kbackupctl storage check", errors)
    if last["status"] == "complete":
        return _result(name, "last_run", None, OK, f"last backup run {last['id']} complete")
    streak = 0
    for run in runs:
        if run["status"] == "complete" or run["backup_status"] == "partial":
            break
        streak += 1
    error = _first_line(last["error"])
    if history.last_good_backup(name) is None:
        return _result(name, "last_run", None, CRITICAL,
                       f"no complete backup yet: backup run {last['id']} failed: {error}",
                       step, errors)
    if streak >= most:
        return _result(name, "last_run", None, CRITICAL,
                       f"{streak} backup runs failed in a row (limit {most}), the last,"
                       f" {last['id']}: {error}", step, errors)
    return _result(name, "last_run", None, WARNING,
                   f"backup run {last['id']} failed: {error}", step, errors)


def check_failure_rate(job: JobConfig, limits: ThresholdsConfig, history: History,
                       facts: Facts, errors: list[str]) -> CheckResult:
    since = facts.now - timedelta(seconds=limits.failure_window)
    runs = [r for r in history.backup_runs_since(job.name, since)
            if r["status"] != "running"
            and not (r["error"] or "").startswith("aborted: daemon shutting down")]
    failed = sum(1 for r in runs if r["status"] != "complete")
    window = format_duration(limits.failure_window)
    if not runs:
        return _result(job.name, "failure_rate", None, OK, f"no backup runs in the last {window}")
    rate = failed / len(runs)
    reason = (f"{failed} of {len(runs)} backup runs failed in the last {window}"
              f" ({rate:.0%}, limit {limits.max_failure_rate:.0%})")
    severity = OK
    if len(runs) >= limits.failure_min_runs and rate > limits.max_failure_rate:
        severity = CRITICAL if rate >= 0.5 else WARNING
    return _result(job.name, "failure_rate", None, severity, reason,
                   f"kbackupctl runs {job.name}", errors)


def check_duration(job: JobConfig, limits: ThresholdsConfig, history: History,
                   facts: Facts) -> CheckResult | None:
    limit = limits.max_duration
    if limit is None:
        return None
    step = f"kbackupctl runs {job.name}"
    for run in facts.running:
        if run.job == job.name and run.kind == "backup":
            took = (facts.now - run.started_at).total_seconds()
            reason = (f"backup {run.id} has been running for {format_duration(took)}"
                      f" (limit {format_duration(limit)})")
            return _result(job.name, "duration", None, WARNING if took > limit else OK,
                           reason, step)
    last = history.last_finished_backup_run(job.name)
    start, end = (parse_iso(last["started_at"]), parse_iso(last["finished_at"])) if last \
        else (None, None)
    if last is None or start is None or end is None:
        return _result(job.name, "duration", None, OK, "no finished backup run yet")
    took = (end - start).total_seconds()
    reason = (f"last backup {last['id']} took {format_duration(took)}"
              f" (limit {format_duration(limit)})")
    return _result(job.name, "duration", None, WARNING if took > limit else OK, reason, step)


def check_restore_time(job: JobConfig, limits: ThresholdsConfig,
                       history: History) -> CheckResult | None:
    """max_restore_time: the last passed restore-test is the measured time to recover."""
    limit = limits.max_restore_time
    if limit is None:
        return None
    last = history.last_restore_test(job.name)
    if last is None:
        return _result(job.name, "restore_time", None, OK, "no restore-test has passed yet")
    took = float(last["restore_seconds"])
    reason = (f"last restore-test (backup {last['backup_id']}) took {took:.1f}s"
              f" (limit {limit:.0f}s)")
    return _result(job.name, "restore_time", None, WARNING if took > limit else OK, reason,
                   f"kbackupctl show {last['backup_id']}")


def check_sizes(job: JobConfig, limits: ThresholdsConfig, history: History) -> list[CheckResult]:
    """Each data component of the newest backup against the median of the 5 before it."""
    backups = [b for b in history.good_backups(job.name, 6) if b.get("manifest")]
    if len(backups) < 3:
        return []
    newest, previous = backups[0], backups[1:]
    results = []
    for component in newest["manifest"].get("components", []):
        driver = driver_for_component(component.get("kind", ""))
        kind = driver.size_label(component["kind"]) if driver is not None else None
        if kind is None:
            continue
        name = component["name"]
        before = [c.get("raw_bytes", 0) for b in previous
                  for c in b["manifest"].get("components", []) if c.get("name") == name]
        if len(before) < 2:
            continue
        usual = statistics.median(before)
        size = component.get("raw_bytes", 0)
        ratio = size / usual if usual else 1.0
        severity = OK
        if ratio < limits.min_size_ratio:
            severity = CRITICAL if ratio < limits.min_size_ratio / 2 else WARNING
        reason = (f"{kind} component '{name}' is {ratio:.0%} of its usual size"
                  f" ({format_size(size)} in {newest['id']}, median of the last"
                  f" {len(before)}: {format_size(usual)})")
        results.append(_result(job.name, "size_ratio", name, severity, reason,
                               f"kbackupctl show {newest['id']}"))
    return results


def check_missed_schedules(config: Config, job: JobConfig, limits: ThresholdsConfig,
                           history: History, facts: Facts) -> list[CheckResult]:
    tz = config.job_timezone(job)
    results = []
    tags = [s.tag for s in job.schedules]
    pause = history.job_pause(job.name)  # due times inside a pause were skipped on purpose
    for index, schedule in enumerate(job.schedules):
        label = schedule.tag if tags.count(schedule.tag) == 1 else f"{schedule.tag}-{index + 1}"
        known = facts.seen.get((job.name, f"schedule:{schedule.tag}:{schedule.cron}"))
        due = prev_fire(schedule.cron, tz, facts.now)
        late = (facts.now - due).total_seconds()
        severity = OK
        if known is not None and due >= known and late > limits.schedule_grace \
                and not history.run_covers(job.name, due) and not _paused_at(pause, due):
            severity = WARNING
        reason = (f"scheduled run at {_local(due, tz)} ({schedule.tag}) did not start"
                  f" ({format_duration(late)} late, grace {format_duration(limits.schedule_grace)})"
                  if severity != OK else f"scheduled run at {_local(due, tz)} started")
        results.append(_result(job.name, "missed_schedule", label, severity, reason,
                               f"kbackupctl runs {job.name}; journalctl -u kbackupd"))
    return results


def _verify_grace(config: Config, job: JobConfig, limits: ThresholdsConfig,
                  now: datetime) -> float | None:
    """How long a backup may stay unverified: a whole job timeout past the backup when each
    backup is verified at once, the verify schedule's largest gap + 25% when scheduled."""
    graces = []
    if job.verify.after_backup != "none":
        graces.append(job.timeout + limits.schedule_grace)
    if job.verify.schedule:
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        gap = largest_gap((job.verify.schedule,), job.timezone or config.daemon.timezone, day)
        if gap is not None:
            graces.append(gap * 1.25 + limits.schedule_grace)
    return min(graces) if graces else None


def check_verification(config: Config, job: JobConfig, limits: ThresholdsConfig,
                       history: History, facts: Facts) -> CheckResult | None:
    last = history.last_job_verification(job.name)
    if last is None:
        oldest = history.oldest_good_backup(job.name)
        grace = _verify_grace(config, job, limits, facts.now)
        when = parse_iso(oldest["finished_at"]) if oldest else None
        if oldest is None or when is None or grace is None:
            return None
        how = " and ".join(
            ([f"{job.verify.after_backup} after each backup"]
             if job.verify.after_backup != "none" else [])
            + ([f"{job.verify.level} on schedule '{job.verify.schedule}'"]
               if job.verify.schedule else []))
        age = (facts.now - when).total_seconds()
        severity = WARNING if age > grace else OK
        what = ("never verified: no backup of this job has been verified" if severity != OK
                else "no backup of this job verified yet")
        reason = (f"{what}, the oldest ({oldest['id']}) is {format_duration(age)} old"
                  f" (verification: {how}, grace {format_duration(grace)})")
        return _result(job.name, "verification", None, severity, reason,
                       f"kbackupctl verify {oldest['id']}; kbackupctl runs {job.name}")
    if last["ok"]:
        return _result(job.name, "verification", None, OK,
                       f"backup {last['backup_id']} passed {last['level']} verification")
    return _result(job.name, "verification", None, CRITICAL,
                   f"backup {last['backup_id']} is corrupt: {last['level']} verification"
                   f" failed: {last['problem']}", f"kbackupctl show {last['backup_id']}")


def _paused_at(pause: dict[str, Any] | None, when: datetime) -> bool:
    if pause is None:
        return False
    start, until = parse_iso(pause["paused_at"]), parse_iso(pause["until"])
    return start is not None and start <= when and (until is None or when < until)


def check_paused(config: Config, job: JobConfig, limits: ThresholdsConfig, history: History,
                 facts: Facts) -> CheckResult:
    """A paused job: OK while the pause is fresh, WARNING once it outlives max_backup_age."""
    pause = history.job_pause(job.name)
    if pause is None or not _paused_at(pause, facts.now):
        return _result(job.name, "paused", None, OK, "not paused")
    since = parse_iso(pause["paused_at"]) or facts.now
    until = parse_iso(pause["until"])
    tz = config.job_timezone(job)
    reason = (f"job paused since {_local(since, tz)} by {pause['paused_by']}"
              f" ({pause['reason'] or 'no reason given'})"
              + (f", until {_local(until, tz)}" if until else ""))
    limit = max_backup_age(config, job, limits, facts.now)
    late = limit is not None and (facts.now - since).total_seconds() > limit
    return _result(job.name, "paused", None, WARNING if late else OK, reason,
                   f"kbackupctl resume {job.name}")


def check_waiting(job: JobConfig, facts: Facts) -> list[CheckResult]:
    """Backups past retention on an append-only target, kept there until someone who may
    delete prunes them: INFO, one per target (nothing is wrong, but the space is not freed)."""
    results = []
    for target in job.targets:
        waiting = facts.waiting.get((job.name, target))
        if not waiting:
            continue
        results.append(_result(
            job.name, "retention_waiting", target, INFO,
            f"{len(waiting)} backup{'' if len(waiting) == 1 else 's'} past retention wait on"
            f" append-only target {target}",
            f"kbackupctl prune {job.name} --target {target} --credentials-dir DIR (as root)",
            waiting))
    return results


def evaluate_job(config: Config, job: JobConfig, history: History,
                 facts: Facts) -> list[CheckResult]:
    limits = config.settings.thresholds.for_job(job.thresholds)
    errors = history.recent_errors(job.name)
    results = check_backup_age(config, job, limits, history, facts, errors)
    results.append(check_last_run(job, limits, history, errors))
    results.append(check_failure_rate(job, limits, history, facts, errors))
    results += [r for r in (check_duration(job, limits, history, facts),
                            check_verification(config, job, limits, history, facts),
                            check_restore_time(job, limits, history))
                if r is not None]
    results += check_sizes(job, limits, history)
    results += check_missed_schedules(config, job, limits, history, facts)
    results.append(check_paused(config, job, limits, history, facts))
    results += check_waiting(job, facts)
    return results


# ---------------------------------------------------------------------- daemon checks


def evaluate(config: Config, history: History, facts: Facts) -> list[CheckResult]:
    """Every check of every job and of the daemon, OK ones included."""
    results = evaluate_daemon(config, facts)
    for name in sorted(config.jobs):
        results += evaluate_job(config, config.jobs[name], history, facts)
    return results


def job_view(config: Config, results: list[CheckResult], job: str) -> list[CheckResult]:
    """A job's own checks plus the daemon-wide ones that concern it (its targets' storage)."""
    targets = set(config.jobs[job].targets) if job in config.jobs else set()
    return [r for r in results if r.job == job
            or (r.job is None and r.check in TARGET_CHECKS and r.target in targets)]
