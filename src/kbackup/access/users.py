"""Web users: a name, a role and an argon2id hash of the password, in state_dir/web-users.json.

Passwords are chosen by people, so they are hashed with a slow, memory-hard function
(argon2-cffi's defaults: argon2id, 64 MiB, 3 passes, 4 lanes): a stolen file costs an attacker
that much per guess. Checking one took 210-240 ms here (2 cores at load 4.5), so the daemon
does it in a thread, at most CHECKS at a time (a login flood cannot take the threads the
backups use), and logins are throttled (access/throttle.py) before they get here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from kbackup.access import store
from kbackup.errors import Invalid, NotFound, Refused
from kbackup.times import iso

FILE = "web-users.json"
MIN_PASSWORD = 10  # characters
MAX_PASSWORD = 1024
CHECKS = 2  # password hashes computed at once


class Users:
    def __init__(self, state_dir: Path, now: Callable[[], datetime]):
        self.path = state_dir / FILE
        self.now = now
        self.hasher = PasswordHasher()
        self.items: dict[str, dict[str, Any]] = store.load(self.path)
        # Checked against when the user does not exist, so that an unknown name takes as
        # long to refuse as a wrong password (no finding out which names exist by timing).
        self._decoy: str | None = None  # made at the first unknown name (start stays quick)
        self._slots = asyncio.Semaphore(CHECKS)

    async def add(self, name: str, role: str, password: str,
                  replace: bool = False) -> dict[str, Any]:
        if name in self.items and not replace:
            raise Refused(f"web user {name} already exists (remove it first, or pass"
                          " --replace to set a new password and role)")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise Invalid(f"password: expected {MIN_PASSWORD} to {MAX_PASSWORD} characters,"
                          f" got {len(password)}")
        async with self._slots:
            hashed = await asyncio.to_thread(self.hasher.hash, password)
        self.items[name] = {"role": role, "argon2": hashed, "created": iso(self.now())}
        store.save(self.path, self.items)
        return self.view(name)

    def remove(self, name: str) -> dict[str, Any]:
        if name not in self.items:
            raise NotFound(f"no web user named {name!r} (see kbackupctl web user list)")
        view = self.view(name)
        del self.items[name]
        store.save(self.path, self.items)
        return view

    def view(self, name: str) -> dict[str, Any]:
        item = self.items[name]
        return {"name": name, "role": item["role"], "created": item["created"]}

    def listing(self) -> list[dict[str, Any]]:
        return [self.view(name) for name in sorted(self.items)]

    def role(self, name: str) -> str | None:
        item = self.items.get(name)
        return None if item is None else str(item["role"])

    async def check(self, name: str, password: str) -> str | None:
        """The user's role when the password is right, else None (same time either way)."""
        item = self.items.get(name)
        if item is None and self._decoy is None:
            self._decoy = await asyncio.to_thread(self.hasher.hash, "kbackup decoy password")
        stored: str = item["argon2"] if item is not None else self._decoy or ""
        try:
            async with self._slots:
                await asyncio.to_thread(self.hasher.verify, stored, password[:MAX_PASSWORD])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return None if item is None else str(item["role"])
