"""API tokens: `Authorization: Bearer <token>` on the TCP listener.

A token is 256 random bits (secrets.token_urlsafe(32)) behind a `kbk_` prefix, shown once when
it is created. The state dir keeps only its SHA-256. A fast hash is enough here, unlike for
passwords: nobody can guess 256 random bits, so a slow hash (argon2) would add no safety against
a stolen tokens.json and would cost tens of milliseconds of CPU on every API request (an easy
way to load the daemon). The hash is also the lookup key, so checking a token is one dict
access and its bytes are never compared one by one.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kbackup.access import store
from kbackup.errors import NotFound, Refused
from kbackup.times import iso, parse_iso

PREFIX = "kbk_"
FILE = "tokens.json"
LAST_USED_EVERY = 60.0  # seconds: last_used is written at most this often per token


class TokenRejected(Exception):
    """The bearer token is unknown, revoked or expired; str() says which (never the token)."""

    def __init__(self, message: str, guess: bool):
        super().__init__(message)
        self.guess = guess  # an unknown token: counts towards the per-address throttle


@dataclass(frozen=True)
class TokenHolder:
    name: str
    role: str  # "viewer" or "admin"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The daemon's tokens, kept in memory and in state_dir/tokens.json."""

    def __init__(self, state_dir: Path, now: Callable[[], datetime]):
        self.path = state_dir / FILE
        self.now = now
        self.items: dict[str, dict[str, Any]] = store.load(self.path)
        self.by_digest = {item["sha256"]: name for name, item in self.items.items()}
        self._written: dict[str, datetime] = {}

    def _save(self) -> None:
        store.save(self.path, self.items)
        self.by_digest = {item["sha256"]: name for name, item in self.items.items()}

    def create(self, name: str, role: str, lifetime: float | None) -> tuple[str, dict[str, Any]]:
        """A new token (the secret, shown once) and its record; a live token's name is taken."""
        old = self.items.get(name)
        if old is not None and self.state(old) == "active":
            raise Refused(f"token {name} already exists: revoke it first"
                          " (kbackupctl token revoke) or choose another name")
        token = PREFIX + secrets.token_urlsafe(32)
        now = self.now()
        self.items[name] = {
            "sha256": digest(token), "role": role, "created": iso(now),
            "expires": iso(now + timedelta(seconds=lifetime)) if lifetime else None,
            "last_used": None, "revoked": None,
        }
        self._save()
        return token, self.view(name)

    def revoke(self, name: str) -> dict[str, Any]:
        item = self.items.get(name)
        if item is None:
            raise NotFound(f"no token named {name!r} (see kbackupctl token list)")
        if item["revoked"] is None:
            item["revoked"] = iso(self.now())
            self._save()
        return self.view(name)

    def state(self, item: dict[str, Any]) -> str:
        if item["revoked"] is not None:
            return "revoked"
        expires = parse_iso(item["expires"])
        if expires is not None and expires <= self.now():
            return "expired"
        return "active"

    def view(self, name: str) -> dict[str, Any]:
        """What `token list` shows: never the hash."""
        item = self.items[name]
        return {"name": name, "role": item["role"], "created": item["created"],
                "expires": item["expires"], "last_used": item["last_used"],
                "revoked": item["revoked"], "state": self.state(item)}

    def listing(self) -> list[dict[str, Any]]:
        return [self.view(name) for name in sorted(self.items)]

    def check(self, token: str) -> TokenHolder:
        """Who holds this token; TokenRejected when it is unknown, revoked or expired."""
        name = self.by_digest.get(digest(token))
        if name is None:
            raise TokenRejected("invalid bearer token (unknown: check it was copied whole, or"
                                " create one with kbackupctl token create)", guess=True)
        item = self.items[name]
        state = self.state(item)
        if state == "revoked":
            raise TokenRejected(f"token {name} was revoked at {item['revoked']}", guess=False)
        if state == "expired":
            raise TokenRejected(f"token {name} expired at {item['expires']}", guess=False)
        self._touch(name, item)
        return TokenHolder(name, item["role"])

    def _touch(self, name: str, item: dict[str, Any]) -> None:
        """last_used in memory at every use, in the file at most every LAST_USED_EVERY."""
        now = self.now()
        item["last_used"] = iso(now)
        written = self._written.get(name)
        if written is None or abs((now - written).total_seconds()) >= LAST_USED_EVERY:
            self._written[name] = now
            self._save()
