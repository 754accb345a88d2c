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


def test_the_restore_test_login_is_its_own_server_user_and_password(tmp_path: Path) -> None:
    own, other = tmp_path / "pw", tmp_path / "verify-pw"
    own.write_text("source secret\n")
    other.write_text("verify secret\n")
    source = MysqlSource(name="main", host="db.example", user="backup", password_file=own,
                         databases="*", restore_test={"socket": "/run/verify.sock",
                                                      "user": "verifier",
                                                      "password_file": str(other)})
    text = Login.for_restore_test(source).options()
    assert 'user="verifier"' in text and 'password="verify secret"' in text
    assert 'socket="/run/verify.sock"' in text and "protocol=socket" in text
    assert "db.example" not in text and "backup" not in text and "source secret" not in text
    assert Login.for_restore_test(source).label() == \
        "mysql main (restore_test server /run/verify.sock)"
    # Without restore_test, restore-tests log in as the source.
    plain = source.model_copy(update={"restore_test": None})
    assert Login.for_restore_test(plain).options() == Login(plain).options()
