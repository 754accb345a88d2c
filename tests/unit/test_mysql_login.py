"""The login given to mariadb-dump / mariadb: a private defaults file (0600 in a 0700
directory, the password quoted), never a command-line argument; removed afterwards."""

from __future__ import annotations

import stat
from pathlib import Path

from kbackup.sources.mysql.client import Login
from kbackup.sources.mysql.config import MysqlSource


def test_defaults_file_is_private_quoted_and_removed(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text('p"a\\ss word\n')
    source = MysqlSource(name="main", host="db.example", port=3307, user="backup",
                         password_file=secret, databases="*")
    with Login(source).defaults_file() as option:
        assert option.startswith("--defaults-extra-file=")
        path = Path(option.split("=", 1)[1])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        text = path.read_text()
        assert 'password="p\\"a\\\\ss word"' in text
        assert 'host="db.example"' in text and "port=3307" in text and "protocol=tcp" in text
        assert "p\"a" not in option
    assert not path.exists() and not path.parent.exists()
