"""One hook command (kbackup.hooks.run_command) with real child processes: what is kept of a
large output, masked values, a program that is not there, and a command that leaves a
program running with our pipes open (it keeps running; the hook does not wait for it)."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import time
from pathlib import Path

from kbackup.hooks import KEEP, HookResult, hook_env, run_command


def run(argv: list[str], limit: float = 30.0) -> HookResult:
    return asyncio.run(run_command("before_backup", argv, hook_env({}), limit))


def test_a_large_output_keeps_its_head_and_tail() -> None:
    result = run(["sh", "-c", "echo first; seq 1 100000; echo last-line >&2; echo end"])
    stdout = result.stdout
    assert stdout.startswith("first\n1\n2\n") and stdout.endswith("99999\n100000\nend\n")
    assert "bytes left out) ..." in stdout
    assert len(stdout) < 2 * KEEP + 100
    assert result.stderr == "last-line\n"
    assert result.exit == 0 and result.error is None


def test_secret_values_are_masked_and_the_last_stderr_line_is_the_reason() -> None:
    script = ("echo password=hunter2; echo 'token=abc def' >&2;"
              " echo 'Unit app.service not loaded.' >&2; exit 5")
    result = run(["sh", "-c", script])
    assert "hunter2" not in result.stdout and "password=***" in result.stdout
    assert "token=*** def" in result.stderr
    assert result.error == (f'before_backup hook "{shlex.join(["sh", "-c", script])}"'
                            " failed (exit 5): Unit app.service not loaded.")


def test_a_pointer_to_the_logs_is_not_taken_for_the_reason() -> None:
    script = ("echo 'Failed to stop other.service: Access denied' >&2;"
              " echo \"See system logs and 'systemctl status other.service' for details.\" >&2;"
              " exit 1")
    result = run(["sh", "-c", script])
    assert result.error is not None
    assert result.error.endswith("failed (exit 1): Failed to stop other.service: Access denied")


def test_a_missing_program_is_one_line() -> None:
    result = run(["kbackup-no-such-program", "x"])
    assert result.error == ('before_backup hook "kbackup-no-such-program x" could not'
                            " start: No such file or directory")
    assert result.exit is None


def test_a_program_left_running_is_not_waited_for_nor_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    started = time.monotonic()
    result = run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started"])
    took = time.monotonic() - started
    pid = int(pidfile.read_text())
    try:
        assert result.exit == 0 and result.stdout == "started\n"
        assert took < 10
        os.kill(pid, 0)  # still running
    finally:
        os.kill(pid, signal.SIGKILL)
