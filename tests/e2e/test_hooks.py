"""[hooks] around the app (issue 17), with real commands through a real kbackupd: the order of
before/after/on_failure hooks and the environment they get, a failing before_backup stopping
the run before anything is stored, on_failure after a failing pg_dump, a timeout killing a
hook's whole process group, after_restore after a failed restore with both failures
reported, `restore --no-hooks`, output in `kbackupctl runs`, and bad [hooks] tables."""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from pathlib import Path

import pytest

from conftest import KbEnv, PgServer, wait_for

RECORD = """#!/bin/sh
# One line per call: which command, then the run's context from the environment.
printf '%s|%s|%s|%s|%s|%s|%s|%s\\n' "$1" "$KBACKUP_HOOK" "$KBACKUP_JOB" "$KBACKUP_STATUS" \\
    "$KBACKUP_BACKUP_ID" "$KBACKUP_RESTORE_ID" "$KBACKUP_COMPONENTS" "$KBACKUP_ERROR" >> {log}
env > {log}.env
echo "stdout of $1"
echo "stderr of $1" >&2
"""


def recorder(base: Path) -> tuple[Path, Path]:
    """A hook program that appends its name and context to a log file."""
    log = base / "hooks.log"
    script = base / "record.sh"
    script.write_text(RECORD.format(log=log))
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[list[str]]:
    """The recorder's lines: [name, hook, job, status, backup, restore, components, error]."""
    if not log.exists():
        return []
    return [line.split("|") for line in log.read_text().splitlines()]


def files_job(kb: KbEnv, tree: Path, hooks: str) -> None:
    kb.write_job("docs", f'targets = ["local"]\n\n[hooks]\n{hooks}\n\n'
                         f'[[files]]\nname = "docs"\npath = "{tree}"\n')


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("hello\n")
    return root


def test_backup_hooks_run_in_order_with_the_context_and_their_output_is_kept(
        kb: KbEnv, tree: Path) -> None:
    script, log = recorder(kb.base)
    files_job(kb, tree, f'before_backup = [["{script}", "stop"], ["{script}", "flush"]]\n'
                        f'after_backup = [["{script}", "start"]]\n'
                        f'on_failure = [["{script}", "alarm"]]')
    kb.start()
    backup = kb.run_backup("docs")
    seen = calls(log)
    assert [c[:4] for c in seen] == [["stop", "before_backup", "docs", "running"],
                                     ["flush", "before_backup", "docs", "running"],
                                     ["start", "after_backup", "docs", "complete"]]
    assert {c[4] for c in seen} == {backup["id"]}
    assert seen[0][6] == "docs" and seen[2][6] == "docs,config"
    assert seen[2][7] == ""
    env = dict(line.split("=", 1) for line in (kb.base / "hooks.log.env").read_text().split(
        "\n") if "=" in line)
    assert env["KBACKUP_RUN_ID"] == backup["id"]
    # The daemon's own environment is not handed on (only PATH, HOME, LANG, TZ and context).
    assert "KBACKUP_CONFIG_DIR" not in env and "KBACKUP_SOCKET" not in env
    run = next(r for r in kb.ctl_items("runs", "docs") if r["id"] == backup["id"])
    assert [(h["hook"], h["argv"][1], h["exit"]) for h in run["hooks"]] == [
        ("before_backup", "stop", 0), ("before_backup", "flush", 0), ("after_backup", "start", 0)]
    assert run["hooks"][0]["stdout"] == "stdout of stop\n"
    assert run["hooks"][2]["stderr"] == "stderr of start\n"
    listing = kb.ctl("runs", "docs").stdout
    assert "HOOKS" in listing and "3 ok" in listing
    detail = kb.ctl("runs", "--id", backup["id"]).stdout
    assert "after_backup hook: " in detail and "stdout: stdout of start" in detail
    assert "stderr: stderr of flush" in kb.ctl("show", backup["id"]).stdout
    hook_lines = [line for line in kb.logs().splitlines() if "event=hook " in line]
    assert len(hook_lines) == 3
    assert "hook=after_backup argv0=record.sh exit=0 seconds=" in hook_lines[2]


