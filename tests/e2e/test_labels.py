"""Issue 13: backup tags and labels, retention per schedule tag, pausing a job; the catalog's
schema version and its migrations.

Unit tests on a real catalog and the scheduler with a fake clock; end-to-end tests with the
real daemon (its scheduler driven through KBACKUP_FAKE_NOW_FILE) and a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alert_servers import FakeClock, HealthEnv, henv
from conftest import KbEnv, PgServer, wait_for, write_fake_now
from kbackup.catalog import SCHEMA, SCHEMA_VERSION, Catalog, CatalogError
from kbackup.config import ConfigError, RetentionConfig, load_config
from kbackup.ctl.client import http_request
from kbackup.health_facts import OK, WARNING
from kbackup.labels import check_label
from kbackup.repository import Manifest
from kbackup.retention import Candidate, decide
from kbackup.scheduler import Scheduler

__all__ = ["henv"]  # the fixture, imported for pytest

UTC_TZ = ZoneInfo("UTC")
ME = pwd.getpwuid(os.getuid()).pw_name
BAD_LABELS = ["", "x" * 65, "a b", "../x"]


# ---------------------------------------------------------------------- labels


@pytest.mark.parametrize("label", ["weekly", "pre-upgrade", "v1.2_rc-3", "x" * 64])
def test_valid_labels(label: str) -> None:
    assert check_label(label) == label


@pytest.mark.parametrize("label", [*BAD_LABELS, "é", "a/b", None, 5])
def test_invalid_labels_have_a_one_line_reason(label: object) -> None:
    with pytest.raises(ValueError) as caught:
        check_label(label)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid label")
    assert "1-64 characters of A-Z a-z 0-9 . _ -" in message


def test_cli_refuses_a_bad_label_before_calling_the_daemon(tmp_path: Path) -> None:
    from kbackup.cli import main

    # No daemon at this socket: the label is refused first, with exit 2.
    socket = str(tmp_path / "none.sock")
    assert main(["--socket", socket, "run", "shop", "--label", "a b"]) == 2


def test_old_manifests_load_without_tag_and_label() -> None:
    old = {"format": 1, "id": "20261123T020000Z-abcdef", "job": "shop", "trigger": "scheduled",
           "host": "h", "kbackup_version": "0.1.0", "started_at": "2026-11-23T02:00:00Z",
           "finished_at": "2026-11-23T02:01:00Z", "components": []}
    manifest = Manifest.model_validate(old)
    assert (manifest.tag, manifest.label) == (None, None)
    dumped = Manifest.model_validate({**old, "tag": "daily", "label": "x"}).model_dump()
    assert (dumped["tag"], dumped["label"]) == ("daily", "x")


# ---------------------------------------------------------------------- catalog schema


def test_catalog_made_with_the_old_schema_is_migrated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "catalog.sqlite3")
    old.executescript(SCHEMA)  # the layout before schema versions (user_version 0)
    old.execute("INSERT INTO backups (id, job, status, trigger, started_at, targets, manifest)"
                " VALUES ('20261101T020000Z-aaaaaa', 'shop', 'complete', 'scheduled',"
                " '2026-11-01T02:00:00Z', '{\"local\": \"complete\"}', '{}')")
    old.commit()
    old.close()

    catalog = Catalog(state)
    assert catalog.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
    row = catalog.get_backup("20261101T020000Z-aaaaaa")
    assert row is not None and row["status"] == "complete"
    assert (row["tag"], row["label"]) == (None, None)  # old rows: no tag, no label
    catalog.upsert_backup("20261102T020000Z-bbbbbb", "shop", "complete", "manual",
                          "2026-11-02T02:00:00Z", None, 1, {}, None, tag=None, label="keep")
    assert [b["id"] for b in catalog.backups("shop", label="keep")] == [
        "20261102T020000Z-bbbbbb"]
    now = datetime(2026, 11, 2, tzinfo=UTC)
    catalog.set_pause("shop", "alice", "why", None, now)
    assert catalog.active_pause("shop", now)["paused_by"] == "alice"  # type: ignore[index]
    catalog.close()
    # Opening again is a no-op (already at the current version).
    again = Catalog(state)
    assert again.get_backup("20261102T020000Z-bbbbbb")["label"] == "keep"  # type: ignore[index]
    again.close()


def test_a_catalog_from_a_newer_kbackupd_is_refused(tmp_path: Path, kb: KbEnv) -> None:
    state = tmp_path / "newer"
    Catalog(state).close()
    db = sqlite3.connect(state / "catalog.sqlite3")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CatalogError) as caught:
        Catalog(state)
    message = str(caught.value)
    assert "\n" not in message and str(state / "catalog.sqlite3") in message
    assert f"version {SCHEMA_VERSION + 1} is newer than this kbackupd knows" in message

    # The daemon refuses to start on it, with that one line.
    kb.state.mkdir(parents=True)
    (kb.state / "catalog.sqlite3").write_bytes((state / "catalog.sqlite3").read_bytes())
    proc = kb.start(wait=False)
    assert proc.wait(30) == 1
    lines = [line for line in kb.logs().splitlines() if "newer than this kbackupd" in line]
    assert len(lines) == 1 and "event=daemon.start_failed" in lines[0]


# ---------------------------------------------------------------------- scheduler


def write_config(base: Path, schedules: str, extra: str = "") -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(
        f'[daemon]\nstate_dir = "{base / "state"}"\n'
        f'[storage.local]\ntype = "local"\npath = "{base / "store"}"\n')
    (conf / "jobs.d" / "shop.toml").write_text(
        f"schedules = {schedules}\ntargets = [\"local\"]\n{extra}\n"
        f'[[files]]\nname = "pdfs"\npath = "{base}"\n')
    return conf


DAILY_WEEKLY = ('[ { cron = "0 2 * * *", tag = "daily" },'
                ' { cron = "0 2 * * 0", tag = "weekly" } ]')


def test_scheduled_runs_carry_their_tag_and_the_rarest_wins(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, DAILY_WEEKLY))
    catalog = Catalog(tmp_path / "state")
    clock = FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))  # a Friday
    launched: list[tuple[str, str, str, str | None, int]] = []
    scheduler = Scheduler(catalog, lambda job, trig, kind, tag: launched.append(
        (job, trig, kind, tag, clock.now().day)), clock)
    scheduler.configure(config)
    while clock.current < datetime(2026, 11, 23, 12, 0, tzinfo=UTC):
        clock.current += timedelta(minutes=5)
        scheduler.tick()
    # Saturday daily; Sunday both are due at 02:00: one run, recorded as weekly; Monday daily.
    assert launched == [("shop", "scheduled", "backup", "daily", 21),
                        ("shop", "scheduled", "backup", "weekly", 22),
                        ("shop", "scheduled", "backup", "daily", 23)]

    # Down from Monday noon to Thursday: one catch-up, for the tag it stands in for.
    clock.current = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    later = Scheduler(catalog, lambda job, trig, kind, tag: launched.append(
        (job, trig, kind, tag, clock.now().day)), clock)
    later.configure(config)
    later.tick()
    assert launched[3:] == [("shop", "catch-up", "backup", "daily", 26)]


def test_a_paused_job_is_skipped_and_resumes_without_a_catch_up_storm(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = write_config(tmp_path, '[ { cron = "0 2 * * *", tag = "daily" } ]',
                        '[verify]\nschedule = "0 4 * * *"\n')
    config = load_config(conf)
    catalog = Catalog(tmp_path / "state")
    clock = FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    launched: list[tuple[str, str | None, datetime]] = []
    scheduler = Scheduler(catalog, lambda job, trig, kind, tag: launched.append(
        (kind, tag, clock.now())), clock)
    scheduler.configure(config)
    catalog.set_pause("shop", "alice", "disk swap", None, clock.now())
    caplog.set_level("INFO", logger="kbackup.scheduler")
    while clock.current < datetime(2026, 11, 23, 12, 0, tzinfo=UTC):
        clock.current += timedelta(minutes=5)
        scheduler.tick()
    assert launched == []  # neither backups nor scheduled verifications
    skipped = [r.getMessage() for r in caplog.records if "schedule.paused" in r.getMessage()]
    assert len(skipped) == 6  # 3 days x (backup + verify), one line each
    assert skipped[0].startswith("event=schedule.paused job=shop kind=backup tag=daily")
    assert "paused_by=alice reason='disk swap'" in skipped[0]

    # Resume: nothing fires at once (no catch-up of the skipped days), then the schedule goes on.
    catalog.end_pause("shop", "bob", clock.now())
    restarted = Scheduler(catalog, lambda job, trig, kind, tag: launched.append(
        (kind, tag, clock.now())), clock)
    restarted.configure(config)  # a restart after the resume must not catch up either
    for scheduler_ in (scheduler, restarted):
        scheduler_.tick()
    assert launched == []
    while clock.current < datetime(2026, 11, 24, 3, 0, tzinfo=UTC):
        clock.current += timedelta(minutes=5)
        restarted.tick()
    assert [(k, t) for k, t, _ in launched] == [("backup", "daily")]

    # A pause with an end expires by itself.
    catalog.set_pause("shop", "alice", None, clock.now() + timedelta(hours=1), clock.now())
    assert catalog.active_pause("shop", clock.now()) is not None
    assert catalog.active_pause("shop", clock.now() + timedelta(hours=1)) is None


# ---------------------------------------------------------------------- retention per tag


START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def tagged_days(days: int) -> list[Candidate]:
    """One backup a day; Sundays (2026-01-04 is one) are tagged weekly, the rest daily."""
    backups = []
    for index in range(days):
        when = START + timedelta(days=index)
        backups.append(Candidate(f"b{index:03d}", when, "complete", "scheduled",
                                 tag="weekly" if when.weekday() == 6 else "daily"))
    return backups


def test_rules_per_tag_keep_the_newest_of_each_tag() -> None:
    backups = tagged_days(60)
    policy = RetentionConfig(tags={"daily": {"keep_last": 7}, "weekly": {"keep_last": 4}})
    decisions = decide(backups, policy, UTC_TZ, START + timedelta(days=60))
    kept = {d.backup.id: d.reasons for d in decisions if d.keep}
    dailies = [b.id for b in reversed(backups) if b.tag == "daily"][:7]
    weeklies = [b.id for b in reversed(backups) if b.tag == "weekly"][:4]
    assert set(kept) == set(dailies) | set(weeklies)
    assert kept[weeklies[-1]] == ["tag weekly: keep_last 4"]
    assert kept[dailies[0]][0] == "tag daily: keep_last 7"
    assert all(not d.reasons for d in decisions if not d.keep)


def test_job_wide_and_tag_rules_add_up_and_periods_count_within_a_tag() -> None:
    backups = tagged_days(58)  # 1 January to 27 February
    backups.append(Candidate("manual", START + timedelta(days=58), "complete", "manual"))
    policy = RetentionConfig(keep_last=2, tags={"weekly": {"keep_monthly": 2}})
    decisions = {d.backup.id: d for d in decide(backups, policy, UTC_TZ,
                                                START + timedelta(days=61))}
    assert decisions["manual"].reasons == ["keep_last 2"]
    assert decisions["b057"].reasons == ["keep_last 2"]
    # The newest weekly backup of each of the two newest months (February, January).
    feb = max(b.id for b in backups if b.tag == "weekly" and b.started.month == 2)
    jan = max(b.id for b in backups if b.tag == "weekly" and b.started.month == 1)
    assert decisions[feb].reasons == ["tag weekly: keep_monthly 2 (2026-02)"]
    assert decisions[jan].reasons == ["tag weekly: keep_monthly 2 (2026-01)"]
    assert sum(d.keep for d in decisions.values()) == 4


def test_backups_no_rule_covers_are_kept() -> None:
    backups = tagged_days(20)
    backups.append(Candidate("manual", START + timedelta(days=20), "complete", "manual"))
    policy = RetentionConfig(tags={"weekly": {"keep_last": 1}})
    decisions = {d.backup.id: d for d in decide(backups, policy, UTC_TZ, START)}
    assert decisions["manual"].reasons == ["no rule covers untagged backups"]
    assert decisions["b000"].reasons == ["no rule covers tag daily backups"]
    weeklies = sorted(b.id for b in backups if b.tag == "weekly")
    assert decisions[weeklies[-1]].keep and not decisions[weeklies[0]].keep


def test_unknown_tag_in_retention_is_a_config_error(tmp_path: Path) -> None:
    conf = write_config(tmp_path, DAILY_WEEKLY,
                        "[retention.tags.monthly]\nkeep_last = 12\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf)
    assert str(caught.value) == (
        f"{conf / 'jobs.d' / 'shop.toml'}: retention.tags.monthly: not a schedule tag of this"
        " job (its schedules have: daily, weekly)")
    (conf / "jobs.d" / "shop.toml").write_text(
        (conf / "jobs.d" / "shop.toml").read_text().replace("monthly", "weekly"))
    assert load_config(conf).jobs["shop"].retention.tags["weekly"].keep_last == 12


# ---------------------------------------------------------------------- health


async def test_a_long_pause_warns(henv: HealthEnv) -> None:
    henv.job(schedules='[ { cron = "0 2 * * *", tag = "daily" } ]')
    await henv.evaluate()  # the job and its schedule are seen from now on
    assert henv.by_key(await henv.evaluate())["shop/paused"].reason == "not paused"
    paused_at = henv.clock.current
    henv.db.set_pause("shop", "alice", "storage migration", None, paused_at)
    check = henv.by_key(await henv.evaluate())["shop/paused"]
    assert check.severity == OK
    assert check.reason == ("job paused since 2026-11-23 12:00 UTC by alice"
                            " (storage migration)")
    henv.clock.current = paused_at + timedelta(hours=30, minutes=1)  # max_backup_age 30h
    results = henv.by_key(await henv.evaluate())
    assert results["shop/paused"].severity == WARNING
    assert results["shop/paused"].next_step == "kbackupctl resume shop"
    # The skipped schedule is not reported as missed: the pause explains it.
    assert results["shop/missed_schedule/daily"].severity == OK
    henv.db.end_pause("shop", "bob", henv.clock.current)
    assert henv.by_key(await henv.evaluate())["shop/paused"].severity == OK


# ---------------------------------------------------------------------- end to end


def runs(kb: KbEnv) -> list[dict[str, Any]]:
    return kb.ctl_items("runs")  # type: ignore[no-any-return]


def test_run_with_a_label(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    kb.shop_job(pg, shop_db, None)
    kb.start()
    for bad in BAD_LABELS:
        result = kb.ctl("run", "shop", "--label", bad)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kbackupctl: invalid label"), lines
    # The API checks too, whoever calls it.
    code, body = http_request(str(kb.socket), "POST", "/v1/jobs/shop/run",
                              json.dumps({"label": "../x"}).encode())
    assert code == 400 and json.loads(body)["error"] == ("label: expected 1-64 characters of"
                                                         " A-Z a-z 0-9 . _ -")
    unknown = kb.ctl("run", "nosuch")
    assert unknown.returncode != 0
    assert unknown.stderr.strip() == "kbackupctl: no job named 'nosuch' (jobs: shop)"
    assert runs(kb) == []  # nothing was started

    result = kb.ctl("run", "shop", "--label", "pre-upgrade", "--wait")
    assert result.returncode == 0, result.stderr
    labelled = kb.ctl_json("show", result.stdout.split()[-1])
    assert (labelled["trigger"], labelled["tag"], labelled["label"]) == (
        "manual", None, "pre-upgrade")
    on_disk = json.loads((kb.backup_dir(labelled) / "manifest.json").read_text())
    assert (on_disk["trigger"], on_disk["tag"], on_disk["label"]) == (
        "manual", None, "pre-upgrade")
    plain = kb.run_backup()
    assert plain["label"] is None

    assert [b["id"] for b in kb.ctl_items("backups", "--label", "pre-upgrade")] == [
        labelled["id"]]
    assert [b["id"] for b in kb.ctl_items("backups", "shop", "--label", "pre-upgrade")] == [
        labelled["id"]]
    assert kb.ctl_items("backups", "--label", "nothing") == []
    listing = kb.ctl("backups").stdout.splitlines()
    assert "TAG/LABEL" in listing[0]
    assert any(labelled["id"] in line and "pre-upgrade" in line for line in listing)
    shown = kb.ctl("show", labelled["id"]).stdout
    assert "label     pre-upgrade" in shown and "tag       -" in shown

    # The label lives in the manifest: a new catalog learns it back from the storage.
    kb.stop()
    for path in kb.state.glob("catalog.sqlite3*"):
        path.unlink()
    kb.start()
    assert kb.ctl_items("backups") == []
    assert kb.ctl_json("catalog", "rescan")["found"] == 2
    assert kb.ctl_json("show", labelled["id"])["label"] == "pre-upgrade"
    assert [b["id"] for b in kb.ctl_items("backups", "--label", "pre-upgrade")] == [
        labelled["id"]]


def set_now(path: Path, when: datetime) -> None:
    write_fake_now(path, when)


def complete_backups(kb: KbEnv) -> list[dict[str, Any]]:
    return [b for b in kb.ctl_items("backups") if b["status"] in ("complete", "pruned")]


def test_scheduled_tags_and_retention_per_tag(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    now_file = kb.base / "now"
    day = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # a Sunday
    set_now(now_file, day)
    kb.write_job("shop", f"""
