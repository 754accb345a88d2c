"""Append-only targets (issue 20): the config fields, and health's INFO severity (said, but
counted as OK)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from kbackup.config import StorageConfig
from kbackup.config.jobs import JobConfig
from kbackup.health import check_waiting
from kbackup.health_facts import INFO, OK, WARNING, Facts, worst


def test_append_info_is_never_the_worst() -> None:
    assert worst([INFO, OK]) == OK
    assert worst([OK, INFO]) == OK
    assert worst([INFO, WARNING, OK]) == WARNING
    assert worst([]) == OK


def test_append_waiting_backups_are_one_info_check_per_target() -> None:
    job = JobConfig.model_validate({"name": "docs", "targets": ["offsite", "local"],
                                    "files": [{"name": "d", "path": "/srv/d"}]})
    facts = Facts(now=datetime.now(UTC), waiting={("docs", "offsite"): ["a", "b"],
                                                  ("docs", "local"): [],
                                                  ("other", "offsite"): ["c"]})
    [check] = check_waiting(job, facts)
    assert (check.check, check.target, check.severity) == ("retention_waiting", "offsite", INFO)
    assert check.reason == "2 backups past retention wait on append-only target offsite"
    assert check.details == ("a", "b")
    assert check_waiting(job, Facts(now=facts.now)) == []


def storage(table: dict[str, Any]) -> Any:
    return TypeAdapter(StorageConfig).validate_python(table)


S3 = {"type": "s3", "bucket": "vault", "access_key_id_file": "/etc/k/id",
      "secret_access_key_file": "/etc/k/secret"}
DAV = {"type": "webdav", "url": "https://nas/dav", "username": "kb",
       "password_file": "/etc/k/dav"}


def test_append_config_delete_credentials_make_a_target_append_only() -> None:
    assert not storage(S3).no_delete and not storage(DAV).no_delete
    assert storage({"type": "local", "path": "/b", "append_only": True}).no_delete
    assert storage({**S3, "append_only": True}).no_delete
    s3 = storage({**S3, "delete_access_key_id_file": "/root/d/id",
                  "delete_secret_access_key_file": "/root/d/secret"})
    assert s3.no_delete and s3.required_files() == {
        "access_key_id_file": Path("/etc/k/id"), "secret_access_key_file": Path("/etc/k/secret")}
    assert s3.delete_files() == {"access_key_id": Path("/root/d/id"),
                                 "secret_access_key": Path("/root/d/secret")}
    dav = storage({**DAV, "delete_password_file": "/root/d/dav"})
    assert dav.no_delete and dav.delete_files() == {"password": Path("/root/d/dav")}


@pytest.mark.parametrize(("table", "expected"), [
    ({**S3, "delete_access_key_id_file": "/root/d/id"},
     "expected both delete_access_key_id_file and delete_secret_access_key_file, or neither"),
    ({**DAV, "delete_username": "admin"}, "delete_username needs delete_password_file"),
    ({**DAV, "delete_password": "x"},
     "delete_password must not be written here: put it in a file and set"
     " delete_password_file"),
    ({**S3, "delete_access_key_id_file": "relative", "delete_secret_access_key_file": "/a"},
     "absolute"),
])
def test_append_config_mistakes_are_one_line(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        storage(table)
    assert expected in str(refused.value)