def test_a_failing_before_backup_stops_the_run_before_anything_is_stored(
        kb: KbEnv, tree: Path) -> None:
    script, log = recorder(kb.base)
    failing = "echo stopping; echo 'Failed to stop app.service: Unit not loaded.' >&2; exit 3"
    files_job(kb, tree, f'before_backup = [["sh", "-c", "{failing}"], ["{script}", "never"]]\n'
                        f'after_backup = [["{script}", "start"]]\n'
                        f'on_failure = [["{script}", "alarm"]]')
    kb.start()
    result = kb.ctl("run", "docs", "--wait")
    assert result.returncode == 1
    line = (f'before_backup hook "{shlex.join(["sh", "-c", failing])}" failed (exit 3):'
            " Failed to stop app.service: Unit not loaded.")
    assert f"FAILED: {line}" in result.stderr
    run = kb.ctl_items("runs", "docs")[0]
    assert run["status"] == "failed" and run["error"] == line
    assert [h["hook"] for h in run["hooks"]] == ["before_backup", "on_failure"]
    # Nothing was dumped: no object of the job in the storage, no backup in the catalog.
    assert not [p for p in kb.store.rglob("*") if p.is_file()]
    assert [b["status"] for b in kb.ctl_items("backups", "docs")] == ["failed"]
    assert [c[:4] + [c[7]] for c in calls(log)] == [
        ["alarm", "on_failure", "docs", "failed", line]]
    assert "before_backup FAILED" in kb.ctl("runs", "docs").stdout


def test_on_failure_runs_when_the_dump_fails(kb: KbEnv, pg: PgServer) -> None:
    script, log = recorder(kb.base)
    kb.write_job("shop", f"""targets = ["local"]

[hooks]
before_backup = [["{script}", "stop"]]
after_backup = [["{script}", "start"]]
on_failure = [["{script}", "start-again"], ["sh", "-c", "echo mail failed >&2; exit 1"]]

[[postgres]]
name = "shop"
dsn = "{pg.dsn(f"kbt_missing_{uuid.uuid4().hex[:8]}")}"
""")
    kb.start()
    result = kb.ctl("run", "shop", "--wait")
    assert result.returncode == 1
    seen = calls(log)
    assert [c[:2] for c in seen] == [["stop", "before_backup"], ["start-again", "on_failure"]]
    assert seen[1][3] == "failed" and "does not exist" in seen[1][7]
    run = kb.ctl_items("runs", "shop")[0]
    # The dump's reason first, then the on_failure command that failed too.
    assert "does not exist" in run["error"].split(";")[0]
    assert run["error"].endswith("""on_failure hook "sh -c 'echo mail failed >&2; exit 1'\""""
                                 " failed (exit 1): mail failed")


def test_a_hook_past_its_timeout_is_killed_with_its_children(kb: KbEnv, tree: Path) -> None:
    pidfile = kb.base / "sleeper.pid"
    files_job(kb, tree, f'timeout = "2s"\nbefore_backup = [["sh", "-c",'
                        f' "sleep 300 & echo $! > {pidfile}; wait"]]')
    kb.start()
    started = time.monotonic()
    result = kb.ctl("run", "docs", "--wait")
    took = time.monotonic() - started
    assert result.returncode == 1
    assert f"""before_backup hook "sh -c 'sleep 300 & echo $! > {pidfile}; wait'" timed out""" \
           " after 2s (killed)" in result.stderr
    assert took < 15
    sleeper = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{sleeper}").exists() or
             "Z" in Path(f"/proc/{sleeper}/stat").read_text().split()[2], 10,
             "the hook's child to be killed")
    run = kb.ctl_items("runs", "docs")[0]
    assert run["hooks"][0]["timed_out"] is True and run["hooks"][0]["exit"] is None
    assert "exit=timeout" in kb.logs()


def test_after_restore_runs_after_a_failed_restore_and_both_failures_are_reported(
        kb: KbEnv, tree: Path) -> None:
    script, log = recorder(kb.base)
    gone = tree.with_name("docs.moved")
    # before_restore takes the live tree away, so the safety backup fails after it ran.
    files_job(kb, tree, f'before_restore = [["{script}", "stop"], ["mv", "{tree}", "{gone}"]]\n'
                        'after_restore = [["sh", "-c", "echo app did not start >&2; exit 4"],'
                        f' ["{script}", "start"]]')
    kb.start()
    backup = kb.run_backup("docs")
    result = kb.ctl("restore", backup["id"], "--in-place", "--yes")
    assert result.returncode == 1
    restore = kb.ctl_items("restores", "docs")[0]
    error = restore["error"]
    first, _, hook = error.partition("; after_restore hook ")
    assert "safety backup" in first and "nothing was changed" in first
    assert hook == ("\"sh -c 'echo app did not start >&2; exit 4'\" failed (exit 4):"
                    " app did not start")
    assert restore["status"] == "failed"
    seen = calls(log)
    assert [c[:4] for c in seen] == [["stop", "before_restore", "docs", "running"],
                                     ["start", "after_restore", "docs", "failed"]]
    assert seen[1][5] == restore["id"] and seen[1][4] == backup["id"]
    assert seen[1][7] == first
    run = next(r for r in kb.ctl_items("runs", "docs") if r["id"] == restore["id"])
    assert [h["hook"] for h in run["hooks"]] == ["before_restore"] * 2 + ["after_restore"] * 2
    assert "after_restore FAILED" in kb.ctl("runs", "docs").stdout
    # The safety backup (trigger pre-restore) ran no backup hooks.
    assert not [c for c in seen if c[1].endswith("_backup") or c[1] == "on_failure"]


