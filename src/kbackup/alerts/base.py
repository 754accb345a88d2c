"""What every alert channel shares: the message shape and the sending discipline.

A Channel makes one delivery attempt in `deliver`; `send` wraps it with a per-attempt timeout
and retries with doubling delays, and raises ChannelError with the exact reason when every
attempt failed. Nothing here raises anything else: a broken channel must never take the daemon
down, and its error is what `kbackupctl alerts test` prints.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kbackup.config import AlertChannelConfig
from kbackup.errors import KbackupError
from kbackup.times import parse_iso

log = logging.getLogger("kbackup.alerts")

LABELS = {"resolved": "RESOLVED", "test": "TEST", "failure": "FAILED", "success": "OK",
          "recovery": "RECOVERED", "digest": "REPORT"}


class ChannelError(KbackupError):
    """A delivery failed; str() is the exact reason (never a secret)."""

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


def _when(value: str | None) -> str:
    when = parse_iso(value)
    if when is None:
        return "-"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class Message:
    """What a channel says: an alert (firing, repeat, resolved), a run result, a test, or a
    digest (the report: `body` is its text, said as is; `html` and its `inline` images are
    what a mail shows instead; `report` its data, for a webhook)."""

    kind: str  # firing | repeat | resolved | failure | success | recovery | test | digest
    severity: str  # ok | info | warning | critical
    job: str | None
    check: str
    reason: str
    key: str = ""
    target: str | None = None
    next_step: str = ""
    details: list[str] = field(default_factory=list)
    first_seen: str | None = None
    last_seen: str | None = None
    resolved_at: str | None = None
    previous: str | None = None  # resolved: what was wrong
    host: str = field(default_factory=socket.gethostname)
    sent_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    body: str = ""
    report: dict[str, Any] | None = None
    html: str | None = field(default=None, repr=False)
    inline: dict[str, bytes] = field(default_factory=dict, repr=False)  # Content-ID -> PNG

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, self.severity.upper())

    @property
    def who(self) -> str:
        return self.job or "kbackupd"

    def subject(self) -> str:
        if self.kind == "digest":
            return f"[kbackup {self.label}] {self.host}: {self.reason}"
        return f"[kbackup {self.label}] {self.who}: {self.reason}"

    def steps(self) -> list[str]:
        steps = [s.strip() for s in self.next_step.split(";") if s.strip()]
        if self.key:
            steps.append("kbackupctl alerts")
            if self.kind in ("firing", "repeat"):
                steps.append(f'kbackupctl alerts silence {self.key} --for 2h --reason "..."')
        return steps

    def text(self) -> str:
        """The plain-text body: what is wrong, since when, the last errors, the next step."""
        if self.kind == "digest":
            return self.body
        lines = [f"{self.label}: {self.who}: {self.reason}", ""]
        if self.kind == "resolved":
            lines.append(f"Was:        {self.previous or '-'}")
            lines.append(f"From:       {_when(self.first_seen)} to {_when(self.resolved_at)}")
        elif self.kind in ("firing", "repeat"):
            lines.append(f"Since:      {_when(self.first_seen)}"
                         + (" (reminder: still so)" if self.kind == "repeat" else ""))
            lines.append(f"Last check: {_when(self.last_seen)}")
        if self.key:
            lines.append(f"Alert key:  {self.key}")
        lines.append(f"Host:       {self.host}")
        if self.details and self.kind != "resolved":
            lines += ["", "Last errors:"] + [f"  {d}" for d in self.details]
        steps = self.steps()
        if steps:
            lines += ["", "Next step:" if len(steps) == 1 else "Next steps:"]
            lines += [f"  {s}" for s in steps]
        lines += ["", f"-- kbackupd on {self.host}"]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        found = {**asdict(self), "label": self.label, "subject": self.subject()}
        # html and inline are a mail's (the text and the data say the same); an alert's JSON
        # stays as it was before digests.
        for name in ("html", "inline") if self.kind == "digest" else \
                ("html", "inline", "body", "report"):
            del found[name]
        return found


class Channel(ABC):
    type = "?"

    def __init__(self, name: str, config: AlertChannelConfig):
        self.name = name
        self.config = config

    @abstractmethod
    async def deliver(self, message: Message) -> None:
        """One attempt; raises ChannelError (retry=False when trying again cannot help)."""

    async def send(self, message: Message, retries: int | None = None) -> None:
        """Deliver with a timeout per attempt and doubling delays between attempts."""
        attempts = 1 + (self.config.retries if retries is None else retries)
        delay = self.config.retry_delay
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout(self.config.timeout):
                    await self.deliver(message)
                return
            except TimeoutError:
                error = ChannelError(f"no answer within {self.config.timeout:g}s")
            except ChannelError as exc:
                error = exc
            except (OSError, ValueError) as exc:
                error = ChannelError(f"{exc.__class__.__name__}: {exc}")
            if not error.retry or attempt == attempts:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise ChannelError(f"{error}{suffix}", error.retry)
            await asyncio.sleep(delay)
            delay *= 2


async def delivery_error(channel: Channel, message: Message,
                         retries: int | None = None) -> str | None:
    """Send; the reason it failed, or None. Never raises but for cancellation: a channel's
    bug must not reach the daemon (it is logged with its traceback, and is the reason)."""
    try:
        await channel.send(message, retries)
        return None
    except ChannelError as exc:
        return str(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("event=alert.channel_bug channel=%s kind=%s", channel.name, message.kind)
        return f"internal error: {exc.__class__.__name__}: {exc}"
