"""The apprise alert channel against stand-ins of ntfy and Gotify (real HTTP servers, real
apprise): what arrives (title, text, priority, token, the NotifyType's icon), a failing server
as one line with its retries and without the secret parts of its URL, and the URLs file
checked at config load (file and line named, the URL never printed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from apprise_servers import (
    GOTIFY_TOKEN,
    GotifyServer,
    NtfyServer,
    apprise_channel,
    gotify_server,
    ntfy_server,
    urls_file,
)

from alert_servers import QUIET, HealthEnv, henv
from conftest import free_port
from kbackup.alerts.apprise import AppriseChannel
from kbackup.alerts.base import ChannelError, Message
from kbackup.alerts.channels import build_channel
from kbackup.config import ConfigError, load_config


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """What reaches the daemon's log: pytest also shows non-propagating loggers (apprise's,
    which goes nowhere in the daemon)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "apprise")

__all__ = ["gotify_server", "henv", "ntfy_server"]  # fixtures, for pytest

REASON = "last good backup is 31h old (limit 26h)"


def firing(kind: str = "firing", severity: str = "critical") -> Message:
    return Message(kind=kind, severity=severity, job="shop", check="backup_age", reason=REASON,
                   key="shop/backup_age", details=["pg_dump: connection refused"],
                   next_step="kbackupctl runs shop")


def channel(henv: HealthEnv, urls: Path, extra: str = "") -> AppriseChannel:
    henv.daemon_toml(QUIET + apprise_channel(urls, extra=extra))
    built = build_channel("push", load_config(henv.conf).settings.alerts["push"])
    assert isinstance(built, AppriseChannel)
    return built


async def test_ntfy_gets_title_text_and_the_icon_of_the_severity(
        henv: HealthEnv, ntfy_server: NtfyServer, tmp_path: Path) -> None:
    push = channel(henv, urls_file(tmp_path / "urls", ntfy_server.url_for("kb-4f9a")))
    await push.send(firing())
    (request,) = ntfy_server.wait_for(1)
    assert (request.method, request.path) == ("POST", "/")
    sent = request.json
    assert sent["topic"] == "kb-4f9a"
    assert sent["title"] == f"[kbackup CRITICAL] shop: {REASON}"
    assert sent["message"].startswith(f"CRITICAL: shop: {REASON}\n")
    assert "  pg_dump: connection refused" in sent["message"]
    assert "kbackupctl alerts silence shop/backup_age" in sent["message"]
    assert request.headers["X-Icon"].endswith("/apprise-failure-256x256.png")
    for message, icon in ((firing("resolved", "ok"), "success"),
                          (firing("recovery", "ok"), "success"),
                          (firing("failure", "warning"), "failure"),
                          (firing(severity="warning"), "warning"),
                          (firing("test", "info"), "info")):
        await push.send(message)
        assert ntfy_server.received()[-1].headers["X-Icon"].endswith(f"-{icon}-256x256.png")


async def test_gotify_gets_its_token_title_text_and_priority(
        henv: HealthEnv, gotify_server: GotifyServer, tmp_path: Path) -> None:
    push = channel(henv, urls_file(tmp_path / "urls", gotify_server.url_for(),
                                   gotify_server.url_for(query="priority=high")))
    await push.send(firing())
    normal, high = gotify_server.wait_for(2)
    for request in (normal, high):
        assert (request.method, request.path) == ("POST", "/message")
        assert request.headers["X-Gotify-Key"] == GOTIFY_TOKEN
        assert request.json["title"] == f"[kbackup CRITICAL] shop: {REASON}"
        assert request.json["message"].startswith(f"CRITICAL: shop: {REASON}\n")
    assert (normal.json["priority"], high.json["priority"]) == (5, 8)


