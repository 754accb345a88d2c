"""kbackupd.toml [storage.NAME]: one model per backend type (local, s3, webdav)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from kbackup.fields import AbsoluteDir, AbsoluteFile, Bytes, HttpUrl, MiB, Seconds, Strict


class LocalStorageConfig(Strict):
    type: Literal["local"]
    path: AbsoluteDir
    append_only: bool = False  # kbackupd never deletes here (see `no_delete`)

    def required_files(self) -> dict[str, Path]:
        return {}

    @property
    def no_delete(self) -> bool:
        """kbackupd never deletes on this target: retention waits for `kbackupctl prune
        --target` run by someone who may (README "Append-only targets")."""
        return self.append_only


class RemoteStorageConfig(Strict):
    """What every network backend shares: bounded retries of transient failures."""

    retries: int = Field(default=5, ge=0, le=50)
    retry_max_seconds: Seconds = 60.0
    timeout: Seconds = 120.0  # per request: connect, or no progress for this long
    append_only: bool = False  # kbackupd never deletes here (see `no_delete`)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        inline = [k for k in ("password", "secret_access_key", "access_key_id",
                              "delete_password", "delete_secret_access_key",
                              "delete_access_key_id") if k in data]
        if inline:
            raise ValueError(
                f"{inline[0]} must not be written here: put it in a file and set {inline[0]}_file"
            )
        return data

    def required_files(self) -> dict[str, Path]:
        """Files that must exist (secrets, CA bundles): load_config checks them."""
        return {}

    def delete_files(self) -> dict[str, Path]:
        """The credentials used only for deleting (`kbackupctl prune --target`): the daemon
        need not be able to read them, so load_config does not check them."""
        return {}

    @property
    def no_delete(self) -> bool:
        """kbackupd never deletes on this target: `append_only`, or deleting takes other
        credentials than the daemon's (README "Append-only targets")."""
        return self.append_only or bool(self.delete_files())


class ObjectLockConfig(Strict):
    """`object_lock = { mode = "governance", days = 30 }`: every object of a backup is
    written with S3 Object Lock until the backup's start + days (`retain`, a duration such
    as "36h", instead of `days`). compliance: nobody can delete it earlier; governance: only
    a caller allowed to bypass governance retention can (kbackup never asks to)."""

    mode: Literal["governance", "compliance"]
    days: int | None = Field(default=None, ge=1, le=36500)
    retain: Seconds | None = None

    @model_validator(mode="after")
    def _one_duration(self) -> ObjectLockConfig:
        if (self.days is None) == (self.retain is None):
            raise ValueError("expected exactly one of days (a number of days) and retain"
                             " (a duration like '30d')")
        return self

    @property
    def seconds(self) -> float:
        return self.days * 86400.0 if self.days is not None else float(self.retain or 0)


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
    object_lock: ObjectLockConfig | None = None
    delete_access_key_id_file: AbsoluteFile | None = None  # only `kbackupctl prune --target`
    delete_secret_access_key_file: AbsoluteFile | None = None

    @model_validator(mode="after")
    def _delete_keys(self) -> S3StorageConfig:
        if (self.delete_access_key_id_file is None) != (self.delete_secret_access_key_file
                                                        is None):
            raise ValueError("expected both delete_access_key_id_file and"
                             " delete_secret_access_key_file, or neither")
        return self

    def delete_files(self) -> dict[str, Path]:
        if self.delete_access_key_id_file is None or self.delete_secret_access_key_file is None:
            return {}
        return {"access_key_id": self.delete_access_key_id_file,
                "secret_access_key": self.delete_secret_access_key_file}

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
    delete_username: str | None = Field(default=None, min_length=1)  # default: username
    delete_password_file: AbsoluteFile | None = None  # only `kbackupctl prune --target`

    @model_validator(mode="after")
    def _delete_login(self) -> WebDAVStorageConfig:
        if self.delete_username is not None and self.delete_password_file is None:
            raise ValueError("delete_username needs delete_password_file")
        return self

    def delete_files(self) -> dict[str, Path]:
        if self.delete_password_file is None:
            return {}
        return {"password": self.delete_password_file}

    def required_files(self) -> dict[str, Path]:
        files = {"password_file": self.password_file}
        if self.ca_file is not None:
            files["ca_file"] = self.ca_file
        return files


StorageConfig = Annotated[
    LocalStorageConfig | S3StorageConfig | WebDAVStorageConfig, Field(discriminator="type")
]
