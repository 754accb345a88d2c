"""Real servers for the alert channels: an SMTP server (aiosmtpd, STARTTLS with a throw-away
certificate, password login) and an HTTP server that records every request (Slack and
webhook), each on 127.0.0.1 in a thread of its own, so in-process tests and tests of a real
daemon process use them alike. Also HealthEnv: the daemon's health and alert parts on a real
catalog, driven by a fake clock.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import free_port
from kbackup.alerts.monitor import Monitor
from kbackup.catalog import Catalog
from kbackup.config import load_config
from kbackup.health_facts import CheckResult
from kbackup.repository import new_backup_id
from kbackup.scheduler import Clock
from kbackup.storage import open_storage
from kbackup.times import iso

SMTP_USER, SMTP_PASSWORD = "kbackup", "correct horse"


@dataclass
class CertFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_cert(directory: Path) -> CertFiles:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl, valid one day)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make the test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return CertFiles(cert, key)


class _Sink:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.server.lock:
            self.server.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


class SmtpServer:
    """aiosmtpd with STARTTLS required before AUTH; records (from, recipients, message)."""

    def __init__(self, cert: CertFiles):
        self.port = free_port()
        self.mails: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        self.controller = Controller(
            _Sink(self), hostname="127.0.0.1", port=self.port,
            tls_context=cert.server_context(), require_starttls=True,
            authenticator=self._authenticate, auth_require_tls=True)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else ""
        ok = login == SMTP_USER and auth_data.password.decode() == SMTP_PASSWORD
        self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, list[str],
                                                                         EmailMessage]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.mails) >= count:
                    return list(self.mails)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} mails, got {len(self.mails)}")


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"
    query: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class HttpRecorder:
    """An aiohttp server on 127.0.0.1 in its own thread: records every request (any method)
    and answers 200,
    or `fail_with` for the next `failures` requests, or hangs `delay` seconds first."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Recorded] = []
        self.failures = 0
        self.fail_with = 500
        self.delay = 0.0
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.requests.append(Recorded(request.path, dict(request.headers), body,
                                          request.method, request.query_string))
            failing = self.failures > 0
            self.failures -= 1 if failing else 0
        if self.delay:
            await asyncio.sleep(self.delay)
        if failing:
            return web.Response(status=self.fail_with, text="temporarily broken")
        return web.Response(text="ok")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> HttpRecorder:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def received(self) -> list[Recorded]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received()
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} requests, got {len(self.received())}")


@pytest.fixture(scope="session")
def test_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def smtp_server(test_cert: CertFiles) -> Iterator[SmtpServer]:
    server = SmtpServer(test_cert)
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture
def http_recorder() -> Iterator[HttpRecorder]:
    server = HttpRecorder().start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------- in-process daemon parts


class FakeClock(Clock):
    def __init__(self, now: datetime):
        self.current = now

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


QUIET = '[thresholds]\nmin_free_disk = "1B"\ndisk_forecast = "1s"\n'  # no disk surprises


def email_channel(server: SmtpServer, cert: CertFiles, password_file: Path,
                  to: list[str] | None = None) -> str:
    """An [alerts.mail] table for the test SMTP server: STARTTLS with its certificate, login
    from password_file, quick retries."""
    recipients = ", ".join(f'"{address}"' for address in to or ["oncall@shop.example"])
    return f"""
[alerts.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {server.port}
security = "starttls"
username = "{SMTP_USER}"
password_file = "{password_file}"
from = "kbackup@shop.example"
to = [{recipients}]
ca_file = "{cert.cert}"
retry_delay = "0.05s"
"""
MiB = 1024 * 1024


