"""Alert routing per job (issue 19): a job's [alerts] names its channels and, per channel,
the run results it hears about. Three webhook channels, each its own HTTP server recording
what it received: oncall, owner (both min_severity warning) and team (info).

Through a real kbackupd: job crm routed to owner for success and to oncall for failures and
recoveries; job shop without [alerts] (every channel, as before routing existed). Then in
process with a fake clock: a job's health alert reaches only its channels, a daemon-wide one
all of them, and a "resolved" still reaches a channel that was told before a reload routed the
job elsewhere.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alert_servers import QUIET, HealthEnv, HttpRecorder, henv
from conftest import KbEnv, free_port, wait_for
from kbackup.config import load_config

__all__ = ["henv"]  # fixtures, for pytest

CHANNELS = ("oncall", "owner", "team")
ROUTED = """
[alerts]
channels = ["oncall", "owner"]

[alerts.notify_on]
owner = ["success"]
oncall = ["failure", "recovery"]
"""


@pytest.fixture
def hooks() -> Iterator[dict[str, HttpRecorder]]:
    servers = {name: HttpRecorder().start() for name in CHANNELS}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def channels_toml(hooks: dict[str, HttpRecorder]) -> str:
    return "".join(f"""
[alerts.{name}]
type = "webhook"
url = "{server.url('/' + name)}"
retry_delay = "0.05s"
{'min_severity = "info"' if name == "team" else ""}
""" for name, server in hooks.items())


def said(server: HttpRecorder, job: str | None) -> Counter[tuple[str, str]]:
    """What a channel was told about a job (None: daemon-wide): (kind, check) counted."""
    return Counter((r.json["kind"], r.json["check"]) for r in server.received()
                   if r.json["job"] == job)


def wait_said(server: HttpRecorder, job: str | None, kind: str, check: str,
              count: int = 1) -> None:
    wait_for(lambda: said(server, job)[(kind, check)] >= count,
             what=f"{kind} {check} of {job} at {server.url()}")


def crm_job(kb: KbEnv, docs: Path, alerts: str = ROUTED) -> None:
    kb.write_job("crm", f"""
targets = ["local"]
{alerts}
[[files]]
name = "docs"
path = "{docs}"
""")


def test_runs_reach_the_channels_their_job_names(kb: KbEnv, hooks: dict[str, HttpRecorder],
                                                 tmp_path: Path) -> None:
    oncall, owner, team = (hooks[name] for name in CHANNELS)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contract.txt").write_text("signed\n")
    kb.write_daemon(extra=QUIET + channels_toml(hooks))
    crm_job(kb, docs)
    kb.write_job("shop", f"""
