"""A kbackupd with its [web] TCP listener on 127.0.0.1 over TLS (a self-signed certificate made
with openssl for the test), and real HTTPS requests to it with that certificate as the CA.

Requests can leave from any loopback address (127.0.0.2, ...), so each throttling test has a
client address of its own."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alert_servers import make_cert
from conftest import KbEnv, free_port, request


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key (0600, as a server's key is)."""
    files = make_cert(directory)
    files.key.chmod(0o600)
    return files.cert, files.key


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def cookies(self) -> dict[str, str]:
        """Set-Cookie headers by cookie name, each whole (value and flags)."""
        found = {}
        for header in self.headers.get_all("Set-Cookie") or []:
            found[header.split("=", 1)[0].strip()] = header
        return found


class Remote:
    """HTTPS to the daemon's TCP listener, trusting only the test's certificate."""

    def __init__(self, port: int, cafile: Path):
        self.port = port
        self.context = ssl.create_default_context(cafile=str(cafile))

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                headers: dict[str, str] | None = None, source: str = "127.0.0.1",
                form: dict[str, str] | None = None) -> Answer:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                           timeout=30, source_address=(source, 0))
        sent = dict(headers or {})
        data: bytes | None = None
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if form is not None:
            from urllib.parse import urlencode

            data = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()


@contextmanager
def tls_daemon(base: Path, web_extra: str = "",
               env: dict[str, str] | None = None) -> Iterator[tuple[KbEnv, Remote]]:
    """A daemon with a files job `docs` and [web] listen on 127.0.0.1 with TLS."""
    sockdir = Path(tempfile.mkdtemp(prefix="kbs", dir="/tmp"))
    sockdir.chmod(0o755)
    kb = KbEnv(base, sockdir)
    cert, key = self_signed(base)
    port = free_port()
    kb.write_daemon(extra=f"""
[web]
listen = "127.0.0.1:{port}"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
{web_extra}
""")
    tree = base / "docs"
    tree.mkdir()
    (tree / "a.txt").write_text("hello\n")
    kb.write_job("docs", f'targets = ["local"]\n\n[[files]]\nname = "docs"\npath = "{tree}"\n')
    kb.start(env=env)
    try:
        yield kb, Remote(port, cert)
    finally:
        kb.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def socket_request(kb: KbEnv, method: str, path: str,
                   headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 exchange on the Unix socket with exactly these headers (Host included)."""
    return request(kb, method, path, headers=headers)
