"""The apprise channel in a real kbackupd: a backup that fails (its PostgreSQL does not answer)
reaches ntfy and Gotify stand-ins through one channel, `kbackupctl alerts test` reaches both,
and neither the topic nor the token reaches the daemon's log, even at debug level (apprise
logs its payloads and headers there).
"""

from __future__ import annotations

from pathlib import Path

from apprise_servers import (
    GOTIFY_TOKEN,
    GotifyServer,
    NtfyServer,
    apprise_channel,
    gotify_server,
    ntfy_server,
    urls_file,
)

from alert_servers import QUIET, Recorded
from conftest import KbEnv, free_port, wait_for

__all__ = ["gotify_server", "ntfy_server"]  # fixtures, for pytest

TOPIC = "kb-shop-7c1e0d"


def arrived(server: NtfyServer | GotifyServer, label: str) -> Recorded:
    """The first request whose title has this label ("FAILED", "TEST"), waiting for it: the
    health alert of the job without a backup arrives beside it."""
    def found() -> Recorded | None:
        return next((r for r in server.received()
                     if r.json["title"].startswith(f"[kbackup {label}] ")), None)
    request = wait_for(found, what=f"a {label} message", timeout=30)
    assert isinstance(request, Recorded)
    return request


def test_a_failed_backup_and_alerts_test_reach_ntfy_and_gotify(
        kb: KbEnv, ntfy_server: NtfyServer, gotify_server: GotifyServer,
        tmp_path: Path) -> None:
    urls = urls_file(tmp_path / "apprise-urls", ntfy_server.url_for(TOPIC),
                     gotify_server.url_for(query="priority=high"))
    kb.write_daemon(extra=QUIET + apprise_channel(urls), daemon_extra='log_level = "debug"')
    kb.write_job("shop", f"""
targets = ["local"]

[[postgres]]
name = "shop"
dsn = "host=127.0.0.1 port={free_port()} dbname=shop user=postgres connect_timeout=5"
""")
    kb.start()
    failed = kb.ctl("run", "shop", "--wait")
    assert failed.returncode != 0, failed.stdout
    ntfy, gotify = arrived(ntfy_server, "FAILED"), arrived(gotify_server, "FAILED")
    assert ntfy.json["topic"] == TOPIC
    assert ntfy.json["title"].startswith("[kbackup FAILED] shop: backup ")
    assert "Connection refused" in ntfy.json["message"]
    assert ntfy.headers["X-Icon"].endswith("/apprise-failure-256x256.png")
    assert gotify.headers["X-Gotify-Key"] == GOTIFY_TOKEN
    assert (gotify.json["title"], gotify.json["message"]) == (ntfy.json["title"],
                                                              ntfy.json["message"])
    assert gotify.json["priority"] == 8

    tested = kb.ctl("alerts", "test")
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.strip() == "push (apprise): OK, test message sent"
    ntfy, gotify = arrived(ntfy_server, "TEST"), arrived(gotify_server, "TEST")
    assert ntfy.json["message"] == gotify.json["message"]
    assert ntfy.headers["X-Icon"].endswith("/apprise-info-256x256.png")

    ntfy_server.failures = 10
    broken = kb.ctl("alerts", "test")
    assert broken.returncode == 1
    assert broken.stdout == ("push (apprise): FAILED: ntfy (line 3): HTTP 500 internal server"
                             " error\n")
    log = kb.logs()
    assert TOPIC not in log and GOTIFY_TOKEN not in log
    assert TOPIC not in broken.stdout + broken.stderr
