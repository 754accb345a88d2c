"""Network storage under failure, against the real servers with faults injected in front:
transient errors are retried within bounds, permanent ones fail at once naming the status,
and a failed object leaves nothing visible (no S3 multipart upload, no WebDAV partial)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import free_port
from kbackup.repository import clean_incomplete
from kbackup.storage import Storage, StorageError
from storage_servers import (
    BUCKET,
    ServerProcess,
    dav_config,
    open_test_storage,
    s3_client,
    s3_config,
    write_secret,
)

pytest_plugins = ["storage_servers"]
MiB = 1 << 20
BACKUP = "shop/2026/05/20260501T020000Z-abc123/"


@dataclass
class Remote:
    kind: str
    server: ServerProcess
    make: Callable[..., Storage]  # keyword arguments go into the [storage.X] table


@pytest.fixture(params=["s3", "webdav"])
def remote(
    request: pytest.FixtureRequest, s3_server: ServerProcess, dav_server: ServerProcess,
    make_s3: Callable[..., Storage], make_dav: Callable[..., Storage],
) -> Remote:
    if request.param == "s3":
        return Remote("s3", s3_server, make_s3)
    return Remote("webdav", dav_server, make_dav)


def requests_seen(server: ServerProcess) -> int:
    return int(server.control("stats")["requests"])


async def test_transient_errors_are_retried(remote: Remote) -> None:
    storage, server = remote.make(), remote.server
    data = random.randbytes(300_000)
    # The server reads the whole upload, then fails: a WebDAV PUT must be re-sent in full.
    server.faults({"status": 500, "count": 2, "method": "PUT", "drain": True})
    await storage.put_bytes("r/obj", data)
    assert server.hits() == 2
    server.faults({"status": 503, "count": 1, "method": "GET", "retry_after": 0},
                  {"status": 429, "count": 1})
    assert await storage.get_bytes("r/obj") == data
    assert [i.key for i in await storage.list()] == ["r/obj"]
    assert server.hits() == 2


async def test_read_resumes_after_a_broken_connection(remote: Remote) -> None:
    storage, server = remote.make(), remote.server
    data = random.randbytes(3 * MiB)
    await storage.put_bytes("r/big", data)
    server.faults({"cut_after": MiB + 17, "count": 2, "method": "GET"})
    chunks = [chunk async for chunk in storage.read("r/big", chunk_size=256 * 1024)]
    assert b"".join(chunks) == data  # the rest came with Range requests, no byte twice
    assert server.hits() == 2


async def test_s3_part_is_resent(s3_server: ServerProcess, make_s3: Callable[..., Storage]) -> None:
    storage = make_s3()
    s3_server.faults({"status": 500, "count": 2, "method": "PUT", "query": "partNumber=2",
                      "drain": True})
    data = random.randbytes(12 * MiB)
    await storage.put_bytes("m/obj", data)
    assert s3_server.hits() == 2
    assert await storage.get_bytes("m/obj") == data


async def test_s3_failing_part_fails_the_object_and_aborts_the_upload(
    s3_server: ServerProcess, make_s3: Callable[..., Storage]
) -> None:
    storage = make_s3(retries=3)
    s3_server.faults({"status": 500, "method": "PUT", "query": "partNumber=2"})
    writer = await storage.open_writer(BACKUP + "db-shop.dump.zst")
    began = time.monotonic()
    with pytest.raises(StorageError) as failure:
        for _ in range(16):
            await writer.write(random.randbytes(MiB))
        await writer.commit()
    await writer.abort()
    message = str(failure.value)
    assert message.startswith(
        f"storage offsite: HTTP 500 Internal Server Error on UploadPart 2 {BACKUP}db-shop.dump.zst"
    ), message
    assert "gave up after 4 attempts" in message and s3_server.hits() == 4
    assert time.monotonic() - began < 10
    uploads = s3_client(s3_server).list_multipart_uploads(Bucket=BUCKET, Prefix=storage.prefix)
    assert uploads.get("Uploads", []) == []
    assert await storage.list() == []


async def test_webdav_failing_put_leaves_nothing(make_dav: Callable[..., Storage],
                                                dav_server: ServerProcess) -> None:
    storage = make_dav(retries=2)
    dav_server.faults({"status": 502, "method": "PUT"})
    with pytest.raises(StorageError, match=r"HTTP 502 Bad Gateway on PUT r/obj\.partial.*"
                                           r"gave up after 3 attempts"):
        await storage.put_bytes("r/obj", b"x" * 1000)
    assert dav_server.hits() == 3
    assert await storage.list() == []


async def test_webdav_stream_that_already_went_out_is_not_resent(
    make_dav: Callable[..., Storage], dav_server: ServerProcess
) -> None:
    storage = make_dav()
    dav_server.faults({"status": 500, "count": 1, "method": "PUT", "drain": True})
    writer = await storage.open_writer(BACKUP + "files-pdfs.tar.zst")
    with pytest.raises(StorageError, match="cannot be resumed") as failure:
        for _ in range(6):  # more than the 4 MiB a PUT keeps for sending again
            await writer.write(random.randbytes(MiB))
        await writer.commit()
    await writer.abort()
    assert "HTTP 500 Internal Server Error on PUT" in str(failure.value)
    assert dav_server.hits() == 1
    assert await storage.list() == []


@pytest.mark.parametrize("drain", [True, False], ids=["after-upload", "before-upload-ends"])
async def test_webdav_507_fails_at_once(
    make_dav: Callable[..., Storage], dav_server: ServerProcess, drain: bool
) -> None:
    storage = make_dav()
    dav_server.faults({"status": 507, "method": "PUT", "drain": drain})
    began = time.monotonic()
    with pytest.raises(StorageError) as failure:
        await storage.put_bytes(BACKUP + "manifest.json", random.randbytes(2 * MiB))
    assert str(failure.value).startswith(
        f"storage nextcloud: HTTP 507 Insufficient Storage on PUT {BACKUP}manifest.json.partial"
    ), failure.value
    assert dav_server.hits() == 1 and time.monotonic() - began < 3
    assert await storage.list() == []


async def test_wrong_credentials_fail_at_once(remote: Remote, tmp_path: Path) -> None:
    wrong = str(write_secret(tmp_path / "wrong", "secret", "not-the-secret"))
    field = "secret_access_key_file" if remote.kind == "s3" else "password_file"
    storage, server = remote.make(**{field: wrong}), remote.server
    server.faults()
    began = time.monotonic()
    with pytest.raises(StorageError) as failure:
        await storage.put_bytes("r/obj", b"x")
    with pytest.raises(StorageError) as listing:
        await storage.list()
    assert time.monotonic() - began < 2 and requests_seen(server) == 2  # no retries
    for text in (str(failure.value), str(listing.value)):
        if remote.kind == "s3":
            assert "HTTP 403 Forbidden on " in text and "SignatureDoesNotMatch" in text, text
        else:
            assert "HTTP 401 Unauthorized on " in text, text
            assert "check username and password_file" in text
        assert "not-the-secret" not in text


async def test_s3_missing_bucket_fails_at_once(make_s3: Callable[..., Storage]) -> None:
    storage = make_s3(bucket="no-such-bucket")
    with pytest.raises(StorageError, match="HTTP 404 Not Found on PutObject r/obj: NoSuchBucket:"
                                           " bucket 'no-such-bucket' does not exist"):
        await storage.put_bytes("r/obj", b"x")


async def test_unreachable_server_gives_up_in_bounded_time(tmp_path: Path,
                                                           s3_server: ServerProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for table in (s3_config(s3_server, tmp_path, endpoint_url=dead, retry_max_seconds=1.5),
                  dav_config(s3_server, tmp_path, url=dead + "/dav", retry_max_seconds=1.5)):
        storage = open_test_storage("far", table)
        began = time.monotonic()
        with pytest.raises(StorageError, match=r"storage far: .* on \w+ .*gave up after"):
            await storage.list()
        assert time.monotonic() - began < 3


@pytest.mark.parametrize("kind", ["s3", "dav"])
async def test_server_killed_mid_upload(kind: str, tmp_path: Path) -> None:
    server = ServerProcess(kind, tmp_path / "server")
    make = s3_config if kind == "s3" else dav_config
    table = make(server, tmp_path / "secrets", retries=3, retry_max_seconds=2)
    storage = open_test_storage("offsite", table)
    writer = await storage.open_writer(BACKUP + "db-shop.dump.zst")
    began = time.monotonic()
    try:
        with pytest.raises(StorageError) as failure:
            for index in range(40):
                await writer.write(random.randbytes(MiB))
                if index == 11:
                    server.kill()
            await writer.commit()
        await writer.abort()
        assert time.monotonic() - began < 15
        assert str(failure.value).startswith("storage offsite: "), failure.value
        if kind == "dav":
            # What the dead server kept is a partial; the next daemon start removes it.
            assert list((server.root).rglob("*.partial"))
            again = ServerProcess("dav", tmp_path / "server")
            storage = open_test_storage("offsite", {**table, "url": table["url"].replace(
                str(server.port), str(again.port))})
            try:
                partial = BACKUP + "db-shop.dump.zst.partial"
                assert [i.key for i in await storage.list()] == [partial]
                removed = await clean_incomplete(storage, {"20260501T020000Z-abc123"},
                                                 datetime.now(UTC), timedelta(days=1))
                assert removed == [partial]
                assert await storage.list() == []
            finally:
                again.stop()
    finally:
        server.stop()
