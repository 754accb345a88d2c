"""kbackupctl's client for the daemon's HTTP/JSON API on its Unix socket: standard library only,
so the CLI starts fast."""

from __future__ import annotations

import json
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/run/kbackup/kbackupd.sock"
PAGE_MAX = 10_000  # the daemon's largest page (api/models.MAX_PAGE)


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def http_request(socket_path: str, method: str, path: str, body: bytes | None = None,
                 timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP/1.0 exchange over the Unix socket.

    Hand-rolled because http.client drags in the email package and ssl, a third of the CLI's
    start-up time; the daemon is ours, so a minimal client is enough.
    """
    head = f"{method} {path} HTTP/1.0\r\nHost: kbackupd\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    request = (head + "\r\n").encode() + (body or b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header, _, payload = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError("malformed HTTP response from kbackupd")
    return int(status_line[1]), payload


def socket_group(socket_path: str) -> str:
    """The group that owns the socket: the one a refused user has to join."""
    try:
        gid = os.stat(socket_path).st_gid
    except OSError:
        return "kbackup"
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def segment(value: str) -> str:
    """A value typed by a person (a job name, a backup id) as one URL path segment."""
    return quote(value, safe="")


class Client:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def get_for_job(self, path: str, job: str | None) -> Any:
        """GET path, narrowed to one job when given (quoted: it is typed by a person)."""
        return self.call("GET", path + (f"?job={segment(job)}" if job else ""))

    def listing(self, path: str, job: str | None, limit: int | None,
                **filters: str | None) -> dict[str, Any]:
        """GET a paged listing ({items, total, ...}): the newest `limit` items, or all of them
        (limit None), a page of at most PAGE_MAX per request."""
        items: list[Any] = []
        total = 0
        while limit is None or len(items) < limit:
            want = PAGE_MAX if limit is None else min(PAGE_MAX, limit - len(items))
            query = {"limit": want, "offset": len(items)} | ({"job": job} if job else {}) | {
                name: value for name, value in filters.items() if value is not None}
            page = self.call("GET", f"{path}?{urlencode(query, quote_via=quote)}")
            items += page["items"]
            total = page["total"]
            if len(page["items"]) < want or len(items) >= total:
                break
        return {"items": items, "total": total, "limit": limit, "offset": 0}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        try:
            status, data = http_request(self.socket_path, method, path, payload)
        except FileNotFoundError:
            raise CliError(f"kbackupd is not running: no socket at {self.socket_path}"
                           " (start it, or pass --socket / set KBACKUP_SOCKET)", 3) from None
        except PermissionError:
            raise CliError(f"permission denied on {self.socket_path}: your user must be in the"
                           f" daemon's socket group ({socket_group(self.socket_path)})",
                           3) from None
        except ConnectionRefusedError:
            raise CliError(f"kbackupd is not running: nothing listens on {self.socket_path}"
                           " (a stale socket left by a daemon that stopped)", 3) from None
        except OSError as exc:
            raise CliError(f"cannot reach kbackupd at {self.socket_path}: {exc}", 3) from None
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            text = data.decode(errors="replace").strip().splitlines()
            raise CliError(f"kbackupd answered HTTP {status} with non-JSON data"
                           + (f": {text[0][:200]}" if text else "")) from None
        if status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            raise CliError(message or f"kbackupd answered HTTP {status}")
        return decoded
