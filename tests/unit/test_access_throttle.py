"""The throttle of logins and tokens (access/throttle.py) on a clock the test moves: free
failures, then a doubling wait, capped; failures older than the window forgotten; a success
clears its key; the number of keys bounded."""

from __future__ import annotations

from kbackup.access import throttle
from kbackup.access.throttle import Throttle
from kbackup.web.guard import host_name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_a_doubling_wait_up_to_the_cap() -> None:
    clock = Clock()
    gate = Throttle(free=3, base=30, max_delay=100, clock=clock)
    for _ in range(3):
        assert gate.wait("user:a") == 0
        gate.failed("user:a")
    assert gate.wait("user:a") == 30
    clock.now += 10
    assert gate.wait("user:a") == 20
    assert gate.wait("user:b") == 0  # other keys are not affected
    assert gate.wait("user:b", "user:a") == 20  # the longest wait of the keys asked
    clock.now += 20
    assert gate.wait("user:a") == 0
    gate.failed("user:a")
    assert gate.wait("user:a") == 60
    clock.now += 60
    gate.failed("user:a")
    assert gate.wait("user:a") == 100  # 120, capped


def test_old_failures_are_forgotten_and_success_clears() -> None:
    clock = Clock()
    gate = Throttle(free=2, base=30, clock=clock)
    gate.failed("ip:x", "user:a")
    gate.failed("ip:x", "user:a")
    assert gate.wait("ip:x") == 30
    clock.now += throttle.WINDOW + 1
    assert gate.wait("ip:x") == 0
    assert "ip:x" not in gate.failures
    gate.failed("user:a")
    gate.failed("user:a")
    gate.forget("user:a")
    assert gate.wait("user:a") == 0


def test_keys_are_bounded() -> None:
    clock = Clock()
    gate = Throttle(free=1, clock=clock)
    throttle_max = throttle.MAX_KEYS
    for index in range(throttle_max + 5):
        gate.failed(f"ip:{index}")
    assert len(gate.failures) == throttle_max
    assert "ip:0" not in gate.failures and f"ip:{throttle_max + 4}" in gate.failures


def test_host_names_without_port_or_brackets() -> None:
    assert host_name("LocalHost:8080") == "localhost"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("kbackupd") == "kbackupd"
    assert host_name("evil.example:443") == "evil.example"
