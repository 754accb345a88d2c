"""MariaDB/MySQL sources ([[mysql]]) against a private MariaDB server (tests/mariadb_server.py):
backup of every database but the excluded, row counts counted from the dump, verify at each
level, restore into a new database and in place after a safety backup, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from mariadb_server import MariaDb, mariadb  # noqa: F401 - the session fixture

from conftest import KBACKUPCTL, KbEnv

APP_A_ROWS = 3000  # several extended INSERT statements of ~1 MB


def ctl(kb: KbEnv, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """kbackupctl with no terminal on stdin (a destructive restore cannot be confirmed)."""
    return subprocess.run([KBACKUPCTL, "--socket", str(kb.socket), *args], env=kb.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess[str], kb: KbEnv) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n" \
        f"{result.stderr}\n--- daemon log ---\n{kb.logs()[-4000:]}"
    return result.stdout


@pytest.fixture
def apps(mariadb: MariaDb) -> Iterator[MariaDb]:  # noqa: F811
    """app_a (awkward strings, binary, NULLs, a view, a trigger, a routine), app_b (small),
    scratch_x (excluded by the job)."""
    for db in ("app_a", "app_b", "scratch_x"):
        mariadb.sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"
                    " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    mariadb.sql(f"""
CREATE TABLE items (id INT PRIMARY KEY, note TEXT, data BLOB, price DECIMAL(10,2));
CREATE TABLE `odd ``name` (k VARCHAR(40) PRIMARY KEY, v TEXT);
CREATE TABLE empty_one (id INT);
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item INT);
CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW INSERT INTO audit(item)
  VALUES (NEW.id);
CREATE VIEW cheap AS SELECT id, price FROM items WHERE price < 10;
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
SET SESSION max_recursive_iterations = 100000;
INSERT INTO items
  WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {APP_A_ROWS})
  SELECT n, CONCAT('row ', n, ' it''s a),(b; \\n line\\\\ ', REPEAT('x', 300)),
         IF(n % 7 = 0, NULL, UNHEX(CONCAT('00FF27', HEX(n)))), n / 3 FROM seq;
INSERT INTO `odd ``name` VALUES ('(', ');'), ('quote''s', NULL), ('tab\\there', '\\'),'),
  ('ünï', 'ç');
""", "app_a")
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)", "app_b")
    mariadb.sql("CREATE TABLE junk (id INT); INSERT INTO junk VALUES (1)", "scratch_x")
    yield mariadb
    for db in mariadb.databases():
        if db not in ("information_schema", "mysql", "performance_schema", "sys"):
            mariadb.sql(f"DROP DATABASE `{db}`")


def job(server: MariaDb, databases: str = '"*"', extra: str = "") -> str:
    return """
schedules = [ { cron = "0 2 * * *" } ]
targets = ["local"]
timeout = "10m"
""" + server.job_entry(databases=databases, extra=extra or 'exclude = ["scratch_*"]')


def state(server: MariaDb, database: str) -> dict[str, Any]:
    """Every table's rows and checksum, the views and routines: what a restore must bring."""
    tables = server.counts(database)
    return {"counts": tables,
            "checksums": {t: server.checksum(database, t) for t in tables},
            "views": server.sql("SELECT table_name FROM information_schema.views WHERE"
                                f" table_schema = '{database}'"),
            "routines": server.sql("SELECT routine_name FROM information_schema.routines"
                                   f" WHERE routine_schema = '{database}'"),
            "triggers": server.sql("SELECT trigger_name FROM information_schema.triggers"
                                   f" WHERE trigger_schema = '{database}'")}


def stored_components(kb: KbEnv, backup: dict[str, Any]) -> dict[str, Any]:
    """The mysql components as the stored manifest has them."""
    manifest = json.loads((kb.backup_dir(backup) / "manifest.json").read_text())
    return {c["name"]: c for c in manifest["components"] if c["kind"] == "mysql"}


