"""restore_jobs and max_restore_time: bad values get one line naming file, field and value."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import KBACKUPCTL

JOB = """
targets = ["local"]
{thresholds}
[[postgres]]
name = "shop"
dsn = "host=/var/run/postgresql dbname=shop user=kbackup"
{source}
"""


def check(base: Path, thresholds: str = "", source: str = "", daemon: str = ""
          ) -> subprocess.CompletedProcess[str]:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base}/state"\n[storage.local]\ntype = "local"\n'
        f'path = "{base}/store"\n{daemon}\n')
    (conf / "jobs.d" / "shop.toml").write_text(JOB.format(thresholds=thresholds, source=source))
    return subprocess.run([KBACKUPCTL, "--config-dir", str(conf), "config", "check"],
                          capture_output=True, text=True)


def test_good_values_pass(tmp_path: Path) -> None:
    result = check(tmp_path, '[thresholds]\nmax_restore_time = "30m"', "restore_jobs = 4",
                   '[thresholds]\nmax_restore_time = "2h"')
    assert result.returncode == 0, result.stderr


BAD = [
    ("jobs zero", "", "restore_jobs = 0", "",
     "shop.toml: postgres.0.restore_jobs: Input should be greater than or equal to 1"),
    ("jobs text", "", 'restore_jobs = "all"', "",
     "shop.toml: postgres.0.restore_jobs: Input should be a valid integer"),
    ("negative time", "[thresholds]\nmax_restore_time = -5", "", "",
     "shop.toml: thresholds.max_restore_time: expected a positive duration"),
    ("bad time", '[thresholds]\nmax_restore_time = "soon"', "", "",
     "shop.toml: thresholds.max_restore_time: 'soon' is not a duration"),
    ("daemon default", "", "", "[thresholds]\nmax_restore_time = 0",
     "kbackupd.toml: thresholds.max_restore_time: expected a positive duration"),
]


@pytest.mark.parametrize(("label", "thresholds", "source", "daemon", "expected"), BAD,
                         ids=[b[0] for b in BAD])
def test_bad_values_give_one_line(tmp_path: Path, label: str, thresholds: str, source: str,
                                  daemon: str, expected: str) -> None:
    result = check(tmp_path, thresholds, source, daemon)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert expected in line, line
    assert "Traceback" not in result.stderr
