"""A job's [alerts] (issue 19): channels it is routed to and notify_on per channel. Bad
routing is one line naming the job file and the field; Config.run_routes says which channel
hears which run results (explicit per channel, else notify_on through min_severity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbackup.config import ConfigError, load_config

JOB = """
targets = ["local"]
{head}
[[files]]
name = "pdfs"
path = "/srv/crm/pdfs"
{tail}
"""

CHANNELS = """
[alerts.oncall]
type = "webhook"
url = "http://127.0.0.1:9/oncall"

[alerts.owner]
type = "webhook"
url = "http://127.0.0.1:9/owner"

[alerts.team]
type = "webhook"
url = "http://127.0.0.1:9/team"
min_severity = "info"
"""


def make_config(base: Path, alerts: str = "", head: str = "", channels: str = CHANNELS,
                plain_job: bool = True) -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base}/state"\n'
        f'[storage.local]\ntype = "local"\npath = "{base}/store"\n{channels}\n')
    (conf / "jobs.d" / "crm.toml").write_text(JOB.format(head=head, tail=alerts))
    if plain_job:
        (conf / "jobs.d" / "shop.toml").write_text(JOB.format(head="", tail=""))
    return conf


def problems(conf: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(conf)
    return [p.replace(str(conf) + "/", "") for p in caught.value.problems]


ROUTED = """
[alerts]
channels = ["oncall", "owner"]

[alerts.notify_on]
owner = ["success"]
oncall = ["failure", "recovery"]
"""


def test_routing_per_channel_and_the_default_for_jobs_without_it(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, ROUTED))
    crm, shop = config.jobs["crm"], config.jobs["shop"]
    # owner asked for success by name: told although its min_severity is warning.
    assert config.run_routes(crm) == {"oncall": ["failure", "recovery"], "owner": ["success"]}
    assert [c for c in ("oncall", "owner", "team") if crm.hears(c)] == ["oncall", "owner"]
    # Without [alerts]: every channel, the job's notify_on through each min_severity.
    assert shop.alerts is None and all(shop.hears(c) for c in ("oncall", "owner", "team"))
    assert config.run_routes(shop) == {"oncall": ["failure", "recovery"],
                                       "owner": ["failure", "recovery"],
                                       "team": ["failure", "recovery"]}


def test_a_channel_without_its_own_list_gets_notify_on_through_min_severity(
        tmp_path: Path) -> None:
    alerts = '[alerts]\nchannels = ["oncall", "team"]\n[alerts.notify_on]\noncall = []\n'
    config = load_config(make_config(tmp_path, alerts,
                                     head='notify_on = ["success", "failure"]'))
    crm = config.jobs["crm"]
    assert config.run_routes(crm) == {"oncall": [], "team": ["success", "failure"]}
    # notify_on alone (no channels): every channel hears the job, owner its own list.
    alerts = '[alerts.notify_on]\nowner = ["success"]\n'
    config = load_config(make_config(tmp_path, alerts,
                                     head='notify_on = ["success", "failure"]'))
    assert config.run_routes(config.jobs["crm"]) == {
        "oncall": ["failure"], "owner": ["success"], "team": ["success", "failure"]}
    assert config.jobs["crm"].hears("team")


@pytest.mark.parametrize("alerts, expected", [
    ('[alerts]\nchannels = ["oncall", "oncal"]\n',
     "jobs.d/crm.toml: alerts.channels.1: no alert channel 'oncal' in kbackupd.toml"
     " (configured: oncall, owner, team)"),
    ('[alerts.notify_on]\npager = ["failure"]\n',
     "jobs.d/crm.toml: alerts.notify_on.pager: no alert channel 'pager' in kbackupd.toml"
     " (configured: oncall, owner, team)"),
    ('[alerts.notify_on]\nowner = ["sucess"]\n',
     "jobs.d/crm.toml: alerts.notify_on.owner.0: Input should be 'failure', 'success' or"
     " 'recovery' (got 'sucess')"),
    ('[alerts]\nchannels = ["oncall"]\n[alerts.notify_on]\nowner = ["success"]\n',
     "jobs.d/crm.toml: alerts.notify_on: channel 'owner' is not in alerts.channels (oncall):"
     " add it there"),
    ('[alerts]\nchannel = ["oncall"]\n',
     "jobs.d/crm.toml: alerts.channel: unknown field (check the spelling)"),
    ('[alerts]\nchannels = "oncall"\n',
     "jobs.d/crm.toml: alerts.channels: Input should be a valid list (got 'oncall')"),
])
def test_bad_routing_is_one_line_naming_file_and_field(tmp_path: Path, alerts: str,
                                                       expected: str) -> None:
    assert problems(make_config(tmp_path, alerts)) == [expected]


def test_routing_to_a_channel_when_none_is_configured(tmp_path: Path) -> None:
    conf = make_config(tmp_path, '[alerts]\nchannels = ["oncall"]\n', channels="")
    assert problems(conf) == ["jobs.d/crm.toml: alerts.channels.0: no alert channel 'oncall'"
                              " in kbackupd.toml (configured: none)"]


def test_routing_is_part_of_the_configuration_snapshot(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, ROUTED))
    snapshot = config.redacted_snapshot(config.jobs["crm"])
    assert snapshot["job"]["alerts"] == {"channels": ["oncall", "owner"], "notify_on": {
        "owner": ["success"], "oncall": ["failure", "recovery"]}}
