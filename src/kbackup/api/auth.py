"""Who is calling: SO_PEERCRED on the Unix socket, a bearer token or a session on TCP.

On the Unix socket, root and the daemon's own user are admins; members of admin_group may
change things (run, verify, restore, delete); members of socket_group may read. Everyone else
gets 403. On the TCP listener ([web] listen) the caller is an API token
(`Authorization: Bearer`, user "token:NAME") or a web login's session cookie (user "web:NAME");
their role viewer reads, admin may change things. Without either the answer is 401.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING

from kbackup.errors import Throttled, Unauthenticated

if TYPE_CHECKING:
    from aiohttp import web

    from kbackup.access import Access

READ, ADMIN = "read", "admin"
ROLE_OF = {"viewer": READ, "admin": ADMIN}  # a token's or web user's role: the caller's
SESSION_COOKIE = "kb_session"


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    user: str
    role: str | None
    via: str = "socket"  # or "token", "session" (TCP)


def _gid(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def identify(
    pid: int, uid: int, gid: int, socket_group: str | None, admin_group: str | None
) -> Caller:
    try:
        entry = pwd.getpwuid(uid)
        user = entry.pw_name
        groups = set(os.getgrouplist(user, entry.pw_gid)) | {gid}
    except KeyError:
        user, groups = str(uid), {gid}
    role: str | None = None
    admin_gid, read_gid = _gid(admin_group), _gid(socket_group)
    if uid == 0 or uid == os.getuid() or (admin_gid is not None and admin_gid in groups):
        role = ADMIN
    elif read_gid is not None and read_gid in groups:
        role = READ
    return Caller(pid, uid, gid, user, role)


def is_unix(request: web.Request) -> bool:
    """Whether the request came on the Unix socket (else: the TCP listener)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and sock.family == socket.AF_UNIX


def bearer_caller(request: web.Request, access: Access, header: str) -> Caller:
    """The holder of the request's bearer token; unknown tokens are throttled per address."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization: expected 'Bearer <token>'")
    key = f"ip:{request.remote}"
    wait = access.guesses.wait(key)
    if wait > 0:
        raise Throttled(f"too many invalid tokens from {request.remote}: try again in"
                        f" {ceil(wait)} s", wait)
    from kbackup.access.tokens import TokenRejected

    try:
        holder = access.tokens.check(token.strip())
    except TokenRejected as exc:
        if exc.guess:
            access.guesses.failed(key)
        raise Unauthenticated(str(exc)) from None
    return Caller(0, -1, -1, f"token:{holder.name}", ROLE_OF[holder.role], via="token")


def remote_caller(request: web.Request, access: Access) -> Caller:
    """A TCP caller: its bearer token, else its session cookie; Unauthenticated otherwise."""
    header = request.headers.get("Authorization")
    if header is not None:
        return bearer_caller(request, access, header)
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        user = access.sessions.user(sid)
        role = access.users.role(user) if user is not None else None
        if user is None or role is None:
            raise Unauthenticated("session expired or ended: log in again at /login")
        return Caller(0, -1, -1, f"web:{user}", ROLE_OF[role], via="session")
    raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'"
                          " (kbackupctl token create) or log in at /login")
