"""docs/format.md's "Restore and verify by hand", run as written against real backups.

A real kbackupd backs up a real database (with a role that has a grant, so the globals
matter) and a file tree, plain and gpg-symmetric. Then the fenced blocks of format.md tagged
`sh by-hand` (and `sh by-hand plain` or `sh by-hand gpg`) run in bash, with only the
placeholders the page documents replaced, against a new PostgreSQL server (initdb), as after
losing the old one. The database rows, the role's grant and the files must come back
identical, and every checksum the page's commands check must match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from conftest import KbEnv, PgServer, _start_private_cluster, stop_gpg_agent, table_counts

DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"
BLOCK = re.compile(r"^```sh by-hand(?: (\w+))?\n(.*?)^```", re.M | re.S)
# The placeholders format.md documents (its table under "Restore and verify by hand").
BACKUP_DIR = "/var/backups/kbackup/shop/2026/12/20261203T020000Z-3fa9c1"
NEW_DATABASE = "shop_restored"
FILES_DIR = "/tmp/pdfs"
GPG_DECRYPT = "gpg -d"
PASSPHRASE = "by hand 7d1e correct horse"
TOOLS = ("bash", "jq", "zstd", "gpg", "tar", "sha256sum", "psql", "createdb", "pg_restore")


def by_hand_script(variant: str, backup_dir: Path, database: str, files_dir: Path,
                   passphrase_file: Path | None) -> str:
    """The page's by-hand blocks for this variant, in order, placeholders replaced."""
    blocks = [(tag, body) for tag, body in BLOCK.findall(DOC.read_text())]
    assert {tag for tag, _ in blocks} == {"", "plain", "gpg"}, "format.md lost a by-hand block"
    script = "".join(body for tag, body in blocks if tag in ("", variant))
    for placeholder in (BACKUP_DIR, NEW_DATABASE, FILES_DIR):
        assert placeholder in script, f"format.md no longer uses the placeholder {placeholder}"
    script = (script.replace(BACKUP_DIR, str(backup_dir))
              .replace(NEW_DATABASE, database).replace(FILES_DIR, str(files_dir)))
    if variant == "gpg":
        assert GPG_DECRYPT in script and passphrase_file is not None
        # As the page says: without a terminal, the passphrase comes from a file.
        script = script.replace(GPG_DECRYPT, "gpg --batch --pinentry-mode loopback"
                                             f" --passphrase-file {passphrase_file} -d")
    else:
        assert "gpg" not in script
    return script


@pytest.fixture(scope="module")
def new_server() -> Iterator[PgServer]:
    """A PostgreSQL server that has never seen the backed-up cluster (no roles but its own)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"by-hand tools missing: {', '.join(missing)} (make sysdeps)")
    base = Path(tempfile.mkdtemp(prefix="kbnew"))
    server, stop = _start_private_cluster(base)
    try:
        yield server
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def table_digest(pg: PgServer, dbname: str, table: str) -> tuple[int, str]:
    schema, name = table.split(".", 1)
    query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text),"
                    " '')) FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(name))
    count, digest = pg.query(dbname, query)[0]
    return count, digest


def tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("variant", ["plain", "gpg"])
def test_the_by_hand_commands_of_format_md_restore_a_backup(
        variant: str, kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path,
        new_server: PgServer) -> None:
    role = f"kbt_reader_{uuid.uuid4().hex[:8]}"
    pg.query("postgres", sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    passphrase_file: Path | None = None
    restored = f"kbt_hand_{uuid.uuid4().hex[:8]}"
    gnupghome = Path(tempfile.mkdtemp(prefix="kbgpg"))
    try:
        pg.query(shop_db, sql.SQL("GRANT SELECT ON invoices TO {}").format(sql.Identifier(role)))
        pg.query(shop_db, "INSERT INTO customers (name) VALUES (%s), (%s)",
                 ("O'Brien \t tab", "ünïcode ✓"))
        extra = ""
        if variant == "gpg":
            passphrase_file = kb.base / "backup-pass"
            passphrase_file.write_text(PASSPHRASE + "\n")
            extra = f'[encryption]\nmode = "gpg-symmetric"\npassphrase_file = "{passphrase_file}"\n'
        kb.shop_job(pg, shop_db, pdf_tree, extra=extra)
        kb.start()
        backup = kb.run_backup()
        folder = kb.backup_dir(backup)
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
        files_dir = kb.base / "restored-pdfs"
        script = by_hand_script(variant, folder, restored, files_dir, passphrase_file)
        env = {**os.environ, "PGHOST": new_server.host, "PGPORT": str(new_server.port),
               "PGUSER": new_server.user, "GNUPGHOME": str(gnupghome)}
        env.pop("PGDATABASE", None)
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n" \
                                     f"{done.stderr}"

        # Every stored object was checked against the manifest, and matched.
        stored = [c["file"] for c in manifest["components"]]
        stored += [c["index"]["file"] for c in manifest["components"] if c["index"]]
        assert len(stored) == 5 and all(name.endswith(".gpg") == (variant == "gpg")
                                        for name in stored)
        for name in stored:
            assert f"{name}: OK" in done.stdout, done.stdout
        assert "FAILED" not in done.stdout + done.stderr

        # The database: every row of every table, on a server that never saw the old one.
        tables = table_counts(pg, shop_db)
        assert table_counts(new_server, restored) == tables
        for table in tables:
            assert table_digest(new_server, restored, table) == table_digest(pg, shop_db, table)
        # The globals recreated the role, so the dump's grant to it came back too.
        granted = new_server.query(restored, "SELECT has_table_privilege(%s, 'public.invoices',"
                                             " 'SELECT')", (role,))
        assert granted == [(True,)]

        # The files: the same tree, byte for byte (the excluded *.tmp not in it).
        expected = tree(pdf_tree)
        del expected["scratch.tmp"]
        assert tree(files_dir) == expected

        if variant == "plain":
            # The check of step 1 does fail on a changed byte.
            copy = kb.base / "tampered"
            shutil.copytree(folder, copy)
            tar = copy / "files-pdfs.tar.zst"
            data = bytearray(tar.read_bytes())
            data[len(data) // 2] ^= 0x01
            tar.write_bytes(data)
            step1 = BLOCK.findall(DOC.read_text())[0][1].replace(BACKUP_DIR, str(copy))
            bad = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step1], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert bad.returncode != 0 and "files-pdfs.tar.zst: FAILED" in bad.stdout
    finally:
        new_server.drop_database(restored)
        pg.query(shop_db, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        pg.query("postgres", sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        stop_gpg_agent(gnupghome)
        shutil.rmtree(gnupghome, ignore_errors=True)
