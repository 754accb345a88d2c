"""Configuration: kbackupd.toml plus one job per file in jobs.d/.

Everything a user can get wrong is checked here, before any work starts, and reported as one
line per problem naming the file, the field and what is expected. Secrets never live in these
files: only paths to files (or systemd credential names) that hold them.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kbackup.units import parse_duration, parse_size

DEFAULT_CONFIG_DIR = Path("/etc/kbackup")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_SECRET_IN_DSN = re.compile(r"(^|\s)password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)

Seconds = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class ConfigError(Exception):
    """A configuration problem; str() is one line per problem, each naming file and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def config_dir_from_env(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("KBACKUP_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r}; expected an IANA name like 'Europe/London'"
        ) from None
    return value


Timezone = Annotated[str, BeforeValidator(_check_timezone)]


def check_cron(value: str) -> str:
    if not croniter.is_valid(value) or len(value.split()) != 5:
        raise ValueError(f"{value!r} is not a cron expression; expected 5 fields like '0 2 * * *'")
    return value


def check_dsn(value: str | None) -> str | None:
    if value is not None and _SECRET_IN_DSN.search(value):
        raise ValueError("the DSN contains a password; put it in a file and set password_file")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- daemon


class DaemonSection(Strict):
    socket: Path = Path("/run/kbackup/kbackupd.sock")
    socket_group: str | None = "kbackup"
    admin_group: str | None = "kbackup-admin"
    state_dir: Path = Path("/var/lib/kbackup")
    staging_dir: Path | None = None
    max_concurrent_jobs: int = Field(default=2, ge=1, le=64)
    timezone: Timezone = "UTC"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace: Seconds = 20.0


class LocalStorageConfig(Strict):
    type: Literal["local"]
    path: Path

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"expected an absolute directory path, got {str(value)!r}")
        return value

    def required_files(self) -> dict[str, Path]:
        return {}


MiB = 1024 * 1024
Bytes = Annotated[int, BeforeValidator(parse_size)]


def _absolute_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_absolute():
        raise ValueError(f"expected an absolute file path, got {str(value)!r}")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if parts.password is not None:
        raise ValueError("the URL contains a password; put secrets in files (*_file fields)")
    return value


AbsoluteFile = Annotated[Path, AfterValidator(_absolute_file)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class RemoteStorageConfig(Strict):
    """What every network backend shares: bounded retries of transient failures."""

    retries: int = Field(default=5, ge=0, le=50)
    retry_max_seconds: Seconds = 60.0
    timeout: Seconds = 120.0  # per request: connect, or no progress for this long

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        inline = [k for k in ("password", "secret_access_key", "access_key_id") if k in data]
        if inline:
            raise ValueError(
                f"{inline[0]} must not be written here: put it in a file and set {inline[0]}_file"
            )
        return data

    def required_files(self) -> dict[str, Path]:
        """Files that must exist (secrets, CA bundles): load_config checks them."""
        return {}


class S3StorageConfig(RemoteStorageConfig):
    """An S3 bucket (AWS or compatible: MinIO, Ceph, Wasabi, Backblaze B2, ...)."""

    type: Literal["s3"]
    endpoint_url: HttpUrl | None = None  # None: AWS for `region`
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,64}$")
    bucket: str
    prefix: str = ""
    access_key_id_file: AbsoluteFile
    secret_access_key_file: AbsoluteFile
    path_style: bool = True
    storage_class: str | None = None
    part_size: Bytes = 16 * MiB
    max_in_flight: int = Field(default=2, ge=1, le=16)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}", value):
            raise ValueError(
                f"expected a bucket name (3-63 letters, digits, '.', '-'), got {value!r}"
            )
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z][A-Z_]*", value):
            raise ValueError(f"expected an S3 storage class like 'STANDARD_IA', got {value!r}")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        """Normalised to "" or "a/b/": keys are always prefix + key."""
        parts = value.strip("/").split("/") if value.strip("/") else []
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"expected a key prefix like 'kbackup/' without empty, '.' or '..' parts,"
                f" got {value!r}"
            )
        return "".join(p + "/" for p in parts)

    @field_validator("part_size")
    @classmethod
    def _part_size(cls, value: int) -> int:
        if not 5 * MiB <= value <= 5 * 1024 * MiB:
            raise ValueError("expected a part size between 5MiB (the S3 minimum) and 5GiB")
        return value

    def required_files(self) -> dict[str, Path]:
        return {
            "access_key_id_file": self.access_key_id_file,
            "secret_access_key_file": self.secret_access_key_file,
        }