def test_restore_hooks_run_and_no_hooks_skips_them(kb: KbEnv, tree: Path) -> None:
    script, log = recorder(kb.base)
    files_job(kb, tree, f'before_restore = [["{script}", "stop"]]\n'
                        f'after_restore = [["{script}", "start"]]')
    kb.start()
    backup = kb.run_backup("docs")
    plan = kb.ctl("restore", backup["id"], "--files-to", str(kb.base / "out1"), "--dry-run")
    assert f"before_restore hook: {script} stop" in plan.stdout
    assert f"after_restore hook: {script} start" in plan.stdout
    planned = kb.ctl_json("restore", backup["id"], "--files-to", str(kb.base / "o"),
                          "--dry-run", "--no-hooks")
    assert planned["hooks"] == {} and planned["request"]["no_hooks"] is True
    skipped = kb.ctl("restore", backup["id"], "--files-to", str(kb.base / "o"), "--dry-run",
                     "--no-hooks")
    assert "hooks: skipped (--no-hooks)" in skipped.stdout

    done = kb.ctl("restore", backup["id"], "--files-to", str(kb.base / "out1"), "--yes")
    assert done.returncode == 0, done.stderr
    seen = calls(log)
    assert [c[:4] for c in seen] == [["stop", "before_restore", "docs", "running"],
                                     ["start", "after_restore", "docs", "complete"]]
    assert seen[0][6] == "docs" and seen[1][7] == ""
    log.unlink()
    done = kb.ctl("restore", backup["id"], "--files-to", str(kb.base / "out2"), "--yes",
                  "--no-hooks")
    assert done.returncode == 0, done.stderr
    assert (kb.base / "out2").exists() and not log.exists()
    assert kb.ctl_items("runs", "docs")[0]["hooks"] == []


@pytest.mark.parametrize(("hooks", "expected"), [
    ('before_backup = "systemctl stop app"', "hooks.before_backup: expected a list of"
     " commands, each an argv list"),
    ("before_backup = [[]]", "hooks.before_backup: command 0: expected a non-empty list"),
    ('after_restore = [["systemctl", 3]]', "hooks.after_restore: command 0: expected a"
     " non-empty list of strings"),
    ('before_bakup = [["true"]]', "hooks.before_bakup: unknown field"),
    ('timeout = "soon"', "hooks.timeout:"),
    ('on_failure = [["./notify.sh"]]', "hooks.on_failure: command 0: './notify.sh' is a"
     " relative path"),
])
def test_bad_hooks_are_one_line_errors(kb: KbEnv, tree: Path, hooks: str,
                                       expected: str) -> None:
    files_job(kb, tree, hooks)
    result = kb.ctl("config", "check")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert lines[0].startswith(str(kb.jobs_dir / "docs.toml"))


def test_config_check_warns_of_a_hook_program_not_found(kb: KbEnv, tree: Path) -> None:
    files_job(kb, tree, 'before_backup = [["kbackup-no-such-program", "x"], ["true"]]\n'
                        'after_backup = [["/nonexistent/start-app"]]')
    result = kb.ctl("config", "check")
    assert result.returncode == 0
    assert ("warning: job docs: hooks.before_backup.0: 'kbackup-no-such-program' not found"
            " on PATH") in result.stderr
    assert "hooks.after_backup.0: '/nonexistent/start-app' not found" in result.stderr
    assert "true" not in result.stderr
    data = json.loads(kb.ctl("--json", "config", "check").stdout)
    assert len(data["warnings"]) == 2
    assert os.environ.get("PATH")
    # The daemon says it too, in its own log, when it loads the config (its PATH counts).
    kb.start()
    logged = [line for line in kb.logs().splitlines() if "event=config.hook_missing" in line]
    assert len(logged) == 2 and "job=docs" in logged[0], logged
    assert "kbackup-no-such-program" in logged[0] and "/nonexistent/start-app" in logged[1]