class HealthEnv:
    """The daemon's health and alert parts without the daemon: a config directory, a real
    Catalog, a Monitor driven by a FakeClock, and helpers that write run and backup history
    with chosen times."""

    def __init__(self, base: Path, now: datetime):
        self.base = base
        self.conf = base / "conf"
        (self.conf / "jobs.d").mkdir(parents=True)
        self.state = base / "state"
        self.store_dir = base / "store"
        self.clock = FakeClock(now)
        self.active: list[Any] = []
        self.catalog: Catalog | None = None
        self._monitor: Monitor | None = None
        self.daemon_toml()

    def daemon_toml(self, extra: str = QUIET) -> None:
        (self.conf / "kbackupd.toml").write_text(f"""
[daemon]
socket = "{self.base}/kbackupd.sock"
socket_group = ""
admin_group = ""
state_dir = "{self.state}"

[storage.local]
type = "local"
path = "{self.store_dir}"

{extra}
""")

    def job(self, name: str = "shop", schedules: str = "[]", extra: str = "",
            targets: str = '["local"]') -> None:
        (self.conf / "jobs.d" / f"{name}.toml").write_text(f"""
schedules = {schedules}
targets = {targets}
{extra}

[[postgres]]
name = "shop"
dsn = "host=/nonexistent dbname=shop"

[[files]]
name = "pdfs"
path = "/srv/shop/pdfs"
""")

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            config = load_config(self.conf)
            self.catalog = Catalog(self.state)
            storages = {n: open_storage(n, c) for n, c in config.storage.items()}
            self._monitor = Monitor(config, self.catalog, storages, self.clock,
                                    lambda: self.active)
        return self._monitor

    @property
    def db(self) -> Catalog:
        assert self.monitor is not None and self.catalog is not None
        return self.catalog

    async def close(self) -> None:
        """Like a daemon stop: the next use of .monitor reads everything from the catalog."""
        if self._monitor is not None:
            await self._monitor.manager.close()
        if self.catalog is not None:
            self.catalog.close()
        self._monitor, self.catalog = None, None

    async def evaluate(self) -> list[CheckResult]:
        results = await self.monitor.evaluate()
        await self.monitor.manager.flush()
        return results

    def by_key(self, results: list[CheckResult]) -> dict[str, CheckResult]:
        return {r.key: r for r in results}

    def run(self, job: str, started: datetime, status: str = "complete",
            error: str | None = None, took: timedelta = timedelta(minutes=5),
            kind: str = "backup", run_id: str | None = None) -> str:
        run_id = run_id or new_backup_id(started)
        finished = None if status == "running" else iso(started + took)
        self.db.db.execute(
            "INSERT INTO runs (id, job, kind, trigger, status, started_at, finished_at, error)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (run_id, job, kind, "scheduled", status, iso(started), finished, error))
        return run_id

    def backup(self, job: str, finished: datetime, sizes: dict[str, int] | None = None,
               targets: dict[str, str] | None = None, status: str = "complete",
               took: timedelta = timedelta(minutes=5), verified: bool = True) -> str:
        """A finished backup run and its catalog entry, as the runner would leave them (with
        the checksum verification after_backup records, unless verified=False)."""
        started = finished - took
        backup_id = new_backup_id(started)
        error = None  # the runner fails a run whose backup is partial, saying why
        if status == "partial":
            error = f"backup {backup_id} is partial: not on every target (...)"
        self.run(job, started, "complete" if status == "complete" else "failed", error,
                 took=took, run_id=backup_id)
        sizes = sizes or {"shop": 10 * MiB, "pdfs": 40 * MiB}
        components = [{"name": name, "kind": "postgres" if name == "shop" else "files",
                       "file": f"{name}.zst", "size_bytes": raw // 3, "sha256": "0" * 64,
                       "raw_bytes": raw, "compression": {"algorithm": "zstd"}}
                      for name, raw in sizes.items()]
        manifest = {"id": backup_id, "job": job, "components": components}
        self.db.upsert_backup(backup_id, job, status, "scheduled", iso(started) or "",
                              iso(finished), sum(c["size_bytes"] for c in components),
                              targets or {"local": "complete"}, manifest)
        if verified and status != "failed":
            self.db.add_verification(f"{backup_id}-verify", backup_id, job, "checksum",
                                     finished, True, None, {})
        return backup_id


@pytest.fixture
async def henv(tmp_path: Path) -> Any:
    env = HealthEnv(tmp_path, datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    try:
        yield env
    finally:
        await env.close()
