"""Digests: the report (kbackup.report) sent to an alert channel on its `digest` cron, covering
the time since the fire before. Mail gets text and HTML with PNG charts, other channels the
text.

The fire time of each channel's last digest is kept in the catalog's schedule_state (job
"_digest": no job name starts with "_"), written once the delivery is done, so a restart sends
nothing twice; a digest missed while the daemon was down is sent once at start (the most recent
only). A channel seen with a digest for the first time starts counting from now. A failed
delivery is retried by Channel.send, then logged and counted as the channel failing (the
`alert_channel` check), like an alert's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kbackup.alerts.base import Channel, Message, delivery_error
from kbackup.alerts.store import AlertStore
from kbackup.catalog import Catalog
from kbackup.config import Config
from kbackup.scheduler import Clock, next_fire, prev_fire
from kbackup.times import iso

log = logging.getLogger("kbackup.digest")
STATE_JOB = "_digest"
MAX_SLEEP = 30.0


@dataclass
class DigestEntry:
    channel: str
    cron: str
    tz: ZoneInfo
    next_at: datetime

    @property
    def key(self) -> str:
        return f"{self.channel} {self.cron} {self.tz.key}"


def window_start(cron: str, tz: ZoneInfo, fire: datetime) -> datetime:
    """The fire time before `fire`: where its digest's window starts."""
    return prev_fire(cron, tz, fire - timedelta(seconds=1))


def digest_message(report: dict[str, Any], html: bool) -> Message:
    """A digest as a channel's Message: the text always, the HTML and its images for mail."""
    from kbackup.report.text import render_text, summary

    message = Message(kind="digest", severity="info", job=None, check="digest",
                      reason=summary(report), body=render_text(report), report=report)
    if html:
        from kbackup.report.html import render_html

        message.html, message.inline = render_html(report)
    return message


class Digests:
    def __init__(self, config: Config, catalog: Catalog, store: AlertStore,
                 channels: Callable[[], dict[str, Channel]], clock: Clock):
        self.catalog = catalog
        self.store = store
        self.channels = channels  # the alert manager's, current after a reload
        self.clock = clock
        self.config = config
        self.entries: list[DigestEntry] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.configure(config)

    def configure(self, config: Config) -> None:
        """(Re)build the timetable; each channel's last fire time comes from the catalog."""
        self.config = config
        now = self.clock.now()
        entries = []
        for name, channel in sorted(config.settings.alerts.items()):
            if channel.digest is None:
                continue
            tz = ZoneInfo(channel.digest_timezone or config.daemon.timezone)
            entry = DigestEntry(name, channel.digest, tz, now)
            last = self.catalog.last_fired(STATE_JOB, entry.key)
            if last is None:
                self.catalog.set_last_fired(STATE_JOB, entry.key, now)
                last = now
            entry.next_at = next_fire(entry.cron, tz, last)
            entries.append(entry)
        self.entries = entries
        self._wake.set()

    def due(self) -> list[tuple[DigestEntry, datetime, datetime]]:
        """(entry, fire time, window start) of each digest due now; moves each on. Missed
        fire times (the daemon was down) give one digest: the most recent one's."""
        now = self.clock.now()
        found = []
        for entry in self.entries:
            if entry.next_at > now:
                continue
            fire = prev_fire(entry.cron, entry.tz, now)
            found.append((entry, fire, window_start(entry.cron, entry.tz, fire)))
            entry.next_at = next_fire(entry.cron, entry.tz, fire)
        return found

    def report(self, since: datetime, until: datetime) -> dict[str, Any]:
        from kbackup.report.build import build_report

        return build_report(self.config, self.catalog, self.store.firing(), since,
                            until).as_dict()

    async def send(self, name: str, since: datetime, until: datetime,
                   retries: int | None = None) -> str | None:
        """Build the report of [since, until] and deliver it to channel `name`; the error, or
        None. Raises KeyError for an unknown channel; never a delivery's error."""
        channel = self.channels()[name]
        try:
            message = digest_message(self.report(since, until), channel.type == "email")
        except Exception as exc:  # a bug here must not reach the daemon
            log.exception("event=digest.bug channel=%s", name)
            error: str | None = f"internal error: {exc.__class__.__name__}: {exc}"
        else:
            error = await delivery_error(channel, message, retries)
        self.store.channel_result(name, error, self.clock.now())
        if error is None:
            log.info("event=digest.sent channel=%s type=%s since=%s until=%s", name,
                     channel.type, iso(since), iso(until))
        else:
            log.error("event=digest.failed channel=%s type=%s since=%s error=%r", name,
                      channel.type, iso(since), error)
        return error

    async def _fire(self, entry: DigestEntry, fire: datetime, since: datetime) -> None:
        if entry.channel in self.channels():
            await self.send(entry.channel, since, self.clock.now())
        self.catalog.set_last_fired(STATE_JOB, entry.key, fire)  # delivered or given up

    def tick(self) -> None:
        for entry, fire, since in self.due():
            task = asyncio.create_task(self._fire(entry, fire, since),
                                       name=f"digest-{entry.channel}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def run(self) -> None:
        while True:
            self.tick()
            delay = MAX_SLEEP
            if self.entries:
                soonest = min(e.next_at for e in self.entries)
                delay = max(0.05, min(MAX_SLEEP, (soonest - self.clock.now()).total_seconds()))
            self._wake.clear()
            await self.clock.sleep_or_wake(delay, self._wake)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="digests")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._sending] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
