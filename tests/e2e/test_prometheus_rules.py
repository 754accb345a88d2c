"""The shipped Prometheus rules and Grafana dashboard (packaging/monitoring/), checked by
promtool and fed with a real kbackupd's /metrics: the scraped samples become a promtool
test's input series, as Prometheus stores them with the README's scrape config
(honor_labels: true, so `job` is the backup job; `instance` names the host), and promtool
asserts which alerts fire: a failed run, a stale backup, a corrupt backup; a healthy job none.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alert_servers import QUIET
from conftest import KbEnv, wait_for, write_fake_now
from kbackup.ctl.client import http_request
from web_access import tls_daemon

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "packaging" / "monitoring"
RULES = MONITORING / "kbackup-rules.yml"
DASHBOARD = MONITORING / "kbackup-grafana.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: scripts/sysdeps.sh installs package prometheus")
INSTANCE = "db1:9187"
ALERTS = ["KbackupDaemonDown", "KbackupDaemonStuck", "KbackupBackupTooOld", "KbackupLastRunFailed",
          "KbackupVerificationFailed", "KbackupDiskFull", "KbackupDiskFilling"]


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS) + 1} rules found" in checked.stdout


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    """tests/monitoring/kbackup-rules-test.yml: each alert, firing and quiet, by hand-made
    series (daemon down by `up == 0`, disk filling by the free bytes' trend)."""
    tested = promtool("test", "rules", "kbackup-rules-test.yml", cwd=ROOT / "tests" / "monitoring")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_the_readme_scrape_config_is_valid(tmp_path: Path) -> None:
    """README "Monitoring": its prometheus.yml, with the shipped rules and the token and CA
    files in place, is what `promtool check config` accepts."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```yaml\n(# /etc/prometheus/prometheus.yml\n.*?)```", readme, re.S)
    assert found is not None
    config = found.group(1).replace("/usr/share/kbackupd/monitoring/", f"{MONITORING}/")
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/", f"{tmp_path}/"))
    (tmp_path / "kbackup.token").write_text("kbk_x\n")
    (tmp_path / "kbackup-ca.pem").write_text("")
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS) + 1} rules found" in checked.stdout


@needs_promtool
def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The real-metrics test below can fail: promtool says which alert differed."""
    series = [{"series": f'kbackup_last_run_success{{job="docs",instance="{INSTANCE}"}}',
               "values": "1x2"}]
    result = run_alert_test(tmp_path, series, {"KbackupLastRunFailed": [{"job": "docs"}]})
    assert result.returncode == 1
    assert "alertname: KbackupLastRunFailed" in result.stdout + result.stderr


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    assert all(t["expr"] for p in panels for t in p["targets"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance",
                                                                    "job"}


def summaries() -> dict[str, str]:
    """Each alert's summary template, read from the rules file (to expect its annotation)."""
    found = re.findall(r'- alert: (\w+)\n(?:.*\n)*?\s+summary: "(.*)"', RULES.read_text())
    return dict(found)


def expected_alert(alertname: str, labels: dict[str, str]) -> dict[str, Any]:
    severity = re.search(rf"alert: {alertname}\n(?:.*\n)*?\s+severity: (\w+)",
                         RULES.read_text())
    assert severity is not None
    full = {**labels, "instance": INSTANCE, "severity": severity.group(1)}
    summary = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: full.get(m.group(1), ""),
                     summaries()[alertname])
    return {"exp_labels": full, "exp_annotations": {"summary": summary}}


def run_alert_test(tmp_path: Path, series: list[dict[str, str]],
                   firing: dict[str, list[dict[str, str]]]) -> subprocess.CompletedProcess[str]:
    """promtool test rules with these series at minute 1: every alert of ALERTS fires for
    exactly the labels `firing` lists (none when it lists nothing)."""
    tests = [{"alertname": name, "eval_time": "1m",
              "exp_alerts": [expected_alert(name, labels) for labels in firing.get(name, [])]}
             for name in ALERTS]
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}]}
    path = tmp_path / f"scraped-{len(list(tmp_path.glob('scraped-*')))}.yml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return promtool("test", "rules", str(path))


