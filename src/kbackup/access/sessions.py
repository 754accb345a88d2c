"""Web sessions: a random id in an HttpOnly cookie, the user it belongs to kept in memory.

Kept in the daemon's memory only: a restart logs everyone out (they log in again), and no
session id ever reaches the disk. A reload keeps them. The role is not stored with the
session but looked up at each request, so removing a user or changing their role applies at
once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_SESSIONS = 1000  # beyond this the oldest are dropped (a login flood cannot grow memory)


@dataclass
class Session:
    user: str
    expires: float  # monotonic seconds


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.items: dict[str, Session] = {}

    def create(self, user: str, lifetime: float) -> str:
        now = self.clock()
        self.items = {sid: s for sid, s in self.items.items() if s.expires > now}
        while len(self.items) >= MAX_SESSIONS:
            del self.items[next(iter(self.items))]
        sid = secrets.token_urlsafe(32)
        self.items[sid] = Session(user, now + lifetime)
        return sid

    def user(self, sid: str) -> str | None:
        """The user of a live session, else None (an expired one is forgotten)."""
        session = self.items.get(sid)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self.items[sid]
            return None
        return session.user

    def end(self, sid: str) -> None:
        self.items.pop(sid, None)

    def end_user(self, user: str) -> None:
        self.items = {sid: s for sid, s in self.items.items() if s.user != user}