async def test_a_failing_server_is_one_line_retried_and_the_other_gets_it_once(
        henv: HealthEnv, ntfy_server: NtfyServer, gotify_server: GotifyServer,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    urls = urls_file(tmp_path / "urls", gotify_server.url_for(), ntfy_server.url_for("s3cr3t"))
    push = channel(henv, urls, 'retries = 2')
    ntfy_server.failures = 10
    with pytest.raises(ChannelError) as failed:
        await push.send(firing())
    assert str(failed.value) == "ntfy (line 4): HTTP 500 internal server error (after 3 attempts)"
    assert failed.value.retry
    assert len(ntfy_server.received()) == 3
    assert len(gotify_server.received()) == 1  # took it at the first attempt: not sent again
    ntfy_server.failures = 1  # a 500, then accepted
    await push.send(firing())
    assert len(ntfy_server.received()) == 5 and len(gotify_server.received()) == 2
    assert "s3cr3t" not in logged(caplog) and GOTIFY_TOKEN not in logged(caplog)


async def test_a_refused_token_a_closed_port_and_a_secret_host_name(
        henv: HealthEnv, gotify_server: GotifyServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    urls = urls_file(tmp_path / "urls", gotify_server.url_for("WrongT0ken99"))
    push = channel(henv, urls, 'retries = 3')
    with pytest.raises(ChannelError) as refused:
        await push.send(firing())
    assert str(refused.value) == "gotify (line 3): HTTP 401 Verification Failed"
    assert not refused.value.retry and len(gotify_server.received()) == 1  # 4xx: not retried
    urls_file(urls, f"gotify://127.0.0.1:{free_port()}/{GOTIFY_TOKEN}")  # nobody listens
    with pytest.raises(ChannelError) as closed:
        await push.send(firing(), retries=0)
    assert str(closed.value) == ("gotify (line 3): A Connection error occurred sending Gotify"
                                 " notification to 127.0.0.1: Connection refused")
    urls_file(urls, "tgram://123456789:AAHtelegramBotT0ken@nosuch.invalid/-100123")
    with pytest.raises(ChannelError) as unknown:
        await push.send(firing(), retries=0)
    assert str(unknown.value).startswith("tgram (line 3): tgram:// is not a valid Apprise URL: ")
    assert not unknown.value.retry
    for secret in ("WrongT0ken99", "AAHtelegramBotT0ken", "123456789", "-100123"):
        assert secret not in str(unknown.value) + logged(caplog)


def problems(henv: HealthEnv, urls: Path) -> list[str]:
    henv.daemon_toml(QUIET + apprise_channel(urls))
    with pytest.raises(ConfigError) as error:
        load_config(henv.conf)
    return error.value.problems


def test_urls_file_is_checked_at_load_naming_file_line_and_scheme(
        henv: HealthEnv, tmp_path: Path) -> None:
    main = henv.conf / "kbackupd.toml"
    urls = urls_file(tmp_path / "urls", "ntfy://127.0.0.1:8080/fine", "gotify://10.0.0.9",
                     "nosuch://h0st/pa55word", "pa55word")
    assert problems(henv, urls) == [
        f"{main}: alerts.push.urls_file: {urls} line 4: gotify:// is not a valid Apprise URL:"
        " An invalid Gotify Token (None) was specified.",
        f"{main}: alerts.push.urls_file: {urls} line 5: nosuch:// is not a scheme Apprise"
        " knows",
        f"{main}: alerts.push.urls_file: {urls} line 6: not a URL (one Apprise URL a line,"
        " like ntfy://host/topic; blank lines and # comments are skipped)"]
    assert "pa55word" not in "".join(problems(henv, urls))
    urls_file(urls, "# nothing yet")
    assert problems(henv, urls) == [
        f"{main}: alerts.push.urls_file: {urls} holds no Apprise URL (one Apprise URL a line,"
        " like ntfy://host/topic; blank lines and # comments are skipped)"]
    missing = tmp_path / "no-such-file"
    assert problems(henv, missing) == [
        f"{main}: alerts.push.urls_file: {missing} does not exist or is not a file"]


def test_the_daemon_and_kbackupctl_do_not_load_apprise_without_a_channel(
        henv: HealthEnv) -> None:
    script = ("import sys; import kbackup.daemon, kbackup.cli, kbackup.alerts.channels;"
              " from kbackup.config import load_config; load_config(sys.argv[1]);"
              " sys.exit('apprise' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script, str(henv.conf)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
