"""[heartbeat] of a job and of kbackupd.toml: pings to an external monitor (healthchecks.io,
Uptime Kuma push, Cronitor, any URL), so that a dead daemon or machine is noticed by someone
else. The ping URLs carry secrets, so only paths to files holding them live here;
alerts/heartbeat.py sends the pings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kbackup.fields import AbsoluteFile, Seconds, Strict

MIN_EVERY = 1.0  # seconds; tests use "1s", a real monitor expects minutes


class PingConfig(Strict):
    """Where and how pings go; shared by the job's and the daemon's table."""

    url_file: AbsoluteFile  # first line: the ping URL (it is the secret)
    timeout: Seconds = Field(default=10.0, gt=0, le=120)  # per attempt
    retries: int = Field(default=3, ge=0, le=10)
    retry_delay: Seconds = Field(default=2.0, ge=0, le=600)  # doubles after each failure

    def required_files(self) -> dict[str, Path]:
        return {"url_file": self.url_file}


class JobHeartbeatConfig(PingConfig):
    """A job's [heartbeat]. "healthchecks": URL/start when a backup starts, URL on success,
    URL/fail on failure (healthchecks.io, also Cronitor's and Uptime Kuma's plain GETs work
    with "plain"). "plain": only success pings URL; failure pings fail_url_file if set."""

    style: Literal["healthchecks", "plain"] = "healthchecks"
    fail_url_file: AbsoluteFile | None = None

    @model_validator(mode="after")
    def _fail_url_only_plain(self) -> JobHeartbeatConfig:
        if self.fail_url_file is not None and self.style != "plain":
            raise ValueError('fail_url_file is for style = "plain"; style = "healthchecks"'
                             ' pings URL + "/fail" on failure')
        return self

    def required_files(self) -> dict[str, Path]:
        files = super().required_files()
        if self.fail_url_file is not None:
            files["fail_url_file"] = self.fail_url_file
        return files


class DaemonHeartbeatConfig(PingConfig):
    """kbackupd.toml [heartbeat]: one ping every `every` while the daemon runs."""

    every: Seconds = Field(default=300.0, ge=MIN_EVERY, le=7 * 86400)