def test_backup_counts_and_restores(kb: KbEnv, apps: MariaDb) -> None:
    kb.write_job("shop", job(apps))
    kb.start()
    backup = kb.run_backup()
    components = stored_components(kb, backup)
    assert sorted(components) == ["main:app_a", "main:app_b"]  # scratch_x excluded
    for name, component in components.items():
        meta = component["database"]
        database = name.split(":")[1]
        assert component["kind"] == "mysql"
        assert meta["row_counts"] == apps.counts(database)
        assert meta["row_counts_from"] == "dump stream"
        assert "MariaDB" in meta["server_version"] and "Distrib" in meta["dump_tool_version"]
        assert meta["collation"] == "utf8mb4_unicode_ci"
    assert components["main:app_a"]["database"]["row_counts"]["items"] == APP_A_ROWS
    assert components["main:app_a"]["database"]["row_counts"]["odd `name"] == 4
    assert components["main:app_a"]["database"]["row_counts"]["empty_one"] == 0
    # By hand, as docs/format.md says: zstd -d | mariadb into a new database.
    stored = kb.backup_dir(backup) / components["main:app_b"]["file"]
    sql = zstandard.ZstdDecompressor().decompressobj().decompress(stored.read_bytes())
    assert sql.rstrip().splitlines()[-1].startswith(b"-- Dump completed")
    assert b"CREATE DATABASE" not in sql
    at_backup = state(apps, "app_a")
    by_hand(kb, backup, apps)

    # Into a new database: identical rows, views, routines, triggers; the original untouched.
    apps.sql("DELETE FROM items WHERE id > 2000; CREATE TABLE extra (x INT)", "app_a")
    live = state(apps, "app_a")
    out = ok(ctl(kb, "restore", "latest", "--job", "shop", "--component", "main:app_a",
                 "--to-database", "copy_a"), kb)
    assert "safety backup" not in out
    assert state(apps, "copy_a") == at_backup
    assert state(apps, "app_a") == live
    refused = ctl(kb, "restore", "latest", "--job", "shop", "--component", "main:app_a",
                  "--to-database", "copy_a", "--yes")
    assert refused.returncode != 0 and "'copy_a' exists and is not empty" in refused.stderr
    bad_name = ctl(kb, "restore", "latest", "--job", "shop", "--component", "main:app_a",
                   "--to-database", "x" * 65)
    assert bad_name.returncode != 0 and "expected a MariaDB database name" in bad_name.stderr

    # In place: a safety backup first, then exactly the backup (the extra table gone).
    out = ok(ctl(kb, "restore", "latest", "--job", "shop", "--component", "main:app_a",
                 "--yes"), kb)
    safety = re.search(r"safety backup of the previous state: (\S+)", out)
    assert safety, out
    assert state(apps, "app_a") == at_backup
    assert not [d for d in apps.databases() if "_kbrestore_" in d or "kbackup_verify" in d]
    shown = kb.ctl_json("show", safety.group(1))
    assert shown["trigger"] == "pre-restore"
    assert stored_components(kb, shown)["main:app_a"]["database"]["row_counts"]["items"] == 2000
    # ...which itself brings the pre-restore state back.
    ok(ctl(kb, "restore", safety.group(1), "--component", "main:app_a", "--yes",
           "--no-safety-backup"), kb)
    assert state(apps, "app_a") == live


