"""Configuration: kbackupd.toml plus one job per file in jobs.d/.

Everything a user can get wrong is checked here, before any work starts, and reported as one
line per problem naming the file, the field and what is expected. Secrets never live in these
files: only paths to files (or systemd credential names) that hold them. The models live in
fields.py (shared types), storage.py, health.py (thresholds, alerts, metrics) and jobs.py; this
module holds the daemon's own section, the whole Config, and loading.
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kbackup.config.health import (
    AlertChannelConfig,
    AppriseChannelConfig,
    EmailChannelConfig,
    JobThresholds,
    MetricsConfig,
    NotifyOn,
    SlackChannelConfig,
    ThresholdsConfig,
    WebhookChannelConfig,
)
from kbackup.config.heartbeat import DaemonHeartbeatConfig, JobHeartbeatConfig
from kbackup.config.jobs import (
    CompressionConfig,
    EncryptionConfig,
    JobConfig,
    RetentionConfig,
    Schedule,
    VerifyConfig,
    VerifyLevel,
)
from kbackup.config.storage import (
    LocalStorageConfig,
    S3StorageConfig,
    StorageConfig,
    WebDAVStorageConfig,
)
from kbackup.config.web import WebSection
from kbackup.fields import (
    DEFAULT_CONFIG_DIR,
    ConfigError,
    Name,
    Seconds,
    Strict,
    Timezone,
    config_dir_from_env,
    read_secret_file,
)

__all__ = [
    "DEFAULT_CONFIG_DIR", "AlertChannelConfig", "AppriseChannelConfig", "CompressionConfig",
    "Config", "ConfigError",
    "DaemonHeartbeatConfig", "DaemonSection", "DaemonSettings", "EmailChannelConfig",
    "EncryptionConfig",
    "JobConfig", "JobHeartbeatConfig", "JobThresholds", "LocalStorageConfig", "MetricsConfig",
    "RetentionConfig", "S3StorageConfig", "Schedule", "SlackChannelConfig", "StorageConfig",
    "ThresholdsConfig", "VerifyConfig", "VerifyLevel", "WebDAVStorageConfig",
    "WebSection", "WebhookChannelConfig", "load_config", "read_secret_file",
]


SEVERITY_ORDER = ("info", "warning", "critical")
RUN_SEVERITY: dict[str, str] = {"failure": "critical", "recovery": "critical", "success": "info"}


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
    web: WebSection = WebSection()  # issue 18: the TCP listener
    heartbeat: DaemonHeartbeatConfig | None = None  # issue 19: the dead-man's switch

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

    def run_routes(self, job: JobConfig) -> dict[str, list[NotifyOn]]:
        """Channel -> the run results of `job` it hears about, for every channel the job's
        [alerts] routes to. A channel named in [alerts.notify_on] gets what is written there,
        whatever its min_severity (it was asked for by name); any other gets the job's
        notify_on as far as its min_severity lets through (failure and recovery count as
        critical, success as info), as before routing existed."""
        explicit = job.alerts.notify_on if job.alerts is not None else {}
        routes: dict[str, list[NotifyOn]] = {}
        for name, channel in sorted(self.settings.alerts.items()):
            if not job.hears(name):
                continue
            if name in explicit:
                routes[name] = list(explicit[name])
                continue
            floor = SEVERITY_ORDER.index(channel.min_severity)
            routes[name] = [what for what in job.notify_on
                            if SEVERITY_ORDER.index(RUN_SEVERITY[what]) >= floor]
        return routes

    def redacted_snapshot(self, job: JobConfig) -> dict[str, Any]:
        """What a backup stores about its configuration: paths to secrets, never their content."""
        return {
            "captured_at": datetime.now().astimezone().isoformat(),
            # Not [heartbeat]: where the ping URLs live is nothing a restore needs.
            "job": job.model_dump(mode="json", exclude={"heartbeat"}),
            "daemon": self.daemon.model_dump(mode="json"),
            "storage": {
                name: self.storage[name].model_dump(mode="json")
                for name in job.targets
                if name in self.storage
            },
        }


def _format_errors(path: Path, error: ValidationError,
                   tagged: tuple[str, ...] = ("storage", "alerts")) -> list[str]:
    """One line per error; `tagged`: the file's tables of tagged unions (kbackupd.toml's)."""
    problems = []
    for item in error.errors():
        loc = list(item["loc"])
        if len(loc) >= 3 and loc[0] in tagged:
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


def _missing_files(path: Path, section: str,
                   model: DaemonHeartbeatConfig | JobHeartbeatConfig) -> list[str]:
    return [f"{path}: {section}.{field}: {file} does not exist or is not a file"
            for field, file in model.required_files().items() if not file.is_file()]


def _routing_problems(path: Path, job: JobConfig, settings: DaemonSettings) -> list[str]:
    """A job's [alerts] naming a channel kbackupd.toml does not configure (issue 19)."""
    if job.alerts is None:
        return []
    known = ", ".join(sorted(settings.alerts)) or "none"
    named = [(f"alerts.channels.{i}", name) for i, name in enumerate(job.alerts.channels)] \
        if job.alerts.channels is not None else \
        [(f"alerts.notify_on.{name}", name) for name in job.alerts.notify_on]
    return [f"{path}: {field}: no alert channel {name!r} in kbackupd.toml (configured:"
            f" {known})" for field, name in named if name not in settings.alerts]


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
        problems += [f"{main_file}: alerts.{channel_name}.{problem}"
                     for problem in channel.problems()]

    if settings is not None:
        problems += settings.web.problems(main_file)
        if settings.heartbeat is not None:
            problems += _missing_files(main_file, "heartbeat", settings.heartbeat)

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
            problems += _format_errors(path, exc, tagged=())
            continue
        if job.name in jobs:
            problems.append(
                f"{path}: name: job {job.name!r} is already defined in {job_files[job.name]}"
            )
            continue
        jobs[job.name] = job
        job_files[job.name] = path
        if settings is not None:
            for index, target_name in enumerate(job.targets):
                if target_name not in settings.storage:
                    known = ", ".join(sorted(settings.storage)) or "none defined"
                    problems.append(
                        f"{path}: targets.{index}: unknown storage target {target_name!r}"
                        f" (kbackupd.toml defines: {known})"
                    )
            problems += _routing_problems(path, job, settings)
        schedule_tags = sorted({s.tag for s in job.schedules})
        for tag in job.retention.tags:  # issue 13: retention per schedule tag
            if tag not in schedule_tags:
                problems.append(f"{path}: retention.tags.{tag}: not a schedule tag of this job"
                                f" (its schedules have: {', '.join(schedule_tags) or 'none'})")
        if job.heartbeat is not None:
            problems += _missing_files(path, "heartbeat", job.heartbeat)
        secret_files: list[tuple[str, Path | None]] = [
            item for source in job.sources for item in source.secret_files()]
        secret_files.append(("verify.restore_password_file", job.verify.restore_password_file))
        secret_files.append(("encryption.passphrase_file", job.encryption.passphrase_file))
        secret_files += [(f"encryption.public_key_files.{i}", f)
                         for i, f in enumerate(job.encryption.public_key_files)]
        for field, secret_file in secret_files:
            if secret_file is not None and not secret_file.is_file():
                problems.append(f"{path}: {field}: {secret_file} does not exist or is not a file")
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return Config(directory=config_dir, settings=settings, jobs=jobs)
