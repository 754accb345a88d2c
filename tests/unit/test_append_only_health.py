"""Health's INFO severity (append-only targets, issue 20): said, but counted as OK."""

from __future__ import annotations

from datetime import UTC, datetime

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