def by_hand(kb: KbEnv, backup: dict[str, Any], server: MariaDb) -> None:
    """docs/format.md's MariaDB block, run as written (bash, zstd, mariadb, jq): the
    restored database has the manifest's rows."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text()
    section = doc.split("### A MariaDB / MySQL database", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    folder = kb.backup_dir(backup)
    script = (script.replace("/var/backups/kbackup/shop/2026/12/20261203T020000Z-3fa9c1",
                             str(folder))
              .replace("mysql-app.shop.sql.zst",
                       stored_components(kb, backup)["main:app_a"]["file"])
              .replace('"app:shop"', '"main:app_a"').replace("shop_restored", "by_hand_a"))
    home = kb.base / "home"
    home.mkdir()
    (home / ".my.cnf").write_text(f"[client]\nuser=root\nsocket={server.socket}\n")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, env={**kb.env, "HOME": str(home)}, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest_counts = json.loads(done.stdout.split("\n}", 1)[0] + "}")
    listed = dict(line.split("\t", 1) for line in done.stdout.split("\n}", 1)[1].split("\n")
                  if line.strip())
    assert manifest_counts == server.counts("by_hand_a")
    assert {t: int(n) for t, n in listed.items()} == manifest_counts


def verify(kb: KbEnv, backup_id: str, level: str) -> tuple[int, str]:
    result = ctl(kb, "verify", backup_id, "--level", level, "--wait")
    return result.returncode, result.stdout + result.stderr


def rewrite(kb: KbEnv, backup: dict[str, Any], component: str,
            change_sql: Any = None, change_manifest: Any = None) -> None:
    """Change a stored dump (resealed: checksums still match) or the manifest behind
    kbackup's back, then rescan the catalog."""
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(c for c in manifest["components"] if c["name"] == component)
    if change_sql is not None:
        import hashlib
        path = folder / entry["file"]
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
        data = zstandard.ZstdCompressor().compress(change_sql(raw))
        path.write_bytes(data)
        entry["size_bytes"] = len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
    if change_manifest is not None:
        change_manifest(entry)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0