schedules = [ {{ cron = "0 2 * * *", tag = "daily" }}, {{ cron = "0 3 * * 0", tag = "weekly" }} ]
targets = ["local"]

[retention.tags.daily]
keep_last = 2

[retention.tags.weekly]
keep_last = 1

[[postgres]]
name = "shop"
dsn = "{pg.dsn(shop_db)}"
globals = false
""")
    kb.start({"KBACKUP_FAKE_NOW_FILE": str(now_file)})
    fires = [day.replace(hour=2), day.replace(hour=3), day.replace(hour=2) + timedelta(days=1),
             day.replace(hour=2) + timedelta(days=2)]
    for count, fire in enumerate(fires, 1):
        set_now(now_file, fire + timedelta(seconds=5))
        wait_for(lambda n=count: len(complete_backups(kb)) == n  # type: ignore[misc]
                 and not [r for r in runs(kb) if r["status"] == "running"],
                 what=f"scheduled backup {count}")
    # Oldest first. Not sorted by started_at: it has whole seconds, and two of these quick
    # backups can start within one; the listing is newest first, ties in insertion order.
    backups = list(reversed(complete_backups(kb)))
    assert [(b["trigger"], b["tag"]) for b in backups] == [
        ("scheduled", "daily"), ("scheduled", "weekly"), ("scheduled", "daily"),
        ("scheduled", "daily")]
    manifest = json.loads((kb.backup_dir(backups[1]) / "manifest.json").read_text())
    assert manifest["tag"] == "weekly" and manifest["label"] is None
    # Retention after each backup: 2 dailies, 1 weekly; the oldest daily went.
    assert [b["status"] for b in backups] == ["pruned", "complete", "complete", "complete"]
    assert [b["id"] for b in kb.ctl_items("backups", "--label", "weekly")] == [backups[1]["id"]]

    manual = kb.run_backup()
    report = kb.ctl_json("prune", "shop", "--dry-run")
    reasons = {d["id"]: d["reasons"] for d in report["targets"]["local"]}
    assert reasons[manual["id"]][0] == "no rule covers untagged backups"
    assert reasons[backups[1]["id"]] == ["tag weekly: keep_last 1"]
    assert reasons[backups[2]["id"]] == ["tag daily: keep_last 2"]
    assert all(d["keep"] for d in report["targets"]["local"])
    text = kb.ctl("prune", "shop", "--dry-run").stdout
    assert "tag weekly: keep_last 1" in text and "dry run: nothing was removed" in text


def test_pause_and_resume(kb: KbEnv, pg: PgServer, shop_db: str) -> None:
    now_file = kb.base / "now"
    day = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    set_now(now_file, day)
    env = {"KBACKUP_FAKE_NOW_FILE": str(now_file)}
    kb.shop_job(pg, shop_db, None)
    kb.start(env)

    missing = kb.ctl("pause", "nosuch")
    assert missing.returncode != 0
    assert missing.stderr.strip() == "kbackupctl: no job named 'nosuch' (jobs: shop)"
    paused = kb.ctl_json("pause", "shop", "--reason", "db migration")
    assert paused["paused"] == {"paused_at": "2026-11-22T01:00:00Z", "paused_by": ME,
                                "reason": "db migration", "until": None}
    text = kb.ctl("pause", "shop", "--reason", "db migration")
    assert text.returncode == 0 and "paused since" in text.stdout

    def pause_of(status: dict[str, Any]) -> Any:
        return status["jobs"][0]["paused"]

    assert pause_of(kb.ctl_json("status"))["reason"] == "db migration"
    assert "paused (db migration)" in kb.ctl("status").stdout
    assert "paused (db migration)" in kb.ctl("jobs").stdout
    assert kb.ctl_json("jobs")[0]["paused"]["paused_by"] == ME

    # Kept across a restart and a reload.
    kb.stop()
    kb.start(env)
    assert pause_of(kb.ctl_json("status"))["reason"] == "db migration"
    assert kb.ctl("reload").returncode == 0
    assert pause_of(kb.ctl_json("status"))["reason"] == "db migration"

    # Its scheduled time passes: skipped, one log line, no run.
    set_now(now_file, day.replace(hour=2) + timedelta(seconds=5))
    wait_for(lambda: "event=schedule.paused job=shop" in kb.logs(), what="the skip")
    assert [line for line in kb.logs().splitlines() if "event=schedule.paused" in line]
    assert runs(kb) == []

    refused = kb.ctl("run", "shop")
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "paused since 2026-11-22T01:00:00Z by " + ME in lines[0]
    assert "(db migration)" in lines[0] and "--force" in lines[0]
    assert runs(kb) == []
    forced = kb.ctl("run", "shop", "--force", "--wait")
    assert forced.returncode == 0, forced.stderr
    assert [r["trigger"] for r in runs(kb)] == ["manual"]

    resumed = kb.ctl_json("resume", "shop")
    assert resumed["resumed"] is True and resumed["was"]["reason"] == "db migration"
    assert pause_of(kb.ctl_json("status")) is None
    assert kb.ctl("resume", "shop").stdout.strip() == "job shop was not paused"
    time.sleep(1.5)
    assert len(runs(kb)) == 1  # no catch-up of the skipped run at resume
    set_now(now_file, day.replace(hour=2) + timedelta(days=1, seconds=5))
    wait_for(lambda: len(runs(kb)) == 2, what="the next scheduled run")
    assert runs(kb)[0]["trigger"] == "scheduled"
    wait_for(lambda: runs(kb)[0]["status"] != "running", what="the scheduled run's end")

    # --for: the pause ends by itself.
    timed = kb.ctl_json("pause", "shop", "--for", "1h")
    assert timed["paused"]["until"] is not None and timed["paused"]["reason"] is None
    assert pause_of(kb.ctl_json("status"))["until"] == timed["paused"]["until"]
    bad = kb.ctl("pause", "shop", "--for", "soon")
    assert bad.returncode != 0 and bad.stderr.startswith("kbackupctl: for: ")
    set_now(now_file, day + timedelta(days=1, hours=4))
    assert pause_of(kb.ctl_json("status")) is None
    assert kb.ctl("run", "shop").returncode == 0
