"""Who is calling: SO_PEERCRED on the Unix socket, mapped to a role.

root and the daemon's own user are admins; members of admin_group may change things (run,
verify, restore, delete); members of socket_group may read. Everyone else gets 403.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

READ, ADMIN = "read", "admin"


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    user: str
    role: str | None


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