def test_verify_levels_and_corruption(kb: KbEnv, apps: MariaDb) -> None:
    kb.write_job("shop", job(apps))
    kb.start()
    backup = kb.run_backup()
    for level in ("structure", "restore-test"):
        code, output = verify(kb, backup["id"], level)
        assert code == 0, output + kb.logs()[-3000:]
    details = kb.ctl_json("show", backup["id"])["verifications"][0]["details"]
    assert details["rows_main:app_a"] == sum(apps.counts("app_a").values())
    assert not [d for d in apps.databases() if d.startswith("kbackup_verify")]

    # A row too many in the manifest: structure (counted again) and restore-test see it.
    rewrite(kb, backup, "main:app_b",
            change_manifest=lambda c: c["database"]["row_counts"].update(t=3))
    for level in ("structure", "restore-test"):
        code, output = verify(kb, backup["id"], level)
        assert code == 1 and "table t: 3 rows in manifest, 2" in output, output
    assert not [d for d in apps.databases() if d.startswith("kbackup_verify")]

    # A dump cut short (resealed, so checksums pass): structure names it.
    rewrite(kb, backup, "main:app_b", change_sql=lambda raw: raw[: len(raw) * 2 // 3],
            change_manifest=lambda c: c["database"]["row_counts"].update(t=2))
    assert verify(kb, backup["id"], "checksum")[0] == 0
    code, output = verify(kb, backup["id"], "structure")
    assert code == 1 and "Dump completed" in output, output

    # A flipped byte in the stored object: restore-test fails, nothing left behind.
    again = kb.run_backup()
    stored = kb.backup_dir(again) / stored_components(kb, again)["main:app_a"]["file"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    code, output = verify(kb, again["id"], "restore-test")
    assert code == 1, output
    assert kb.ctl_json("show", again["id"])["status"] == "corrupt"
    assert not [d for d in apps.databases() if d.startswith("kbackup_verify")]


def test_errors_are_one_line(kb: KbEnv, apps: MariaDb, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    kb.write_job("good", job(apps))
    kb.write_job("badpw", job(apps, extra=f'password_file = "{wrong}"').replace(
        f'password_file = "{apps.password_file}"\n', ""))
    kb.write_job("notool", job(apps, extra='dump_tool = "/nonexistent/mariadb-dump"'))
    kb.write_job("noclient", job(apps, extra='client_tool = "/nonexistent/mariadb"'))
    kb.write_job("nodb", job(apps, databases='["app_b", "nope"]', extra=" "))
    kb.write_job("nohost", job(apps).replace(f"port = {apps.port}", "port = 1"))
    kb.write_job("sock", job(apps).replace('host = "127.0.0.1"', f'socket = "{apps.socket}"')
                 .replace(f"port = {apps.port}\n", ""))
    kb.start()

    over_socket = kb.ctl_json("sources", "check", "sock")[0]
    assert over_socket["ok"], over_socket
    assert [d["name"] for d in over_socket["databases"]] == ["app_a", "app_b"]

    good = ctl(kb, "sources", "check", "good")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("good/main (mysql): OK (MariaDB 10"), good.stdout
    assert "app_a" in good.stdout and "app_b" in good.stdout and "scratch_x" not in good.stdout
    for name, expected in (("badpw", "Access denied for user 'kbt'"),
                           ("notool", "/nonexistent/mariadb-dump not found"),
                           ("noclient", "/nonexistent/mariadb not found"),
                           ("nodb", "database nope not found"),
                           ("nohost", "Can't connect to server on '127.0.0.1'")):
        probe = ctl(kb, "sources", "check", name)
        assert probe.returncode == 1 and expected in probe.stdout, probe.stdout
        assert len(probe.stdout.strip().splitlines()) == 1
        run = ctl(kb, "run", name, "--wait")
        assert run.returncode != 0
        [record] = [r for r in kb.ctl_json("runs")["items"] if r["job"] == name]
        assert expected in record["error"] and "\n" not in record["error"], record
    assert "not the password" not in kb.logs()
    assert not list(Path(tempfile.gettempdir()).glob("kbackup-my-*"))  # defaults files gone
    # The database that exists is still stored beside the missing one (a partial backup).
    [partial] = [b for b in kb.ctl_json("backups")["items"] if b["job"] == "nodb"]
    assert list(stored_components(kb, partial)) == ["main:app_b"]


@pytest.mark.parametrize(("entry", "expected"), [
    ('host = "127.0.0.1"\nsocket = "/run/mysqld/mysqld.sock"\ndatabases = "*"',
     "set exactly one of host (with port) or socket"),
    ('databases = "*"', "set exactly one of host (with port) or socket"),
    ('host = "db"\ndatabases = []', 'expected "*" or a non-empty list of database names'),
    ('host = "db"\ndatabases = ["a", "a"]', "a database is listed twice"),
    ('host = "db"\nport = 0\ndatabases = "*"', "port"),
    ('host = "db"\ndatabases = "*"\nexclude = "test_*"', "expected a list of shell patterns"),
    ('host = "db"\ndatabases = "*"\npassword_file = "relative/pw"',
     "expected an absolute path"),
    ('host = "db"\ndatabases = "*"\npassword_file = "/nonexistent/pw"', "/nonexistent/pw"),
    ('host = "db"\ndatabases = "*"\npasword_file = "/x"', "pasword_file"),
    ('host = "db"\ndatabases = "*"\nrestore_test = { user = "v" }',
     "restore_test: set exactly one of host (with port) or socket"),
    ('host = "db"\ndatabases = "*"\nrestore_test = { host = "v", socket = "/s", user = "v" }',
     "restore_test: set exactly one of host (with port) or socket"),
    ('host = "db"\ndatabases = "*"\nrestore_test = { host = "v" }', "restore_test.user"),
    ('host = "db"\ndatabases = "*"\nrestore_test = { host = "v", user = "v", port = 0 }',
     "restore_test.port"),
    ('host = "db"\ndatabases = "*"\n'
     'restore_test = { host = "v", user = "v", password_file = "/nonexistent/vpw" }',
     "restore_test.password_file"),
    ('host = "db"\ndatabases = "*"\nrestore_test = { host = "v", user = "v", dsn = "x" }',
     "restore_test.dsn"),
])
def test_bad_config_is_one_line(tmp_path: Path, entry: str, expected: str) -> None:
    conf = tmp_path / "conf"
    (conf / "jobs.d").mkdir(parents=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n'
        f'[storage.local]\ntype = "local"\npath = "{tmp_path}/store"\n')
    (conf / "jobs.d" / "shop.toml").write_text(
        'schedules = [ { cron = "0 2 * * *" } ]\ntargets = ["local"]\n'
        f'[[mysql]]\nname = "main"\nuser = "backup"\n{entry}\n')
    result = subprocess.run([KBACKUPCTL, "--config-dir", str(conf), "config", "check"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert any(expected in line and "shop.toml" in line and "mysql" in line
               for line in lines), result.stderr
