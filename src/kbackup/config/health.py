"""[thresholds] (daemon defaults and a job's overrides), [alerts.NAME] channels, [metrics]:
what health.py and alerts/ interpret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from kbackup.fields import AbsoluteFile, HttpUrl, Seconds, Strict, Timezone, check_cron
from kbackup.units import parse_size

Severity = Literal["info", "warning", "critical"]
NotifyOn = Literal["failure", "success", "recovery"]
Ratio = Annotated[float, Field(ge=0, le=1)]


def _disk_threshold(value: str | int) -> str:
    """A percentage of the filesystem ("10%") or a size ("10GiB"); health.py reads it."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = -1.0
        if not 0 < percent < 100:
            raise ValueError(f"{value!r} is not a percentage between 0% and 100%")
        return text
    parse_size(text)
    return text


DiskThreshold = Annotated[str, BeforeValidator(_disk_threshold)]


class JobThresholds(Strict):
    """A job's [thresholds]: each field set here overrides kbackupd.toml's [thresholds]."""

    max_backup_age: Seconds | None = None
    max_failure_rate: Ratio | None = None
    failure_window: Seconds | None = None
    failure_min_runs: int | None = Field(default=None, ge=1)
    max_duration: Seconds | None = None
    min_size_ratio: Ratio | None = None
    schedule_grace: Seconds | None = None
    max_consecutive_failures: int | None = Field(default=None, ge=1)
    max_restore_time: Seconds | None = None


class ThresholdsConfig(Strict):
    """kbackupd.toml [thresholds]: defaults for every job, plus the disk limits."""

    max_backup_age: Seconds | None = None  # None: the largest gap between scheduled runs + 25%
    max_failure_rate: Ratio = 0.1
    failure_window: Seconds = 7 * 86400.0
    failure_min_runs: int = Field(default=5, ge=1)
    max_duration: Seconds | None = None
    min_size_ratio: Ratio = 0.5
    schedule_grace: Seconds = 600.0
    max_consecutive_failures: int = Field(default=2, ge=1)  # last_run: CRITICAL from this many
    min_free_disk: DiskThreshold = "10%"
    disk_forecast: Seconds = 7 * 86400.0  # warn when a disk fills up within this
    max_restore_time: Seconds | None = None  # warn when the last restore-test took longer

    def for_job(self, job: JobThresholds) -> ThresholdsConfig:
        """These thresholds with the job's overrides applied."""
        return self.model_copy(update=job.model_dump(exclude_none=True))


class AlertChannelBase(Strict):
    min_severity: Severity = "warning"
    repeat_interval: Seconds = 86400.0  # a firing alert is sent again after this
    timeout: Seconds = 15.0  # per attempt
    retries: int = Field(default=3, ge=0, le=10)
    retry_delay: Seconds = 2.0  # doubles after each failed attempt
    # The report (kbackup.report) sent on this cron, covering the time since the fire before;
    # in digest_timezone, default the daemon's (alerts/digest.py).
    digest: Annotated[str, AfterValidator(check_cron)] | None = None
    digest_timezone: Timezone | None = None

    def required_files(self) -> dict[str, Path]:
        return {}

    def problems(self) -> list[str]:
        """What is wrong beyond the fields' types (read from its files at load), one line
        each starting with the field; the caller prefixes the file and the channel's name."""
        return []


def _mail_address(value: str) -> str:
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
        raise ValueError(f"expected a mail address like 'oncall@example.com', got {value!r}")
    return value


MailAddress = Annotated[str, AfterValidator(_mail_address)]


class EmailChannelConfig(AlertChannelBase):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["email"]
    smtp_host: str = Field(min_length=1)
    smtp_port: int | None = Field(default=None, ge=1, le=65535)  # 587, 465 or 25 by security
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_file: AbsoluteFile | None = None
    sender: MailAddress = Field(alias="from")
    to: list[MailAddress] = Field(min_length=1)
    ca_file: AbsoluteFile | None = None  # CA bundle for a private mail server's certificate
    verify_tls: bool = True

    @model_validator(mode="after")
    def _login(self) -> EmailChannelConfig:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("set both username and password_file, or neither")
        return self

    @property
    def port(self) -> int:
        return self.smtp_port or {"starttls": 587, "tls": 465, "none": 25}[self.security]

    def required_files(self) -> dict[str, Path]:
        return {k: v for k, v in (("password_file", self.password_file),
                                  ("ca_file", self.ca_file)) if v is not None}


class SlackChannelConfig(AlertChannelBase):
    type: Literal["slack"]
    webhook_url_file: AbsoluteFile  # the URL is the secret

    def required_files(self) -> dict[str, Path]:
        return {"webhook_url_file": self.webhook_url_file}


class WebhookChannelConfig(AlertChannelBase):
    type: Literal["webhook"]
    url: HttpUrl
    secret_file: AbsoluteFile | None = None  # HMAC-SHA256 key for X-Kbackup-Signature
    verify_tls: bool = True

    def required_files(self) -> dict[str, Path]:
        return {"secret_file": self.secret_file} if self.secret_file else {}


class AppriseChannelConfig(AlertChannelBase):
    """Any service Apprise knows (Telegram, Discord, Teams, ntfy, Gotify, ...)."""

    type: Literal["apprise"]
    urls_file: AbsoluteFile  # one Apprise URL a line: each holds a token

    def required_files(self) -> dict[str, Path]:
        return {"urls_file": self.urls_file}

    def problems(self) -> list[str]:
        if not self.urls_file.is_file():
            return []  # said by required_files
        from kbackup.apprise_urls import check_urls

        return [f"urls_file: {problem}" for problem in check_urls(self.urls_file)]


AlertChannelConfig = Annotated[
    EmailChannelConfig | SlackChannelConfig | WebhookChannelConfig | AppriseChannelConfig,
    Field(discriminator="type")
]


class MetricsConfig(Strict):
    listen: str | None = None  # "127.0.0.1:9187": also serve /metrics over TCP (no auth)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT like '127.0.0.1:9187', got {value!r}")
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