class WebDAVStorageConfig(RemoteStorageConfig):
    """A WebDAV collection, e.g. Nextcloud's https://host/remote.php/dav/files/USER/Backups."""

    type: Literal["webdav"]
    url: HttpUrl
    username: str = Field(min_length=1)
    password_file: AbsoluteFile
    verify_tls: bool = True
    ca_file: AbsoluteFile | None = None

    def required_files(self) -> dict[str, Path]:
        files = {"password_file": self.password_file}
        if self.ca_file is not None:
            files["ca_file"] = self.ca_file
        return files


StorageConfig = Annotated[
    LocalStorageConfig | S3StorageConfig | WebDAVStorageConfig, Field(discriminator="type")
]


# ----------------------------------------------------------------------------- health, alerts
# Issue 6: [thresholds], [alerts.NAME] channels, [metrics]; job-level [thresholds] + notify_on.
# Interpreted by health.py and alerts/; kept as one block so other edits stay apart.

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


class ThresholdsConfig(Strict):
    """kbackupd.toml [thresholds]: defaults for every job, plus the disk limits."""

    max_backup_age: Seconds | None = None  # None: the largest gap between scheduled runs + 25%
    max_failure_rate: Ratio = 0.1
    failure_window: Seconds = 7 * 86400.0
    failure_min_runs: int = Field(default=5, ge=1)
    max_duration: Seconds | None = None
    min_size_ratio: Ratio = 0.5
    schedule_grace: Seconds = 600.0
    min_free_disk: DiskThreshold = "10%"
    disk_forecast: Seconds = 7 * 86400.0  # warn when a disk fills up within this

    def for_job(self, job: JobThresholds) -> ThresholdsConfig:
        """These thresholds with the job's overrides applied."""
        return self.model_copy(update=job.model_dump(exclude_none=True))


class AlertChannelBase(Strict):
    min_severity: Severity = "warning"
    repeat_interval: Seconds = 86400.0  # a firing alert is sent again after this
    timeout: Seconds = 15.0  # per attempt
    retries: int = Field(default=3, ge=0, le=10)
    retry_delay: Seconds = 2.0  # doubles after each failed attempt

    def required_files(self) -> dict[str, Path]:
        return {}


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


AlertChannelConfig = Annotated[
    EmailChannelConfig | SlackChannelConfig | WebhookChannelConfig, Field(discriminator="type")
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


class DaemonSettings(BaseSettings):
    """kbackupd.toml. Environment variables KBACKUP_DAEMON__<FIELD> override single fields."""

    model_config = SettingsConfigDict(
        env_prefix="KBACKUP_", env_nested_delimiter="__", extra="forbid"
    )

    daemon: DaemonSection = DaemonSection()
    storage: dict[Name, StorageConfig] = Field(default_factory=dict)
    thresholds: ThresholdsConfig = ThresholdsConfig()  # issue 6: health
    alerts: dict[Name, AlertChannelConfig] = Field(default_factory=dict)
    metrics: MetricsConfig = MetricsConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


# ----------------------------------------------------------------------------- jobs


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
    path: Path
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = False

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"expected an absolute directory path, got {str(value)!r}")
        return value


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


