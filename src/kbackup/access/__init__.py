"""Who may call kbackupd over TCP: API tokens, web users and their sessions, and the
throttling of guesses. Owned by the daemon (one `Access` per process, kept across reloads);
the API's guard asks it who a TCP caller is (api/auth.py). Nothing here is imported by
kbackupctl."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from kbackup.access.sessions import Sessions
from kbackup.access.throttle import Throttle
from kbackup.access.tokens import Tokens
from kbackup.access.users import Users

VIEWER, ADMIN = "viewer", "admin"
ROLES = (VIEWER, ADMIN)


class Access:
    """The daemon's tokens, web users, sessions and throttles (one per process)."""

    def __init__(self, state_dir: Path, now: Callable[[], datetime]):
        self.tokens = Tokens(state_dir, now)
        self.users = Users(state_dir, now)
        self.sessions = Sessions()
        self.logins = Throttle(free=5)  # keys "user:NAME" and "ip:ADDRESS"
        self.guesses = Throttle(free=10)  # unknown bearer tokens, key "ip:ADDRESS"

    def remove_user(self, name: str) -> dict[str, object]:
        """Remove a web user and end their sessions."""
        view = self.users.remove(name)
        self.sessions.end_user(name)
        return view
