"""jobs.d/NAME.toml: schedules, sources, compression, encryption, retention, verification."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from kbackup.config.health import JobThresholds, NotifyOn
from kbackup.config.heartbeat import JobHeartbeatConfig
from kbackup.config.hooks import HooksConfig
from kbackup.fields import (
    Name,
    Seconds,
    SourceConfig,
    Strict,
    Timezone,
    check_cron,
    check_dsn,
)
from kbackup.sources.registry import config_models
from kbackup.units import parse_duration
from kbackup.verify_levels import AfterBackupLevel, VerifyLevel


class Schedule(Strict):
    cron: str
    tag: Name = "scheduled"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return check_cron(value)


class CompressionConfig(Strict):
    algorithm: Literal["zstd"] = "zstd"
    # Level 1: the dump must not wait for the compressor on a small server (bench/ compares).
    level: int = Field(default=1, ge=1, le=19)
    threads: int = Field(default=0, ge=0, le=64)  # 0 = one per CPU


FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")


class EncryptionConfig(Strict):
    mode: Literal["none", "gpg-symmetric", "gpg-recipients"] = "none"
    cipher: Literal["AES256", "AES192", "AES128", "CAMELLIA256", "TWOFISH"] = "AES256"
    passphrase_file: Path | None = None
    passphrase_credential: str | None = None
    recipients: list[str] = Field(default_factory=list)
    keyring_dir: Path | None = None
    public_key_files: list[Path] = Field(default_factory=list)
    # Only where restores and verifications run; never needed to back up.
    secret_keyring_dir: Path | None = None
    secret_key_file: Path | None = None
    secret_key_passphrase_file: Path | None = None

    @field_validator("recipients")
    @classmethod
    def _full_fingerprints(cls, value: list[str]) -> list[str]:
        for item in value:
            if not FINGERPRINT.match(item.replace(" ", "")):
                raise ValueError(f"{item!r} is not a full fingerprint; expected 40 hex digits"
                                 " (gpg --list-keys --with-colons shows them)")
        return [item.replace(" ", "").upper() for item in value]

    @model_validator(mode="after")
    def _mode_needs(self) -> EncryptionConfig:
        if self.mode == "gpg-symmetric" and not (self.passphrase_file or
                                                 self.passphrase_credential):
            raise ValueError("gpg-symmetric needs passphrase_file or passphrase_credential")
        if self.mode == "gpg-symmetric" and self.passphrase_file and self.passphrase_credential:
            raise ValueError("set passphrase_file or passphrase_credential, not both")
        if self.mode == "gpg-recipients" and not self.recipients:
            raise ValueError("gpg-recipients needs recipients = [\"FINGERPRINT\", ...]")
        return self


def _check_duration_text(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


DurationText = Annotated[str, BeforeValidator(_check_duration_text)]


class RetentionRules(Strict):
    """The keep rules (restic's forget rules), job-wide or for one schedule tag."""

    keep_last: int | None = Field(default=None, ge=1)
    keep_hourly: int | None = Field(default=None, ge=1)
    keep_daily: int | None = Field(default=None, ge=1)
    keep_weekly: int | None = Field(default=None, ge=1)
    keep_monthly: int | None = Field(default=None, ge=1)
    keep_yearly: int | None = Field(default=None, ge=1)
    keep_within: DurationText | None = None

    @property
    def has_rules(self) -> bool:
        return any(getattr(self, f"keep_{n}") for n in
                   ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within"))

    @property
    def within_seconds(self) -> float | None:
        return parse_duration(self.keep_within) if self.keep_within else None


class RetentionConfig(RetentionRules):
    """Which backups prune keeps; nothing set = keep everything.

    [retention.tags.TAG] holds rules for the backups of one schedule tag (30 dailies, 12
    monthlies); a backup kept by any rule, job-wide or of its tag, stays."""

    min_keep: int = Field(default=1, ge=0)
    keep_pre_restore: DurationText = "7d"
    tags: dict[Name, RetentionRules] = Field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.has_rules or any(rules.has_rules for rules in self.tags.values())

    @property
    def pre_restore_seconds(self) -> float:
        return parse_duration(self.keep_pre_restore)




class VerifyConfig(Strict):
    after_backup: AfterBackupLevel = "checksum"
    schedule: str | None = None
    level: VerifyLevel = "restore-test"
    restore_dsn: str | None = None
    restore_password_file: Path | None = None
    sql_checks: list[str] = Field(default_factory=list)

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("restore_dsn")
    @classmethod
    def _no_inline_secret(cls, value: str | None) -> str | None:
        return check_dsn(value)


class _JobHead(Strict):
    name: Name
    schedules: list[Schedule] = Field(default_factory=list)
    timezone: Timezone | None = None
    targets: list[Name] = Field(min_length=1)
    timeout: Seconds = 6 * 3600.0
    compression: CompressionConfig = CompressionConfig()
    verify: VerifyConfig = VerifyConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    retention: RetentionConfig = RetentionConfig()
    hooks: HooksConfig = HooksConfig()  # issue 17: commands around backups and restores
    heartbeat: JobHeartbeatConfig | None = None  # issue 19: pings to an external monitor


# One list field per registered source table ([[postgres]], [[files]], ...), in backup order.
_JobWithSources: type[_JobHead] = create_model(  # type: ignore[call-overload]
    "_JobWithSources", __base__=_JobHead,
    **{table: (list[model], Field(default_factory=list))  # type: ignore[valid-type]
       for table, model in config_models().items()},
)

DEFAULT_NOTIFY_ON: tuple[NotifyOn, ...] = ("failure", "recovery")


class JobAlertsConfig(Strict):
    """A job's [alerts] (issue 19): which channels of kbackupd.toml hear about this job (its
    health alerts and its run results), and, by channel name, which run results each one
    hears about ([alerts.notify_on], e.g. success to the owner, failures to on-call). That
    the names are configured channels is checked by load_config, against kbackupd.toml."""

    channels: list[Name] | None = None  # None: every channel
    notify_on: dict[Name, list[NotifyOn]] = Field(default_factory=dict)

    @field_validator("notify_on")
    @classmethod
    def _routed(cls, value: dict[str, list[NotifyOn]],
                info: ValidationInfo) -> dict[str, list[NotifyOn]]:
        channels: list[str] | None = info.data.get("channels")
        if channels is None:  # every channel (or channels itself is wrong, said there)
            return value
        for name in value:
            if name not in channels:
                raise ValueError(f"channel {name!r} is not in alerts.channels"
                                 f" ({', '.join(channels) or 'empty'}): add it there")
        return value


class JobConfig(_JobWithSources):  # type: ignore[valid-type,misc]
    thresholds: JobThresholds = JobThresholds()  # issue 6: overrides
    notify_on: list[NotifyOn] = Field(default_factory=lambda: list(DEFAULT_NOTIFY_ON))
    alerts: JobAlertsConfig | None = None  # issue 19: routing; None: every channel, notify_on

    def hears(self, channel: str) -> bool:
        """Whether this job's alerts and run results go to `channel` at all."""
        return self.alerts is None or self.alerts.channels is None or \
            channel in self.alerts.channels

    @property
    def sources(self) -> list[SourceConfig]:
        """Every source of the job with its kind (`.kind`), in backup order: the registry's
        order of tables, each table in the file's order."""
        return [s for table in config_models() for s in getattr(self, table)]

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def with_only_sources(self, names: set[str]) -> JobConfig:
        """A copy of the job backing up only these sources (a pre-restore safety backup)."""
        return self.model_copy(update={
            table: [s for s in getattr(self, table) if s.name in names]
            for table in config_models()})

    @model_validator(mode="after")
    def _components(self) -> JobConfig:
        names = [s.name for s in self.sources]
        if not names:
            tables = " or ".join(f"[[{t}]]" for t in config_models())
            raise ValueError(f"a job needs at least one {tables} source")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be unique within a job: {', '.join(dupes)}")
        return self
