"""What a job's charts read from the catalog: its backups of a period with their durations,
and its passed restore-tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kbackup.catalog import Catalog
from kbackup.times import iso

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_job_history_is_the_period_oldest_first_with_durations(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    for days, job, took in ((100, "shop", 60), (30, "shop", 90), (2, "shop", 120),
                            (2, "crm", 5)):
        started = NOW - timedelta(days=days)
        catalog.upsert_backup(f"{job}-{days}", job, "complete", "scheduled", iso(started),
                              iso(started + timedelta(seconds=took)), 1000 + days, {}, None)
    found = catalog.job_history("shop", NOW - timedelta(days=90))
    assert [(b["id"], b["size_bytes"]) for b in found] == [("shop-30", 1030), ("shop-2", 1002)]
    assert [round(b["seconds"], 1) for b in found] == [90.0, 120.0]  # stored to the second
    assert "manifest" not in found[0]


def test_restore_tests_are_the_passed_ones_with_a_duration(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    catalog.add_verification("v1", "b1", "shop", "restore-test", NOW, True, None, {},
                             restore_seconds=42.0)
    catalog.add_verification("v2", "b2", "shop", "checksum", NOW, True, None, {})
    catalog.add_verification("v3", "b3", "crm", "restore-test", NOW, True, None, {},
                             restore_seconds=7.0)
    found = catalog.restore_tests("shop", NOW - timedelta(days=90))
    assert [(t["backup_id"], t["restore_seconds"]) for t in found] == [("b1", 42.0)]
    assert catalog.restore_tests("shop", datetime.now(UTC) + timedelta(days=1)) == []
