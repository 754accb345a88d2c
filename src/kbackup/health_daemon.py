"""Daemon-wide health: free disk space and its forecast, storage targets reachable, alert
channels working. Pure functions of gathered facts, like the job checks in health.py."""

from __future__ import annotations

import statistics
from datetime import datetime

from kbackup.config import Config, ThresholdsConfig
from kbackup.health_facts import (
    CRITICAL,
    FORECAST_MIN_SPAN,
    FORECAST_WINDOW,
    OK,
    WARNING,
    ChannelState,
    CheckResult,
    DiskStat,
    Facts,
)
from kbackup.health_facts import make_result as _result
from kbackup.times import format_duration
from kbackup.units import format_size, parse_size


def disk_limit(threshold: str, total: int) -> int:
    if threshold.endswith("%"):
        return int(total * float(threshold[:-1]) / 100)
    return parse_size(threshold)


def seconds_until_full(disk: DiskStat, now: datetime) -> float | None:
    """Least-squares trend of free space over the last week; None if not shrinking."""
    points = [(t, f) for t, f in disk.samples if now - t <= FORECAST_WINDOW]
    if disk.free is not None:
        points.append((now, disk.free))
    if len(points) < 3 or points[-1][0] - min(t for t, _ in points) < FORECAST_MIN_SPAN:
        return None
    xs = [(t - now).total_seconds() for t, _ in points]
    ys = [float(f) for _, f in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    if slope >= 0 or disk.free is None:
        return None
    return disk.free / -slope


def check_disk(disk: DiskStat, limits: ThresholdsConfig, now: datetime) -> list[CheckResult]:
    roles = ", ".join(disk.roles)
    step = f"df -h {disk.path}; kbackupctl backups"
    if disk.error is not None or disk.free is None or not disk.total:
        return [_result(None, "disk_free", disk.key, WARNING,
                        f"cannot read free space of {disk.path} ({roles}): {disk.error}", step)]
    limit = disk_limit(limits.min_free_disk, disk.total)
    pct = 100.0 * disk.free / disk.total
    reason = (f"free space on {disk.path} ({roles}) is {format_size(disk.free)},"
              f" {pct:.0f}% (limit {limits.min_free_disk})")
    results = [_result(None, "disk_free", disk.key, CRITICAL if disk.free < limit else OK,
                       reason, step)]
    left = seconds_until_full(disk, now)
    if left is None:
        results.append(_result(None, "disk_forecast", disk.key, OK,
                               f"free space on {disk.path} is not shrinking"))
    else:
        days = left / 86400
        when = f"{days:.0f} days" if days >= 1.5 else f"{format_duration(left)}"
        reason = (f"at the current growth, the disk of {disk.roles[0]} fills in {when}"
                  f" ({format_size(disk.free)} free on {disk.path})")
        results.append(_result(None, "disk_forecast", disk.key,
                               WARNING if left < limits.disk_forecast else OK, reason, step))
    return results


def evaluate_daemon(config: Config, facts: Facts) -> list[CheckResult]:
    limits = config.settings.thresholds
    results: list[CheckResult] = []
    for disk in facts.disks:
        results += check_disk(disk, limits, facts.now)
    for target in sorted(config.storage):
        if target not in facts.storage:
            continue
        error = facts.storage[target]
        reason = (f"storage target {target} unreachable: {error}" if error
                  else f"storage target {target} reachable")
        results.append(_result(None, "storage", target, CRITICAL if error else OK, reason,
                               "kbackupctl check; journalctl -u kbackupd -g storage"))
    for name in sorted(config.settings.alerts):
        results.append(_delivery(
            facts, "channel", name, facts.channels.get(name), f"alert channel {name} works",
            f"alert channel {name} is failing", "sends", f"kbackupctl alerts test {name}"))
    return results + check_heartbeats(facts)


def check_heartbeats(facts: Facts) -> list[CheckResult]:
    """A ping URL whose last ping failed after every retry: the external monitor will cry
    wolf (or, worse, a dead daemon goes unnoticed) until it works again."""
    results = []
    for name, state in sorted(facts.heartbeats.items()):
        what = "the daemon's heartbeat" if name == "daemon" else f"job {name}'s heartbeat"
        results.append(_delivery(
            facts, "heartbeat", name, state, f"{what} pings get through", f"{what} pings fail",
            "pings",
            "check the ping URL file and the monitor; journalctl -u kbackupd -g heartbeat"))
    return results


def _delivery(facts: Facts, check: str, name: str, state: ChannelState | None, ok: str,
              failing: str, unit: str, hint: str) -> CheckResult:
    """OK, or a WARNING saying since when and how often something the daemon sends out (an
    alert, a ping) has failed, with the last error (state None: never tried)."""
    if state is None or not state.failures:
        return _result(None, check, name, OK, ok)
    since = state.failing_since or facts.now
    return _result(None, check, name, WARNING,
                   f"{failing} since {since:%Y-%m-%d %H:%M} UTC ({state.failures} failed"
                   f" {unit}): {state.last_error}", hint)