def scraped_series(text: str) -> list[dict[str, str]]:
    """The samples of a /metrics answer as Prometheus stores them: empty labels dropped, `job`
    kept (honor_labels) or else the scrape job's (daemon-wide series: no rule reads their
    `job`), `instance` added; plus `up` 1."""
    series = [{"series": f'up{{job="kbackup",instance="{INSTANCE}"}}', "values": "1x2"}]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if v}
            labels = {"job": "kbackup", **labels, "instance": INSTANCE}
            text_labels = ",".join(f'{k}={json.dumps(v)}' for k, v in labels.items())
            series.append({"series": f"{sample.name}{{{text_labels}}}",
                           "values": f"{sample.value!r}x2"})
    return series


def scrape(kb: KbEnv) -> str:
    code, body = http_request(str(kb.socket), "GET", "/metrics")
    assert code == 200, body
    return body.decode()


def assert_fires(tmp_path: Path, kb: KbEnv,
                 firing: dict[str, list[dict[str, str]]]) -> str:
    text = scrape(kb)
    result = run_alert_test(tmp_path, scraped_series(text), firing)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{text}"
    return text


def start_two_jobs(kb: KbEnv, tmp_path: Path) -> Path:
    """docs (backed up fine, max_backup_age 2h) and broken (its directory removed after the
    daemon started, so its run fails), on a daemon whose clock a file sets; that file."""
    now_file = tmp_path / "fake-now"
    now_file.write_text(datetime.now(UTC).isoformat())
    for name in ("docs", "broken"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "letter.txt").write_text(f"{name}: dear customer\n")
        kb.write_job(name, f'targets = ["local"]\n[thresholds]\nmax_backup_age = "2h"\n'
                           f'[[files]]\nname = "{name}"\npath = "{tmp_path / name}"\n')
    kb.write_daemon(extra=QUIET)
    kb.start({"KBACKUP_FAKE_NOW_FILE": str(now_file)})
    shutil.rmtree(tmp_path / "broken")
    return now_file


@needs_promtool
def test_real_metrics_fire_the_right_alerts(kb: KbEnv, tmp_path: Path) -> None:
    now_file = start_two_jobs(kb, tmp_path)
    work = tmp_path / "promtool"
    work.mkdir()
    backup = kb.run_backup("docs")
    verified = kb.ctl("verify", backup["id"], "--level", "restore-test", "--wait")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert kb.ctl("run", "broken", "--wait").returncode == 1
    wait_for(lambda: kb.ctl("check", "broken").returncode != 0, what="broken's health")
    text = assert_fires(work, kb, {"KbackupLastRunFailed": [{"job": "broken"}]})
    assert_dashboard_metrics_exist(text)
    [checked] = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "kbackup_health_checked_timestamp_seconds"]
    assert abs(checked - datetime.now(UTC).timestamp()) < 300  # the daemon's own heartbeat

    write_fake_now(now_file, datetime.now(UTC) + timedelta(hours=3))  # docs' backup is stale
    wait_for(lambda: kb.ctl("check", "docs").returncode == 2, what="docs' age CRITICAL")
    assert_fires(work, kb, {"KbackupLastRunFailed": [{"job": "broken"}],
                            "KbackupBackupTooOld": [{"job": "docs", "check": "backup_age"}]})

    stored = kb.backup_dir(backup) / "files-docs.tar.zst"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    assert kb.ctl("verify", backup["id"], "--wait").returncode == 1
    wait_for(lambda: "verification" in kb.ctl("check", "docs").stdout, what="docs corrupt")
    # (No good backup left: its age is no longer the daemon's concern, the corruption is.)
    assert_fires(work, kb, {"KbackupLastRunFailed": [{"job": "broken"}],
                            "KbackupVerificationFailed": [{"job": "docs",
                                                           "check": "verification"}]})

def assert_dashboard_metrics_exist(text: str) -> None:
    """Every kbackup_* name the dashboard queries is a series name of the real /metrics."""
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                if line.startswith("kbackup_")}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"]
                if isinstance(v.get("query"), dict)]
    used = {name for q in queries for name in re.findall(r"\bkbackup_\w+", q)}
    assert used - exported == set(), f"not in /metrics: {used - exported}"
    assert len(used) >= 9


def test_prometheus_scrapes_over_tls_with_a_viewer_token(tmp_path: Path) -> None:
    """README "Monitoring": the scrape config's way in, a viewer token on [web] listen."""
    with tls_daemon(tmp_path) as (kb, remote):
        made = kb.ctl("token", "create", "prometheus", "--role", "viewer", "--expires", "365d")
        assert made.returncode == 0, made.stderr
        answer = remote.request("GET", "/metrics", token=made.stdout.strip())
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "kbackup_info{version=" in answer.body.decode()
        assert remote.request("GET", "/metrics").status == 401