class RetentionConfig(Strict):
    """Which backups prune keeps (restic's forget rules); nothing set = keep everything."""

    keep_last: int | None = Field(default=None, ge=1)
    keep_hourly: int | None = Field(default=None, ge=1)
    keep_daily: int | None = Field(default=None, ge=1)
    keep_weekly: int | None = Field(default=None, ge=1)
    keep_monthly: int | None = Field(default=None, ge=1)
    keep_yearly: int | None = Field(default=None, ge=1)
    keep_within: DurationText | None = None
    min_keep: int = Field(default=1, ge=0)
    keep_pre_restore: DurationText = "7d"

    @property
    def configured(self) -> bool:
        return any(getattr(self, f"keep_{n}") for n in
                   ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within"))

    @property
    def within_seconds(self) -> float | None:
        return parse_duration(self.keep_within) if self.keep_within else None

    @property
    def pre_restore_seconds(self) -> float:
        return parse_duration(self.keep_pre_restore)


VerifyLevel = Literal["checksum", "structure", "restore-test"]


class VerifyConfig(Strict):
    after_backup: Literal["none", "checksum", "structure", "restore-test"] = "checksum"
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


class Config(BaseModel):
    """The whole, validated configuration as the daemon uses it."""

    directory: Path
    settings: DaemonSettings
    jobs: dict[str, JobConfig]

    @property
    def daemon(self) -> DaemonSection:
        return self.settings.daemon

    @property
    def storage(self) -> dict[str, StorageConfig]:
        return self.settings.storage

    def job_timezone(self, job: JobConfig) -> ZoneInfo:
        return ZoneInfo(job.timezone or self.daemon.timezone)

    def redacted_snapshot(self, job: JobConfig) -> dict[str, Any]:
        """What a backup stores about its configuration: paths to secrets, never their content."""
        return {
            "captured_at": datetime.now().astimezone().isoformat(),
            "job": job.model_dump(mode="json"),
            "daemon": self.daemon.model_dump(mode="json"),
            "storage": {
                name: self.storage[name].model_dump(mode="json")
                for name in job.targets
                if name in self.storage
            },
        }


# ----------------------------------------------------------------------------- loading


def _format_errors(path: Path, error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        loc = list(item["loc"])
        if len(loc) >= 3 and loc[0] in ("storage", "alerts"):
            del loc[2]  # pydantic inserts the union tag ("local", "s3") after the target name
        location = ".".join(str(p) for p in loc) or "-"
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif "input" in item and item["type"] not in ("value_error", "union_tag_invalid"):
            message = f"{message} (got {item['input']!r})"
        problems.append(f"{path}: {location}: {message}")
    return problems


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


def load_config(directory: str | os.PathLike[str] | None = None) -> Config:
    """Read and check the whole configuration; raise ConfigError listing every problem found."""
    config_dir = config_dir_from_env(directory)
    problems: list[str] = []
    main_file = config_dir / "kbackupd.toml"
    settings: DaemonSettings | None = None
    if not config_dir.is_dir():
        raise ConfigError([f"{config_dir}: config directory does not exist"])
    try:
        raw = _read_toml(main_file) if main_file.exists() else {}
        settings = DaemonSettings(**raw)
    except ConfigError as exc:
        problems += exc.problems
    except ValidationError as exc:
        problems += _format_errors(main_file, exc)

    for target_name, target in (settings.storage if settings is not None else {}).items():
        for field, secret in target.required_files().items():
            if not secret.is_file():
                problems.append(
                    f"{main_file}: storage.{target_name}.{field}: {secret}"
                    " does not exist or is not a file"
                )
    for channel_name, channel in (settings.alerts if settings is not None else {}).items():
        for field, secret in channel.required_files().items():  # issue 6: alert channels
            if not secret.is_file():
                problems.append(f"{main_file}: alerts.{channel_name}.{field}: {secret}"
                                " does not exist or is not a file")

    jobs: dict[str, JobConfig] = {}
    job_files: dict[str, Path] = {}
    jobs_dir = config_dir / "jobs.d"
    for path in sorted(jobs_dir.glob("*.toml")) if jobs_dir.is_dir() else []:
        try:
            raw = _read_toml(path)
            raw.setdefault("name", path.stem)
            job = JobConfig(**raw)
        except ConfigError as exc:
            problems += exc.problems
            continue
        except ValidationError as exc:
            problems += _format_errors(path, exc)
            continue
        if job.name in jobs:
            problems.append(
                f"{path}: name: job {job.name!r} is already defined in {job_files[job.name]}"
            )
            continue
        jobs[job.name] = job
        job_files[job.name] = path
        if settings is not None:
            for index, target in enumerate(job.targets):
                if target not in settings.storage:
                    known = ", ".join(sorted(settings.storage)) or "none defined"
                    problems.append(
                        f"{path}: targets.{index}: unknown storage target {target!r}"
                        f" (kbackupd.toml defines: {known})"
                    )
        secret_files = [(f"postgres.{s.name}.{field}", getattr(s, field))
                        for s in job.postgres for field in ("password_file",
                                                            "restore_password_file")]
        secret_files.append(("verify.restore_password_file", job.verify.restore_password_file))
        secret_files.append(("encryption.passphrase_file", job.encryption.passphrase_file))
        secret_files += [(f"encryption.public_key_files.{i}", f)
                         for i, f in enumerate(job.encryption.public_key_files)]
        for field, secret in secret_files:
            if secret is not None and not secret.is_file():
                problems.append(f"{path}: {field}: {secret} does not exist or is not a file")
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return Config(directory=config_dir, settings=settings, jobs=jobs)


def read_secret_file(path: Path) -> str:
    """The first line of a secret file, without its newline. Never logged."""
    try:
        return path.read_text().splitlines()[0] if path.stat().st_size else ""
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
