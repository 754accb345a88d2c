"""A failing job is never OK (issue 13), through a real kbackupd, kbackupctl and a real SMTP
server: a job whose database does not exist is CRITICAL at once and OK again after the next
good run (with a RESOLVED mail); one failed run after a good backup is a WARNING, two in a row
CRITICAL; a partial backup warns naming the target without a copy; backups nobody verified
warn. Also why a tool failed: the error line of its stderr, not the last line it printed,
down to a PostgreSQL cluster stopped in the middle of a dump.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from alert_servers import (
    QUIET,
    SMTP_PASSWORD,
    CertFiles,
    SmtpServer,
    email_channel,
    smtp_server,
    test_cert,
)
from conftest import KbEnv, PgServer, _start_private_cluster, wait_for
from kbackup.process import error_reason, stderr_for_log
from storage_servers import ServerProcess, dav_config, toml_table

pytest_plugins = ["storage_servers"]
__all__ = ["smtp_server", "test_cert"]  # fixtures, for pytest



# ---------------------------------------------------------------------- error_reason

# What pg_dump 15 prints when its server goes away in the middle of a table's COPY.
PG_DUMP_15_LOST = """\
pg_dump: error: Dumping the contents of table "bulk" failed: PQgetCopyData() failed.
pg_dump: detail: Error message from server: server closed the connection unexpectedly
\tThis probably means the server terminated abnormally
\tbefore or while processing the request.
pg_dump: detail: Command was: COPY public.bulk (id, payload) TO stdout;
""".splitlines()
# The same from pg_dump 13/14, which marks every line "error:".
PG_DUMP_14_LOST = """\
pg_dump: error: Dumping the contents of table "bulk" failed: PQgetCopyData() failed.
pg_dump: error: Error message from server: server closed the connection unexpectedly
\tThis probably means the server terminated abnormally
\tbefore or while processing the request.
pg_dump: error: The command was: COPY public.bulk (id, payload) TO stdout;
""".splitlines()


def test_the_error_line_and_its_detail_not_the_echoed_command() -> None:
    assert error_reason(PG_DUMP_15_LOST, "-") == (
        'pg_dump: error: Dumping the contents of table "bulk" failed: PQgetCopyData() failed.'
        " detail: Error message from server: server closed the connection unexpectedly")
    assert error_reason(PG_DUMP_14_LOST, "-") == (
        'pg_dump: error: Dumping the contents of table "bulk" failed: PQgetCopyData() failed.'
        " error: Error message from server: server closed the connection unexpectedly")


def test_error_reason_of_other_tools_and_shapes() -> None:
    refused = ['pg_dump: error: connection to server at "127.0.0.1", port 1 failed:'
               " Connection refused",
               "\tIs the server running on that host and accepting TCP/IP connections?"]
    assert error_reason(refused, "-") == refused[0]
    # pg_restore ends its report with the statement; the server's ERROR and DETAIL are why.
    restore = ["pg_restore: while PROCESSING TOC:",
               "pg_restore: from TOC entry 3336; 2606 16390 CONSTRAINT invoices invoices_pkey",
               "pg_restore: error: could not execute query: ERROR:  could not create unique"
               ' index "invoices_pkey"',
               "DETAIL:  Key (id)=(7) is duplicated.",
               "Command was: ALTER TABLE ONLY public.invoices ADD CONSTRAINT invoices_pkey"
               " PRIMARY KEY (id);"]
    assert error_reason(restore, "-") == (
        "pg_restore: error: could not execute query: ERROR: could not create unique index"
        ' "invoices_pkey" DETAIL: Key (id)=(7) is duplicated.')
    psql = ["psql:<stdin>:12: ERROR:  role \"shop_owner\" already exists",
            "psql:<stdin>:40: FATAL:  terminating connection due to administrator command"]
    assert error_reason(psql, "-") == (  # error lines in a row are said together
        'psql:<stdin>:12: ERROR: role "shop_owner" already exists'
        " psql:<stdin>:40: FATAL: terminating connection due to administrator command")
    gpg = ["gpg: encrypted with 1 passphrase", "gpg: decryption failed: Bad session key"]
    assert error_reason(gpg, "-") == "gpg: decryption failed: Bad session key"  # no marker
    assert error_reason(["", "  "], "no error message") == "no error message"
    assert error_reason(["gpg: fatal: /x: directory does not exist!", "secmem usage: 0/0"],
                        "-") == "gpg: fatal: /x: directory does not exist!"
    logged = stderr_for_log(["pg_dump: error: x", "\tpassword=hunter2 sslmode=require"])
    assert logged == "pg_dump: error: x | password=*** sslmode=require"


# ---------------------------------------------------------------------- a real daemon


def mail_with(server: SmtpServer, prefix: str, what: str) -> EmailMessage:
    """The first mail whose subject starts with `prefix` (waiting for it). A subject longer
    than a mail line is folded, and the parsed value may then start with a space."""
    def found() -> EmailMessage | None:
        with server.lock:
            return next((m for _, _, m in server.mails
                         if str(m["Subject"]).strip().startswith(prefix)), None)
    try:
        return wait_for(found, what=f"{what}: a mail {prefix!r}")  # type: ignore[no-any-return]
    except AssertionError:
        subjects = [str(m["Subject"]) for _, _, m in server.mails]
        raise AssertionError(f"no mail {prefix!r} for {what} in {subjects}") from None


def check_exits(kb: KbEnv, job: str, code: int) -> subprocess.CompletedProcess[str]:
    return wait_for(lambda: (r := kb.ctl("check", job)).returncode == code and r,
                    what=f"kbackupctl check {job} to exit {code}")


def job_health(kb: KbEnv, job: str) -> str:
    status = kb.ctl_json("status")
    return next(j for j in status["jobs"] if j["job"] == job)["health"]["status"]


def test_a_job_whose_database_does_not_exist_is_critical_until_it_works(
        kb: KbEnv, pg: PgServer, smtp_server: SmtpServer, test_cert: CertFiles,
        tmp_path: Path) -> None:
    password = tmp_path / "smtp-password"
    password.write_text(SMTP_PASSWORD + "\n")
    kb.write_daemon(extra=QUIET + email_channel(smtp_server, test_cert, password))
    missing = f"kbt_missing_{uuid.uuid4().hex[:8]}"
    kb.shop_job(pg, missing, None)
    kb.start()
    try:
        failed = kb.ctl("run", "shop", "--wait")
        assert failed.returncode == 1
        why = f'database "{missing}" does not exist'
        check = check_exits(kb, "shop", 2)
        assert check.stdout.startswith("KBACKUP CRITICAL - shop: CRITICAL: ")
        assert "no complete backup yet: backup run" in check.stdout and why in check.stdout
        assert job_health(kb, "shop") == "critical"
        rows = [line for line in kb.ctl("status").stdout.splitlines() if line.startswith("shop ")]
        assert rows and rows[0].rstrip().endswith("CRITICAL")  # the HEALTH column
        alert = mail_with(smtp_server, "[kbackup CRITICAL] shop: no complete backup yet:",
                          "the last_run alert")
        assert why in alert["Subject"]
        body = alert.get_content()
        assert "Alert key:  shop/last_run" in body and why in body
        alerts = kb.ctl_json("alerts")
        # One CRITICAL for a job that never succeeded (last_run's), not a second by backup_age.
        assert [a["key"] for a in alerts["firing"] if a["severity"] == "critical"] == [
            "shop/last_run"]
        with smtp_server.lock:
            critical = [str(m["Subject"]) for _, _, m in smtp_server.mails
                        if "CRITICAL" in str(m["Subject"])]
        assert len(critical) == 1, critical

        pg.create_database(missing)  # the fix
        good = kb.ctl("run", "shop", "--wait")
        assert good.returncode == 0, good.stderr
        check = check_exits(kb, "shop", 0)
        assert check.stdout.startswith("KBACKUP OK - job shop: ")
        resolved = mail_with(smtp_server, "[kbackup RESOLVED] shop: last backup run",
                             "the RESOLVED mail")
        assert "Alert key:  shop/last_run" in resolved.get_content()
        assert why in resolved.get_content()  # "Was: CRITICAL: ... does not exist"
        assert job_health(kb, "shop") == "ok"
    finally:
        pg.drop_database(missing)


def test_one_failed_run_warns_and_two_in_a_row_are_critical(kb: KbEnv, pg: PgServer) -> None:
    kb.write_daemon(extra=QUIET)
    name = f"kbt_shop_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    kb.shop_job(pg, name, None)
    kb.start()
    try:
        kb.run_backup("shop")
        check_exits(kb, "shop", 0)
        pg.drop_database(name)  # the database is gone from now on
        assert kb.ctl("run", "shop", "--wait").returncode == 1
        check = check_exits(kb, "shop", 1)
        assert check.stdout.startswith("KBACKUP WARNING - shop: WARNING: backup run ")
        assert f'database "{name}" does not exist' in check.stdout
        assert job_health(kb, "shop") == "warning"
        assert kb.ctl("run", "shop", "--wait").returncode == 1
        check = check_exits(kb, "shop", 2)
        assert "shop: CRITICAL: 2 backup runs failed in a row (limit 2)" in check.stdout
        code, body = kb_metrics(kb)
        assert code == 200
        assert 'kbackup_check_status{job="shop",check="last_run",target=""} 2' in body
    finally:
        pg.drop_database(name)


def kb_metrics(kb: KbEnv) -> tuple[int, str]:
    from kbackup.ctl.client import http_request

    code, body = http_request(str(kb.socket), "GET", "/metrics")
    return code, body.decode()


def test_a_partial_backup_warns_naming_the_target(
        kb: KbEnv, pg: PgServer, shop_db: str, dav_server: ServerProcess,
        tmp_path: Path) -> None:
    nextcloud = dav_config(dav_server, tmp_path / "secrets")
    kb.write_daemon(extra=toml_table("nextcloud", nextcloud) + QUIET)
    path = kb.shop_job(pg, shop_db, None)
    path.write_text(path.read_text().replace('targets = ["local"]',
                                             'targets = ["local", "nextcloud"]'))
    kb.start()
    dav_server.faults({"status": 507, "method": "PUT", "drain": True})
    try:
        result = kb.ctl("run", "shop", "--wait")
    finally:
        dav_server.faults()
    assert result.returncode == 1 and "is partial" in result.stderr, result.stderr
    check = check_exits(kb, "shop", 1)
    assert check.stdout.startswith("KBACKUP WARNING - ")
    assert "is partial, not on every target (target nextcloud failed: " in check.stdout
    assert "HTTP 507 Insufficient Storage" in check.stdout
    assert "target nextcloud holds no complete backup yet" in check.stdout
    assert job_health(kb, "shop") == "warning"


def test_backups_nobody_verified_warn(kb: KbEnv, tmp_path: Path) -> None:
    """Verified monthly only: 45 days on (the daemon's clock), the backup was never verified."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "letter.txt").write_text("dear customer\n")
    now_file = tmp_path / "fake-now"
    now_file.write_text((datetime.now(UTC) + timedelta(days=45)).isoformat())
    kb.write_daemon(extra=QUIET)
    kb.write_job("docs", f"""
targets = ["local"]
[verify]
after_backup = "none"
schedule = "0 3 1 * *"
level = "structure"

[[files]]
name = "docs"
path = "{docs}"
""")
    kb.start({"KBACKUP_FAKE_NOW_FILE": str(now_file)})
    backup = kb.run_backup("docs")
    check = check_exits(kb, "docs", 1)
    # 45 days less the moments since the clock file was written: "44d23h", or "45d" when the
    # backup's start (stored to the second) fell in the same second as that write.
    assert re.match(r"KBACKUP WARNING - docs: WARNING: never verified: no backup of this job"
                    rf" has been verified, the oldest \({backup['id']}\) is (44d23h|45d) old"
                    r" \(verification: structure on schedule '0 3 1 \* \*', grace ",
                    check.stdout), check.stdout
    verified = kb.ctl("verify", backup["id"], "--level", "structure", "--wait")
    assert verified.returncode == 0, verified.stderr
    check_exits(kb, "docs", 0)


# ---------------------------------------------------------------------- a cluster stopped mid-dump


@pytest.fixture
def private_pg() -> Any:
    """A PostgreSQL cluster of this test's own, to be stopped under a running dump."""
    base = Path(tempfile.mkdtemp(prefix="kbpgdown"))
    server, stop = _start_private_cluster(base)
    immediate = [*stop[:-3], "-m", "immediate", "stop"]
    try:
        yield server, immediate
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_cluster_stopped_mid_dump_names_the_lost_connection(
        kb: KbEnv, private_pg: tuple[PgServer, list[str]]) -> None:
    server, stop_now = private_pg
    server.create_database("bulk")
    with server.connect("bulk") as conn:  # ~24 MB: far more than the pipe and socket hold
        conn.execute("CREATE TABLE bulk (id int, payload text)")
        conn.execute("INSERT INTO bulk SELECT g, md5(g::text) || md5((g * 7)::text)"
                     " FROM generate_series(1, 300000) g")
    kb.write_daemon(extra=QUIET)
    kb.write_job("bulk", f"""
targets = ["local"]
timeout = "2m"
[verify]
after_backup = "none"

[[postgres]]
name = "bulk"
dsn = "{server.dsn('bulk')}"
""")
    kb.start()
    assert kb.proc is not None
    daemon = kb.proc.pid
    run_id = kb.ctl("run", "bulk").stdout.strip()

    def dumping() -> bool:
        rows = server.query("postgres", "SELECT 1 FROM pg_stat_activity WHERE"
                                        " application_name = 'kbackup-pg_dump'")
        return bool(rows)

    wait_for(dumping, what="pg_dump's connection")
    os.kill(daemon, signal.SIGSTOP)  # the daemon reads no more: pg_dump blocks in its COPY
    try:
        wait_for(lambda: server.query(
            "postgres", "SELECT 1 FROM pg_stat_activity WHERE application_name ="
                        " 'kbackup-pg_dump' AND query LIKE 'COPY %'"), what="COPY under way")
        subprocess.run(stop_now, check=True, capture_output=True)
    finally:
        os.kill(daemon, signal.SIGCONT)
    def failed_run() -> list[dict[str, Any]]:
        data = kb.ctl_json("runs", "bulk")
        rows = data["items"]
        return [r for r in rows if r["id"] == run_id and r["status"] == "failed"]

    runs = wait_for(failed_run, timeout=60, what="the failed run")
    error = runs[0]["error"]
    assert error.startswith("database bulk: pg_dump failed (exit 1): pg_dump: error:"), error
    assert "server closed the connection unexpectedly" in error
    assert "Command was" not in error
    # The whole stderr is in the run's log line, the echoed command included.
    [logged] = [line for line in kb.logs().splitlines()
                if "event=run.failed" in line and run_id in line]
    assert "stderr=" in logged and "Command was: COPY public.bulk" in logged
    check = check_exits(kb, "bulk", 2)
    assert "server closed the connection unexpectedly" in check.stdout