targets = ["local"]
[[postgres]]
name = "shop"
dsn = "host=127.0.0.1 port={free_port()} dbname=shop user=kbackup connect_timeout=5"
""")
    check = kb.ctl("config", "check")
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert ("routing crm: oncall (alerts >= warning, runs: failure, recovery); owner (alerts"
            " >= warning, runs: success)") in lines
    assert ("routing shop: oncall (alerts >= warning, runs: failure, recovery); owner (alerts"
            " >= warning, runs: failure, recovery); team (alerts >= info, runs: failure,"
            " recovery)") in lines
    routing = kb.ctl_json("config", "check")["routing"]
    assert routing["crm"] == {"oncall": {"min_severity": "warning",
                                         "runs": ["failure", "recovery"]},
                              "owner": {"min_severity": "warning", "runs": ["success"]}}
    assert sorted(routing["shop"]) == list(CHANNELS)
    kb.start()

    kb.run_backup("crm")  # success: to owner only, although owner's min_severity is warning
    wait_said(owner, "crm", "success", "run")
    assert kb.ctl("run", "shop", "--wait").returncode == 1  # no [alerts]: every channel
    for server in hooks.values():
        wait_said(server, "shop", "failure", "run")
        wait_said(server, "shop", "firing", "last_run")  # never succeeded: CRITICAL

    shutil.rmtree(docs)  # crm fails: to oncall; its last_run WARNING to oncall and owner
    assert kb.ctl("run", "crm", "--wait").returncode == 1
    wait_said(oncall, "crm", "failure", "run")
    wait_said(owner, "crm", "firing", "last_run")
    docs.mkdir()
    (docs / "contract.txt").write_text("signed\n")  # the same size: no size_ratio alert
    assert kb.ctl("run", "crm", "--wait").returncode == 0
    wait_said(oncall, "crm", "recovery", "run")
    wait_said(owner, "crm", "success", "run", count=2)  # owner asked for success, not recovery
    wait_said(oncall, "crm", "resolved", "last_run")
    wait_said(owner, "crm", "resolved", "last_run")

    # A routing naming a channel kbackupd.toml lacks: the reload is refused, the old stays.
    crm_job(kb, docs, ROUTED.replace("owner", "ownr"))
    refused = kb.ctl("reload")
    assert refused.returncode != 0
    assert (f"{kb.jobs_dir / 'crm.toml'}: alerts.channels.1: no alert channel 'ownr' in"
            " kbackupd.toml (configured: oncall, owner, team)") in refused.stderr
    assert kb.ctl("run", "crm", "--wait").returncode == 0
    wait_said(owner, "crm", "success", "run", count=3)

    # A daemon-wide alert (the disk under state_dir nearly full) goes to every channel.
    crm_job(kb, docs)
    kb.write_daemon(extra=QUIET.replace('"1B"', '"99.99%"') + channels_toml(hooks))
    assert kb.ctl("reload").returncode == 0
    for server in hooks.values():
        wait_for(lambda s=server: any(kind == "firing" and check == "disk_free"  # type: ignore
                                      for kind, check in said(s, None)), what="disk alert")
    time.sleep(0.5)  # anything else sent would be here by now
    assert said(team, "crm") == Counter()
    assert said(owner, "crm") == Counter({("success", "run"): 3, ("firing", "last_run"): 1,
                                          ("resolved", "last_run"): 1})
    assert said(oncall, "crm") == Counter({("failure", "run"): 1, ("recovery", "run"): 1,
                                           ("firing", "last_run"): 1,
                                           ("resolved", "last_run"): 1})
    assert all(said(s, "shop")[("failure", "run")] == 1 for s in hooks.values())
    reason = next(r.json for r in owner.received() if r.json["kind"] == "success")["reason"]
    assert reason.startswith("backup ") and " complete (" in reason


T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def test_health_alerts_follow_the_job_and_daemon_alerts_go_everywhere(
        henv: HealthEnv, hooks: dict[str, HttpRecorder]) -> None:
    oncall, owner, team = (hooks[name] for name in CHANNELS)
    henv.daemon_toml(QUIET.replace('"1B"', '"99.99%"') + channels_toml(hooks))
    henv.job("crm", extra=ROUTED.replace("[alerts]", '[thresholds]\nmax_backup_age = "26h"\n'
                                         "[alerts]"))
    henv.job("shop", extra='[thresholds]\nmax_backup_age = "26h"')
    henv.backup("crm", T0 - timedelta(hours=27))
    henv.backup("shop", T0 - timedelta(hours=27))
    await henv.evaluate()
    for server in (oncall, owner):
        assert said(server, "crm") == Counter({("firing", "backup_age"): 1})
    assert said(team, "crm") == Counter()
    for server in hooks.values():
        assert said(server, "shop") == Counter({("firing", "backup_age"): 1})
        assert said(server, None)[("firing", "disk_free")] >= 1

    # Routed to oncall only from now on: owner, told it fired, still hears it resolved.
    henv.job("crm", extra='[thresholds]\nmax_backup_age = "26h"\n[alerts]\n'
                          'channels = ["oncall"]')
    monitor = henv.monitor
    monitor.reconfigure(load_config(henv.conf), monitor.storages)
    henv.clock.advance(hours=24)
    await henv.evaluate()  # the repeat: oncall only
    assert said(oncall, "crm")[("repeat", "backup_age")] == 1
    assert said(owner, "crm")[("repeat", "backup_age")] == 0
    henv.clock.advance(minutes=5)
    henv.backup("crm", henv.clock.current)
    await henv.evaluate()
    for server in (oncall, owner):
        assert said(server, "crm")[("resolved", "backup_age")] == 1
    assert said(team, "crm") == Counter()
