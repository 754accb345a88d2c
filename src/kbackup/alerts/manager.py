"""The alert state machine: check results in, notifications out.

A non-OK result opens an alert under its stable key (or updates the firing one); an alert
whose check is OK again, or no longer evaluated, is resolved. Per channel the catalog records
what was said and when, so sending is decided from persisted state alone:

    never told            -> send now ("firing")
    severity went up      -> send now
    told repeat_interval ago and still firing -> send again ("repeat")
    resolved, was told    -> send "resolved" once

A daemon restart therefore neither forgets a firing alert nor sends it again. Silences (a job,
"daemon", or one key) suppress sending, never evaluation. Deliveries run as background tasks
with the channel's timeouts and retries; a failed one is recorded on the alert and on the
channel and tried again later with growing delays. Nothing here raises into the daemon.

A job's alerts go only to the channels its [alerts] table names (a "resolved" to every
channel that was told), daemon-wide ones to every channel; run results go per channel as
Config.run_routes says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from kbackup.alerts.base import Channel, Message, delivery_error
from kbackup.alerts.channels import build_channel
from kbackup.alerts.store import AlertStore
from kbackup.config import Config
from kbackup.health_facts import DAEMON, OK, RANK, CheckResult
from kbackup.scheduler import Clock
from kbackup.times import format_duration, iso, parse_iso
from kbackup.units import format_size

log = logging.getLogger("kbackup.alerts")
RESOLVED_PENDING = timedelta(days=1)  # how long an undelivered "resolved" is still tried
LISTED_RESOLVED = timedelta(days=7)
RESOLVED_KEPT = timedelta(days=90)
MAX_RETRY_DELAY = 3600.0


def retry_delay(failures: int) -> float:
    """After a delivery failed `failures` times in a row: 1, 2, 4 ... 60 minutes."""
    return min(MAX_RETRY_DELAY, 60.0 * 2 ** max(0, failures - 1))


class AlertManager:
    def __init__(self, store: AlertStore, config: Config, clock: Clock):
        self.store = store
        self.clock = clock
        self.config = config
        self.channels: dict[str, Channel] = {}
        self._inflight: dict[tuple[Any, str], asyncio.Task[None]] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.channels = {name: build_channel(name, cfg)
                         for name, cfg in sorted(config.settings.alerts.items())}

    # ------------------------------------------------------------------ state machine

    def process(self, results: Iterable[CheckResult]) -> None:
        """Open, update and resolve alerts from one evaluation, then send what is due."""
        now = self.clock.now()
        firing = {a["key"]: a for a in self.store.firing()}
        current = {r.key: r for r in results}
        for key, result in current.items():
            if RANK.get(result.severity, 0) == 0:  # OK, INFO
                continue
            alert = firing.get(key)
            if alert is None:
                self.store.open_alert(key, result.job, result.check, result.target,
                                      result.severity, result.reason, result.next_step,
                                      list(result.details), now)
                log.warning("event=alert.firing key=%s severity=%s reason=%r", key,
                            result.severity, result.reason)
                continue
            if alert["severity"] != result.severity:
                log.warning("event=alert.severity key=%s severity=%s was=%s reason=%r", key,
                            result.severity, alert["severity"], result.reason)
            self.store.touch_alert(alert["id"], result.severity, result.reason,
                                   result.next_step, list(result.details), now)
        for key, alert in firing.items():
            still = current.get(key)
            if still is not None and RANK.get(still.severity, 0) > 0:
                continue
            reason = still.reason if still is not None else \
                "no longer checked (removed from the configuration)"
            self.store.resolve_alert(alert["id"], reason, now)
            log.info("event=alert.resolved key=%s reason=%r was=%r", key, reason,
                     alert["reason"])
        self.store.forget_resolved(now - RESOLVED_KEPT)
        self.dispatch()

    def silence_for(self, alert: dict[str, Any], silences: list[dict[str, Any]]
                    ) -> dict[str, Any] | None:
        names = {alert["key"], alert["job"] or DAEMON}
        return next((s for s in silences if s["match"] in names), None)

    def _due(self, alert: dict[str, Any], name: str, now: datetime) -> str | None:
        """What `name` should be told about this alert now, if anything."""
        cfg = self.config.settings.alerts[name]
        state = alert["deliveries"].get(name, {})
        retry_at = parse_iso(state.get("retry_at"))
        if retry_at is not None and retry_at > now:
            return None
        told = parse_iso(state.get("notified_at"))
        if alert["state"] == "resolved":
            return "resolved" if told is not None and not state.get("resolved_sent") else None
        if RANK[alert["severity"]] < RANK[cfg.min_severity]:
            return None
        job = self.config.jobs.get(alert["job"]) if alert["job"] else None
        if job is not None and not job.hears(name):
            return None  # the job's [alerts] routes elsewhere; daemon-wide alerts go to all
        if alert["check"] == "channel" and alert["target"] == name:
            return None  # a failing channel is reported on the others
        if told is None or RANK[alert["severity"]] > RANK.get(state.get("severity", OK), 0):
            return "firing"
        if (now - told).total_seconds() >= cfg.repeat_interval:
            return "repeat"
        return None

    def dispatch(self) -> None:
        """Start the deliveries that are due (firing, repeats, pending resolved)."""
        now = self.clock.now()
        silences = self.store.silences(now)
        alerts = self.store.firing() + self.store.recently_resolved(now - RESOLVED_PENDING)
        for alert in alerts:
            if self.silence_for(alert, silences) is not None:
                continue
            for name, channel in self.channels.items():
                if (alert["id"], name) in self._inflight:
                    continue
                kind = self._due(alert, name, now)
                if kind is not None:
                    self._start((alert["id"], name), self._deliver_alert(alert, channel, kind))

    def _start(self, key: tuple[Any, str], work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._inflight[key] = task
        task.add_done_callback(lambda _t: self._inflight.pop(key, None))

    @staticmethod
    def message(alert: dict[str, Any], kind: str) -> Message:
        resolved = kind == "resolved"
        return Message(
            kind=kind, severity=OK if resolved else alert["severity"], job=alert["job"] or None,
            check=alert["check"], key=alert["key"], target=alert["target"] or None,
            reason=(alert["resolved_reason"] or "OK again") if resolved else alert["reason"],
            next_step=alert["next_step"], details=alert["details"],
            first_seen=alert["first_seen"], last_seen=alert["last_seen"],
            resolved_at=alert["resolved_at"],
            previous=f"{alert['severity'].upper()}: {alert['reason']}" if resolved else None)

    async def _deliver_alert(self, alert: dict[str, Any], channel: Channel, kind: str) -> None:
        message = self.message(alert, kind)
        error = await self._send(channel, message)
        now = self.clock.now()
        fresh = self.store.get_alert(alert["id"])
        state = dict((fresh or alert)["deliveries"].get(channel.name, {}))
        if error is None:
            state.update(error=None, failures=0, retry_at=None)
            if kind == "resolved":
                state["resolved_sent"] = iso(now)
            else:
                state.update(notified_at=iso(now), severity=alert["severity"],
                             count=state.get("count", 0) + 1)
        else:
            failures = state.get("failures", 0) + 1
            state.update(error=error, failures=failures,
                         retry_at=iso(now + timedelta(seconds=retry_delay(failures))))
        self.store.set_delivery(alert["id"], channel.name, state,
                                None if error is None else f"{channel.name}: {error}")
        if error is None:
            log.info("event=alert.sent channel=%s key=%s kind=%s", channel.name, alert["key"],
                     kind)

    async def _send(self, channel: Channel, message: Message,
                    retries: int | None = None) -> str | None:
        """Send and record the channel's health; the error text, or None. Never raises."""
        error = await delivery_error(channel, message, retries)
        self.store.channel_result(channel.name, error, self.clock.now())
        if error is not None:
            log.error("event=alert.channel_failed channel=%s type=%s kind=%s key=%s error=%r",
                      channel.name, channel.type, message.kind, message.key or "-", error)
        return error

    # ------------------------------------------------------------------ run notifications

    def run_finished(self, job: str, kind: str, run_id: str, status: str,
                     error: str | None) -> None:
        """Tell the channels about a finished backup, as the job's notify_on asks: per
        channel by its routing (Config.run_routes), a failure, or a recovery to a channel
        that asked for recoveries, or else a success."""
        cfg = self.config.jobs.get(job)
        if kind != "backup" or cfg is None or (error or "").startswith("aborted: daemon"):
            return
        now = self.clock.now()
        if any(s["match"] == job for s in self.store.silences(now)):
            return
        routes = {name: wanted for name, wanted in self.config.run_routes(cfg).items()
                  if wanted and name in self.channels}
        if not routes:
            return
        previous = self.store.previous_backup_status(job, run_id)
        messages: dict[str, Message] = {}
        for name, wanted in routes.items():
            if status != "complete":
                what = "failure"
            elif previous not in (None, "complete") and "recovery" in wanted:
                what = "recovery"
            else:
                what = "success"
            if what not in wanted:
                continue
            if what not in messages:
                messages[what] = self._run_message(job, what, run_id, error)
            self._start((run_id, name), self._send(self.channels[name], messages[what]))

    def _run_message(self, job: str, what: str, run_id: str, error: str | None) -> Message:
        if what == "failure":
            first = (error or "failed").strip().splitlines()[0] if error else "failed"
            severity, reason = "critical", f"backup {run_id} failed: {first}"
        elif what == "recovery":
            severity, reason = OK, f"backup {run_id} complete again ({self._summary(run_id)})"
        else:
            severity, reason = OK, f"backup {run_id} complete ({self._summary(run_id)})"
        return Message(kind=what, severity=severity, job=job, check="run", reason=reason,
                       next_step=f"kbackupctl runs {job}",
                       details=(error or "").strip().splitlines()[-5:] if error else [])

    def _summary(self, run_id: str) -> str:
        row = self.store.backup_summary(run_id)
        if row is None:
            return "no backup recorded"
        start, end = parse_iso(row["started_at"]), parse_iso(row["finished_at"])
        took = f" in {format_duration((end - start).total_seconds())}" if start and end else ""
        return f"{format_size(row['size_bytes'])}{took}"

    # ------------------------------------------------------------------ commands

    async def test(self, name: str | None = None) -> list[dict[str, Any]]:
        """One test message through each channel (or one): per channel OK or the exact error."""
        if name is not None and name not in self.channels:
            known = ", ".join(self.channels) or "none configured"
            raise KeyError(f"no alert channel named {name!r} (channels: {known})")
        chosen = [self.channels[name]] if name else list(self.channels.values())

        async def one(channel: Channel) -> dict[str, Any]:
            message = Message(kind="test", severity="info", job=None, check="test",
                              reason=f"test message through channel {channel.name}",
                              next_step="kbackupctl alerts")
            error = await self._send(channel, message, retries=0)
            return {"channel": channel.name, "type": channel.type, "ok": error is None,
                    "error": error}

        return list(await asyncio.gather(*(one(c) for c in chosen)))

    def check_match(self, match: str) -> None:
        """A silence names a job, "daemon", or an alert key (job/check[/target])."""
        owner = match.split("/", 1)[0]
        if owner != DAEMON and owner not in self.config.jobs:
            jobs = ", ".join(sorted(self.config.jobs)) or "none"
            raise ValueError(f"{match!r} is neither a job ({jobs}), 'daemon', nor an alert key"
                             " like shop/backup_age (see kbackupctl alerts)")

    def silence(self, match: str, seconds: float, reason: str, by: str) -> dict[str, Any]:
        self.check_match(match)
        now = self.clock.now()
        until = now + timedelta(seconds=seconds)
        self.store.silence(match, until, reason, by, now)
        log.info("event=alert.silenced match=%s until=%s by=%s reason=%r", match, iso(until),
                 by, reason)
        return {"match": match, "until": iso(until), "reason": reason, "created_by": by}

    def unsilence(self, match: str) -> bool:
        removed = self.store.unsilence(match)
        if removed:
            log.info("event=alert.unsilenced match=%s", match)
            self.dispatch()
        return removed

    def listing(self) -> dict[str, Any]:
        now = self.clock.now()
        silences = self.store.silences(now)

        def view(alert: dict[str, Any]) -> dict[str, Any]:
            return {**alert, "job": alert["job"] or None, "target": alert["target"] or None,
                    "silenced": self.silence_for(alert, silences)}

        channels = {c["name"]: c for c in self.store.channels()}
        return {
            "firing": [view(a) for a in self.store.firing()],
            "resolved": [view(a) for a in self.store.recently_resolved(now - LISTED_RESOLVED)],
            "silences": silences,
            "channels": [{"name": name, "type": ch.type,
                          "min_severity": self.config.settings.alerts[name].min_severity,
                          **{k: v for k, v in channels.get(name, {}).items() if k != "name"}}
                         for name, ch in self.channels.items()],
        }

    async def flush(self) -> None:
        """Wait for the deliveries under way (tests, shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def close(self, grace: float = 2.0) -> None:
        tasks = list(self._inflight.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
