"""Real users and groups for tests of who may do what on the daemon's socket.

A session fixture creates (as root, idempotently) the groups kbt-read and kbt-admin and three
system users without a home: kbt-reader (kbt-read), kbt-operator (kbt-read + kbt-admin) and
kbt-stranger (no group). They are left in place for the next run (creation is a no-op when
they already exist). Shared by the API's and the dashboard's tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

from conftest import KbEnv

READ_GROUP, ADMIN_GROUP = "kbt-read", "kbt-admin"
USERS = {
    "kbt-reader": [READ_GROUP],
    "kbt-operator": [READ_GROUP, ADMIN_GROUP],
    "kbt-stranger": [],
}


def _exists(database: str, name: str) -> bool:
    return subprocess.run(["getent", database, name], capture_output=True).returncode == 0


def _run_tolerating_exists(argv: list[str]) -> None:
    # Exit 9 from groupadd/useradd: the name already exists (a parallel session created it).
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode not in (0, 9):
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")


@pytest.fixture(scope="session")
def test_users() -> dict[str, int]:
    if os.geteuid() != 0:
        pytest.skip("creating the test users and groups (useradd/groupadd) needs root")
    for tool in ("useradd", "groupadd", "usermod", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: cannot run kbackupctl as other users")
    for group in (READ_GROUP, ADMIN_GROUP):
        if not _exists("group", group):
            _run_tolerating_exists(["groupadd", "--system", group])
    for user, groups in USERS.items():
        if not _exists("passwd", user):
            argv = ["useradd", "--system", "--no-create-home", "--user-group",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
            if groups:
                argv += ["--groups", ",".join(groups)]
            _run_tolerating_exists([*argv, user])
        # Existing users get exactly the supplementary groups the tests expect.
        subprocess.run(["usermod", "-G", ",".join(groups), user], check=True,
                       capture_output=True)
    return {user: pwd.getpwnam(user).pw_uid for user in USERS}


def grouped_daemon(kb: KbEnv) -> None:
    """kbackupd.toml with socket_group = kbt-read and admin_group = kbt-admin."""
    path = kb.config_dir / "kbackupd.toml"
    text = path.read_text()
    assert 'socket_group = ""' in text and 'admin_group = ""' in text
    path.write_text(text.replace('socket_group = ""', f'socket_group = "{READ_GROUP}"')
                        .replace('admin_group = ""', f'admin_group = "{ADMIN_GROUP}"'))
