"""jobs.d/NAME.toml: schedules, sources, compression, encryption, retention, verification."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from kbackup.config.fields import (
    AbsoluteDir,
    Name,
    Seconds,
    Strict,
    Timezone,
    check_cron,
    check_dsn,
)
from kbackup.config.health import JobThresholds, NotifyOn
from kbackup.units import parse_duration
from kbackup.verify_levels import AfterBackupLevel, VerifyLevel


class Schedule(Strict):
    cron: str
    tag: Name = "scheduled"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return check_cron(value)


class PostgresSource(Strict):
    name: Name
    dsn: str
    password_file: Path | None = None
    # Restores (and scratch databases) may need more rights than backups: a separate login.
    restore_dsn: str | None = None
    restore_password_file: Path | None = None
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    # Roles and tablespaces the dump's owners and grants need, as their own component.
    globals: bool = True
    include_role_passwords: bool = False
    pg_dumpall: str = "pg_dumpall"
    row_counts: Literal["exact", "none"] = "exact"
    exclude_table_data: list[str] = Field(default_factory=list)

    @field_validator("dsn", "restore_dsn")
    @classmethod
    def _no_inline_secret(cls, value: str | None) -> str | None:
        return check_dsn(value)


class FilesSource(Strict):
    name: Name
    path: AbsoluteDir
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = False


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


class JobConfig(Strict):
    name: Name
    schedules: list[Schedule] = Field(default_factory=list)
    timezone: Timezone | None = None
    targets: list[Name] = Field(min_length=1)
    timeout: Seconds = 6 * 3600.0
    compression: CompressionConfig = CompressionConfig()
    verify: VerifyConfig = VerifyConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    retention: RetentionConfig = RetentionConfig()
    postgres: list[PostgresSource] = Field(default_factory=list)
    files: list[FilesSource] = Field(default_factory=list)
    thresholds: JobThresholds = JobThresholds()  # issue 6: overrides
    notify_on: list[NotifyOn] = Field(default_factory=lambda: ["failure", "recovery"])

    @model_validator(mode="after")
    def _components(self) -> JobConfig:
        names = [s.name for s in self.postgres] + [s.name for s in self.files]
        if not names:
            raise ValueError("a job needs at least one [[postgres]] or [[files]] source")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be unique within a job: {', '.join(dupes)}")
        return self
