"""When jobs run: cron expressions evaluated in the job's timezone, plus catch-up after downtime.

Cron is evaluated on naive wall-clock time and each match is then placed on the UTC time line
(first occurrence of an ambiguous time; a time inside a spring-forward gap runs right after the
gap). Fire times only ever move forward, so a daily job neither skips nor runs twice on a DST
day. The clock is injectable so tests can drive time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from kbackup.catalog import Catalog
from kbackup.config import Config
from kbackup.times import iso, parse_iso

log = logging.getLogger("kbackup.scheduler")
MAX_SLEEP = 30.0


class Clock:
    """Real time. Tests pass a subclass whose now() they control."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_or_wake(self, seconds: float, wake: asyncio.Event) -> None:
        """Sleep (in this clock's time) until `seconds` pass or `wake` is set."""
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()


def next_fire(cron: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first time strictly after `after` (aware) at which `cron` fires in `tz`, in UTC."""
    local = after.astimezone(tz).replace(tzinfo=None)
    matches = croniter(cron, local)
    while True:
        candidate: datetime = matches.get_next(datetime)
        fire = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if fire > after:
            return fire


def prev_fire(cron: str, tz: ZoneInfo, at: datetime) -> datetime:
    """The last time at or before `at` at which `cron` fires in `tz` (as next_fire places it)."""
    local = at.astimezone(tz).replace(tzinfo=None) + timedelta(minutes=1)
    matches = croniter(cron, local)
    while True:
        candidate: datetime = matches.get_prev(datetime)
        fire = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if fire <= at:
            return fire


@dataclass
class Entry:
    job: str
    tag: str
    cron: str
    tz: ZoneInfo
    next_at: datetime
    kind: str = "backup"
    due_at: datetime | None = None  # the fire time last found due

    @property
    def key(self) -> str:
        return f"{self.tag}:{self.cron}"


# (job name, trigger, kind: backup or verify, schedule tag: what the backup is recorded as)
Launch = Callable[[str, str, str, str | None], None]


class Scheduler:
    def __init__(self, catalog: Catalog, launch: Launch, clock: Clock | None = None):
        self.catalog = catalog
        self.launch = launch
        self.clock = clock or Clock()
        self.entries: list[Entry] = []
        self._wake = asyncio.Event()

    def configure(self, config: Config) -> None:
        """(Re)build the timetable from config; keeps each schedule's last fire time."""
        now = self.clock.now()
        entries = []
        for job in config.jobs.values():
            tz = config.job_timezone(job)
            timetable = [(s.tag, s.cron, "backup") for s in job.schedules]
            if job.verify.schedule:
                timetable.append(("verify", job.verify.schedule, "verify"))
            for tag, cron, kind in timetable:
                entry = Entry(job.name, tag, cron, tz, now, kind)
                last = self.catalog.last_fired(job.name, entry.key)
                if last is None:
                    self.catalog.set_last_fired(job.name, entry.key, now)
                    last = now
                entry.next_at = next_fire(entry.cron, tz, last)
                entries.append(entry)
        self.entries = entries
        self._wake.set()

    def next_run(self, job: str, kind: str = "backup") -> datetime | None:
        times = [e.next_at for e in self.entries if e.job == job and e.kind == kind]
        return min(times) if times else None

    def tick(self) -> list[tuple[str, str]]:
        """Fire what is due; a job due on several schedules (or missed many times) runs once.

        The run is recorded with the tag of the due schedule that fires least often (its next
        time is furthest away: "weekly" wins over "daily" on a Sunday), also when it runs as a
        catch-up. A paused job's due times are skipped, not saved up: its schedule bookkeeping
        moves on as if it had run, so resuming it fires nothing until its next scheduled time.
        """
        now = self.clock.now()
        due: dict[tuple[str, str], tuple[str, list[Entry]]] = {}
        for entry in self.entries:
            if entry.next_at > now:
                continue
            overdue = (now - entry.next_at).total_seconds()
            trigger = "scheduled" if overdue < 2 * MAX_SLEEP + 60 else "catch-up"
            due.setdefault((entry.job, entry.kind), (trigger, []))[1].append(entry)
            entry.due_at = entry.next_at
            self.catalog.set_last_fired(entry.job, entry.key, now)
            entry.next_at = next_fire(entry.cron, entry.tz, now)
        launched: list[tuple[str, str]] = []
        for (job, kind), (trigger, entries) in due.items():
            tag = max(entries, key=lambda e: e.next_at).tag
            pause = self.catalog.active_pause(job, now)
            if pause is not None:
                log.info("event=schedule.paused job=%s kind=%s tag=%s due=%s paused_by=%s"
                         " reason=%r until=%s", job, kind, tag, iso(entries[0].due_at),
                         pause["paused_by"], pause["reason"] or "", pause["until"] or "-")
                continue
            for index, entry in enumerate(entries):
                if index == 0:
                    log.info("event=schedule.fire job=%s kind=%s tag=%s due=%s trigger=%s",
                             job, kind, tag, iso(entry.due_at), trigger)
                else:
                    log.info("event=schedule.coalesced job=%s tag=%s due=%s", job, entry.tag,
                             iso(entry.due_at))
            self.launch(job, trigger, kind, tag if kind == "backup" else None)
            launched.append((job, trigger))
        return launched

    async def run(self) -> None:
        while True:
            self.tick()
            now = self.clock.now()
            upcoming = [e.next_at for e in self.entries]
            delay = MAX_SLEEP
            if upcoming:
                delay = max(0.05, min(MAX_SLEEP, (min(upcoming) - now).total_seconds()))
            self._wake.clear()
            await self.clock.sleep_or_wake(delay, self._wake)


class FileClock(Clock):
    """A clock for tests of a real daemon process: now() is the ISO time written in a file
    (re-read at every call), and sleep() lasts until that time has moved on far enough."""

    def __init__(self, path: str):
        self.path = path

    def now(self) -> datetime:
        try:
            with open(self.path) as fh:
                return parse_iso(fh.read().strip()) or datetime.now(UTC)
        except (OSError, ValueError):
            return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        start = self.now()
        while True:
            await asyncio.sleep(0.1)
            if (self.now() - start).total_seconds() >= seconds:
                return


def clock_from_env() -> Clock:
    """Real time, unless the hidden test hook KBACKUP_FAKE_NOW_FILE names a FileClock file."""
    path = os.environ.get("KBACKUP_FAKE_NOW_FILE")
    return FileClock(path) if path else Clock()
