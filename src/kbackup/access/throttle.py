"""Slowing down guesses: passwords per user name and per client address, tokens per address.

Each key (e.g. "user:alice", "ip:192.0.2.7") keeps the times of its failures within WINDOW.
The first FREE failures cost nothing; after that the key must wait BASE seconds since its last
failure, doubling with each further failure up to MAX_DELAY. A throttled attempt is answered
429 without being tried, so it neither counts nor reveals whether it would have been right.
Per name stops a slow guesser spread over many addresses, per address one trying many names.
The price, a name that an attacker can lock for up to MAX_DELAY, is accepted: the Unix socket
(and the ssh tunnel) always works for an admin.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 15 * 60.0
MAX_KEYS = 10_000  # beyond this the oldest keys are forgotten (memory stays bounded)


class Throttle:
    def __init__(self, free: int, base: float = 30.0, max_delay: float = 15 * 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.free, self.base, self.max_delay = free, base, max_delay
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        times = self.failures.get(key)
        if times is None:
            return deque()
        cutoff = self.clock() - WINDOW
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self.failures[key]
        return times

    def wait(self, *keys: str) -> float:
        """Seconds before any of these keys may try again (0: now)."""
        longest = 0.0
        for key in keys:
            times = self._recent(key)
            if len(times) >= self.free:
                delay = min(self.max_delay, self.base * 2 ** (len(times) - self.free))
                longest = max(longest, times[-1] + delay - self.clock())
        return max(0.0, longest)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            times = self._recent(key)
            self.failures.pop(key, None)  # re-inserted last: the dict stays oldest first
            times.append(now)
            self.failures[key] = times
        while len(self.failures) > MAX_KEYS:
            del self.failures[next(iter(self.failures))]

    def forget(self, key: str) -> None:
        """A success: this key starts afresh."""
        self.failures.pop(key, None)
