"""Real storage servers for the tests: moto (S3) and wsgidav (WebDAV), each in its own process.

Each server runs as `python storage_servers.py s3|dav ...` and prints one JSON line (port,
credentials) when it listens. A fault-injecting WSGI middleware sits in front of the real
application: the tests ask it over `/__control__/faults` to answer some requests with an error
status before the server sees them (count-limited or forever), or to break a reply off
mid-body. Own processes keep the servers
out of the tests' memory measurements and let a test kill one mid-upload (SIGKILL).

Used as a pytest plugin (`pytest_plugins = ["storage_servers"]`): fixtures `s3_server`,
`dav_server` (one per session) and `make_s3`, `make_dav` (storages in a fresh namespace).
PYTEST_DONT_REWRITE: test modules import helpers from here before pytest loads it as a plugin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BUCKET = "kbackup-test"
DAV_USER = "kb"
DAV_PASSWORD = "correct horse battery staple"
DAV_DELETE_USER = "kb-delete"  # a second login to the same tree (append-only tests)
DAV_DELETE_PASSWORD = "deleting is another job"
S3_ERROR = b"<Error><Code>{code}</Code><Message>injected fault</Message></Error>"
DAV_ERROR = (
    b'<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:"'
    b' xmlns:s="http://sabredav.org/ns"><s:message>injected fault</s:message></d:error>'
)
CODES = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown", 507: "InsufficientStorage"}


# ----------------------------------------------------------------------------- server side


class FaultMiddleware:
    """Answer matching requests with an error instead of passing them to the real server."""

    def __init__(self, app: Any, flavor: str, fill: Callable[[dict[str, Any]], Any] | None):
        self.app, self.flavor, self.fill = app, flavor, fill
        self.rules: list[dict[str, Any]] = []
        self.hits = 0
        self.requests = 0
        self.lock = threading.Lock()

    def _control(self, environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        action = environ["PATH_INFO"].rsplit("/", 1)[-1]
        found: Any = None
        if action == "fill" and self.fill is not None:  # outside the lock: it may call us
            found = self.fill(body)
        with self.lock:
            if action == "faults" and environ["REQUEST_METHOD"] == "POST":
                self.rules, self.hits, self.requests = body.get("rules", []), 0, 0
            answer = json.dumps({"hits": self.hits, "requests": self.requests,
                                 **(found or {})}).encode()
        start("200 OK", [("Content-Type", "application/json")])
        return [answer]

    def _match(self, environ: dict[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            self.requests += 1
            for rule in self.rules:
                if rule.get("count", -1) == 0:
                    continue
                if rule.get("method") and environ["REQUEST_METHOD"] != rule["method"]:
                    continue
                if rule.get("path", "") not in environ.get("PATH_INFO", ""):
                    continue
                if rule.get("query", "") not in environ.get("QUERY_STRING", ""):
                    continue
                if rule.get("auth", "") not in environ.get("HTTP_AUTHORIZATION", ""):
                    continue  # a part of the Authorization header: one user's requests
                if rule.get("count", -1) > 0:
                    rule["count"] -= 1
                self.hits += 1
                return dict(rule)
        return None

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").startswith("/__control__/"):
            return self._control(environ, start)
        rule = self._match(environ)
        if rule is None:
            return self.app(environ, start)
        if rule.get("cut_after") is not None:  # the real reply, broken off mid-body
            return _cut(self.app(environ, start), int(rule["cut_after"]))
        if rule.get("drain"):  # the whole upload arrives before the error, as with a quota
            _drain(environ)
        status = int(rule["status"])
        if self.flavor == "s3":
            body = S3_ERROR.replace(b"{code}", CODES.get(status, str(status)).encode())
        else:
            body = DAV_ERROR
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        if rule.get("retry_after") is not None:
            headers.append(("Retry-After", str(rule["retry_after"])))
        start(f"{status} Injected", headers)
        return _respond_then_drain(body, environ)


def _cut(body: Any, limit: int) -> Iterator[bytes]:
    """Pass the reply through up to `limit` body bytes, then drop the connection."""
    try:
        for piece in body:
            if len(piece) >= limit:
                yield piece[:limit]
                raise ConnectionAbortedError("injected: connection lost mid-reply")
            limit -= len(piece)
            yield piece
    finally:
        if hasattr(body, "close"):
            body.close()


def _drain(environ: dict[str, Any]) -> None:
    """Read the request body: exactly Content-Length bytes, or to the end when chunked."""
    stream, left = environ["wsgi.input"], environ.get("CONTENT_LENGTH")
    if left:
        left = int(left)
        while left > 0 and (piece := stream.read(min(left, 1 << 16))):
            left -= len(piece)
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", ""):
        while stream.read(1 << 16):
            pass


def _respond_then_drain(body: bytes, environ: dict[str, Any]) -> Iterator[bytes]:
    """Send the error, then read what the client still sends, as Apache and nginx do
    ("lingering close"): closing with unread data makes TCP reset the connection and the
    client would never see the status."""
    yield body
    _drain(environ)


def _serve_s3() -> None:
    import boto3
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.s3.models import s3_backends
    from werkzeug.serving import make_server

    def fill(body: dict[str, Any]) -> dict[str, str] | None:
        """Many small objects at once, straight into moto's store (HTTP would take minutes);
        or (`user`) an IAM user with the given policy and its key pair."""
        if "user" in body:
            return iam_user(body["user"], body["policy"])
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for index in range(int(body["count"])):
            backend.put_object(body["bucket"], f"{body['prefix']}{index:06d}", b"x" * 7)
        return None

    def iam_user(name: str, policy: dict[str, Any]) -> dict[str, str]:
        """Made over HTTP with signature checks off for the moment (they are global)."""
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 1 << 30
        try:
            iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **anon)
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="s3",
                                PolicyDocument=json.dumps(policy))
            made = iam.create_access_key(UserName=name)["AccessKey"]
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        return {"access_key": made["AccessKeyId"], "secret_key": made["SecretAccessKey"]}

    app = FaultMiddleware(DomainDispatcherApplication(create_backend_app), "s3", fill)
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # An IAM user with a real key pair, then signatures are checked on every request.
    endpoint = f"http://127.0.0.1:{port}"
    anon = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **anon)
    iam.create_user(UserName="kbackup")
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="kbackup", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="kbackup")["AccessKey"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **anon)
    s3.create_bucket(Bucket=BUCKET)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    print(json.dumps({"port": port, "access_key": key["AccessKeyId"],
                      "secret_key": key["SecretAccessKey"]}), flush=True)
    threading.Event().wait()


def _serve_dav(root: str) -> None:
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "provider_mapping": {"/dav": root},
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": {DAV_USER: {"password": DAV_PASSWORD},
                                                 DAV_DELETE_USER: {
                                                     "password": DAV_DELETE_PASSWORD}}}},
        "verbose": 1,
        "logging": {"enable": False},
        "property_manager": True,
        "lock_storage": True,
    }
    app = FaultMiddleware(WsgiDAVApp(config), "dav", None)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16)
    server.prepare()
    print(json.dumps({"port": server.bind_addr[1]}), flush=True)
    server.serve()


# ----------------------------------------------------------------------------- test side


class ServerProcess:
    def __init__(self, kind: str, workdir: Path):
        self.kind = kind
        self.root = workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{kind}.log"
        self.proc = self._start()
        self.info = self._read_info()
        self.port: int = self.info["port"]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, __file__, self.kind, "--root", str(self.root)],
                stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )

    def _read_info(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"{self.kind} server did not start:\n{self.log.read_text()}")
        return json.loads(line)

    def control(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.endpoint}/__control__/{action}",
            data=json.dumps(body or {}).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())

    def faults(self, *rules: dict[str, Any]) -> None:
        """Replace the fault rules (none = pass everything) and reset the counters."""
        self.control("faults", {"rules": list(rules)})

    def hits(self) -> int:
        return int(self.control("stats")["hits"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def write_secret(directory: Path, name: str, value: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def s3_config(server: ServerProcess, secrets: Path, **overrides: Any) -> dict[str, Any]:
    """A [storage.X] table for the server, in a fresh prefix, with fast test retries."""
    return {
        "type": "s3",
        "endpoint_url": server.endpoint,
        "bucket": BUCKET,
        "prefix": f"t-{uuid.uuid4().hex[:10]}/",
        "access_key_id_file": str(write_secret(secrets, "s3-key-id", server.info["access_key"])),
        "secret_access_key_file": str(
            write_secret(secrets, "s3-secret", server.info["secret_key"])),
        "part_size": "5MiB",
        "retry_max_seconds": 10,
        "timeout": "20s",
        **overrides,
    }


def dav_config(server: ServerProcess, secrets: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "webdav",
        "url": f"{server.endpoint}/dav/t-{uuid.uuid4().hex[:10]}",
        "username": DAV_USER,
        "password_file": str(write_secret(secrets, "dav-password", DAV_PASSWORD)),
        "retry_max_seconds": 10,
        "timeout": "20s",
        **overrides,
    }


def toml_table(name: str, table: dict[str, Any]) -> str:
    lines = [f"[storage.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def open_test_storage(name: str, table: dict[str, Any], fast: bool = True) -> Any:
    """A storage from a config table, as the daemon builds it; fast=True shortens backoff."""
    from pydantic import TypeAdapter

    from kbackup.config import StorageConfig
    from kbackup.storage import open_storage

    storage = open_storage(name, TypeAdapter(StorageConfig).validate_python(table))
    if fast and hasattr(storage, "retry"):
        storage.retry.base_delay = 0.05
    return storage


@contextlib.contextmanager
def running(kind: str) -> Iterator[ServerProcess]:
    workdir = Path(tempfile.mkdtemp(prefix=f"kb{kind}"))
    server = ServerProcess(kind, workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[ServerProcess]:
    with running("s3") as server:
        yield server


@pytest.fixture(scope="session")
def dav_server() -> Iterator[ServerProcess]:
    with running("dav") as server:
        yield server


@pytest.fixture
def make_s3(s3_server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    yield lambda **overrides: open_test_storage(
        "offsite", s3_config(s3_server, tmp_path / "secrets", **overrides))
    s3_server.faults()


@pytest.fixture
def make_dav(dav_server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    yield lambda **overrides: open_test_storage(
        "nextcloud", dav_config(dav_server, tmp_path / "secrets", **overrides))
    dav_server.faults()


def s3_client(server: ServerProcess) -> Any:
    """A plain boto3 client for looking behind the backend's back."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=server.info["access_key"],
        aws_secret_access_key=server.info["secret_key"],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["s3", "dav"])
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    if args.kind == "s3":
        _serve_s3()
    else:
        _serve_dav(args.root)
