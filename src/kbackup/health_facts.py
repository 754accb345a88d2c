"""What health is made of: severities, a check's result and its stable key, and the facts
the checks read (disk samples, channel states, running runs, the catalog `History`). Apart
from the checks themselves so that health.py (job checks) and health_daemon.py (disks,
targets, channels) share them without importing each other."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

OK, WARNING, CRITICAL = "ok", "warning", "critical"
INFO = "info"  # worth saying, nothing wrong: counts as OK (no alert, status OK)
RANK = {OK: 0, INFO: 0, WARNING: 1, CRITICAL: 2}
DAEMON = "daemon"  # the "job" part of the key of daemon-wide checks
FORECAST_WINDOW = timedelta(days=7)
FORECAST_MIN_SPAN = timedelta(hours=1)
TARGET_CHECKS = ("storage", "disk_free", "disk_forecast")  # daemon checks keyed by target


@dataclass(frozen=True)
class CheckResult:
    job: str | None  # None: daemon-wide (disks, storage targets, alert channels)
    check: str
    target: str | None  # a storage target, a disk, a channel, or a component for size checks
    severity: str
    reason: str
    next_step: str = ""
    details: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return alert_key(self.job, self.check, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "details": list(self.details)}


def alert_key(job: str | None, check: str, target: str | None) -> str:
    """Stable identity of a check: job/check[/target], e.g. shop/backup_age/offsite."""
    return "/".join([job or DAEMON, check] + ([target] if target else []))


def worst(severities: Iterable[str]) -> str:
    top = max(severities, key=lambda s: RANK.get(s, 0), default=OK)
    return OK if RANK.get(top, 0) == 0 else top


@dataclass
class DiskStat:
    """One filesystem the daemon writes to, with the roles it plays (state_dir, target X)."""

    key: str
    path: str
    roles: list[str]
    free: int | None = None
    total: int | None = None
    error: str | None = None
    samples: list[tuple[datetime, int]] = field(default_factory=list)  # (when, free bytes)


@dataclass
class ChannelState:
    name: str
    failures: int = 0
    failing_since: datetime | None = None
    last_error: str | None = None


@dataclass
class RunningRun:
    id: str
    job: str
    kind: str
    started_at: datetime


@dataclass
class Facts:
    now: datetime
    disks: list[DiskStat] = field(default_factory=list)
    storage: dict[str, str | None] = field(default_factory=dict)  # target -> error; absent: unknown
    channels: dict[str, ChannelState] = field(default_factory=dict)
    running: list[RunningRun] = field(default_factory=list)
    seen: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (job, item) -> first
    heartbeats: dict[str, ChannelState] = field(default_factory=dict)  # "daemon" or a job
    # (job, append-only target) -> backups past retention kept there (jobs/prune.py WAITING)
    waiting: dict[tuple[str, str], list[str]] = field(default_factory=dict)


class History(Protocol):
    """The catalog reads health needs (alerts/store.py implements them)."""

    def last_good_backup(self, job: str, target: str | None = None) -> dict[str, Any] | None: ...

    def good_backups(self, job: str, limit: int) -> list[dict[str, Any]]: ...

    def backup_runs_since(self, job: str, since: datetime) -> list[dict[str, Any]]: ...

    def oldest_good_backup(self, job: str) -> dict[str, Any] | None: ...

    def last_backup_runs(self, job: str, limit: int) -> list[dict[str, Any]]: ...

    def last_finished_backup_run(self, job: str) -> dict[str, Any] | None: ...

    def run_covers(self, job: str, when: datetime) -> bool: ...

    def last_job_verification(self, job: str) -> dict[str, Any] | None: ...

    def last_restore_test(self, job: str) -> dict[str, Any] | None: ...  # passed, with seconds

    def recent_errors(self, job: str, limit: int = 3) -> list[str]: ...

    def job_pause(self, job: str) -> dict[str, Any] | None: ...  # last pause, ended or not


def make_result(job: str | None, check: str, target: str | None, severity: str, reason: str,
            next_step: str = "", details: Iterable[str] = ()) -> CheckResult:
    return CheckResult(job, check, target, severity, reason, next_step, tuple(details))
