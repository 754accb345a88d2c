"""An S3 bucket (AWS or compatible) through aiobotocore.

Objects stream in as a multipart upload: write() buffers up to part_size and sends full parts
while the next one fills, at most max_in_flight at a time, so memory stays at about
(1 + max_in_flight) * part_size whatever the object's size. S3 shows no part of a multipart
upload until CompleteMultipartUpload, which gives the commit rule without a rename; objects
smaller than a part go up as a single PutObject at commit. abort() is AbortMultipartUpload;
uploads a killed daemon left behind are found by abort_stale_uploads().

botocore's own retries are off: every call goes through kbackup's RetryPolicy, so one budget
and one error style (target, HTTP status, object) cover every backend.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import functools
import hashlib
import logging
import re
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from kbackup.config import S3StorageConfig
from kbackup.storage import s3_lock
from kbackup.storage.base import (
    ObjectInfo,
    ObjectLock,
    ObjectWriter,
    Storage,
    StorageError,
)
from kbackup.storage.remote import (
    ResumableRead,
    RetryPolicy,
    TransientError,
    clean_key,
    describe_exception,
    is_transient_status,
    parse_retry_after,
    read_secret,
    status_text,
)

T = TypeVar("T")
log = logging.getLogger("kbackup.storage.s3")
# botocore's debug output carries signed request headers and is huge: keep it out of the log.
for _noisy in ("botocore", "aiobotocore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
# Parts go to aiohttp as bytes on purpose (see S3Storage.client): no copy, and no warning.
warnings.filterwarnings("ignore", "Sending a large body directly", ResourceWarning)

MAX_PARTS = 10_000  # S3's limit: the largest object is 10 000 x part_size
# Error codes S3 sends with a 4xx that still mean "try again".
TRANSIENT_CODES = {"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"}
TRANSIENT_EXCEPTIONS = (
    botocore.exceptions.HTTPClientError,  # connection closed, read timeout, stream broken
    botocore.exceptions.ConnectionError,  # refused, connect timeout (SSLError excluded below)
    botocore.exceptions.IncompleteReadError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)


class S3Storage(Storage):
    def __init__(self, name: str, config: S3StorageConfig):
        super().__init__(name)
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.part_size = config.part_size
        self.max_in_flight = config.max_in_flight
        self.retry = RetryPolicy(config.retries, config.retry_max_seconds)
        if config.object_lock is not None:
            self.lock_mode = config.object_lock.mode
            self.lock_seconds = config.object_lock.seconds
        # Read once here (open_storage runs again on reload); never logged or put in errors.
        self._access_key = read_secret(name, config.access_key_id_file)
        self._secret_key = read_secret(name, config.secret_access_key_file)
        self._session = get_session()
        self._client_config = AioConfig(
            region_name=config.region,
            s3={"addressing_style": "path" if config.path_style else "virtual"},
            retries={"total_max_attempts": 1},
            connect_timeout=min(config.timeout, 30.0),
            read_timeout=config.timeout,
            # Checksum trailers (aws-chunked) trip many S3-compatible servers; parts carry
            # Content-MD5 instead, which every implementation checks.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=config.max_in_flight + 4,
        )

    def describe(self) -> str:
        where = self.config.endpoint_url or f"AWS {self.config.region}"
        return f"{self.name} (s3 {where} bucket {self.bucket}/{self.prefix})"

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """A client for one operation: no connection pool outlives it, so nothing to close."""
        async with self._session.create_client(
            "s3",
            endpoint_url=self.config.endpoint_url,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            config=self._client_config,
        ) as client:
            # botocore wraps bytes bodies in a BytesIO, which aiohttp then copies whole:
            # parts go out as the bytes they are instead (only memory is at stake).
            with contextlib.suppress(Exception):
                from botocore.handlers import convert_body_to_file_like_object

                for op in ("PutObject", "UploadPart"):
                    client.meta.events.unregister(
                        f"before-parameter-build.s3.{op}", convert_body_to_file_like_object
                    )
            yield client

    # ------------------------------------------------------------------ errors and retries

    def _error(self, exc: BaseException, op: str, key: str) -> StorageError:
        """TransientError or StorageError for a failed call, naming target, status and key."""
        if isinstance(exc, botocore.exceptions.ClientError):
            meta = exc.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            detail = str(error.get("Message") or "")
            if code == "NoSuchBucket":
                detail = f"bucket {self.bucket!r} does not exist"
            elif status in (401, 403):
                detail += " (check the access key files and the bucket policy)"
            text = f"storage {self.name}: HTTP {status_text(status)} on {op} {key}"
            if code and code != str(status):
                text += f": {code}" + (f": {detail}" if detail else "")
            if is_transient_status(status) or code in TRANSIENT_CODES:
                retry_after = parse_retry_after(meta.get("HTTPHeaders", {}).get("retry-after"))
                return TransientError(text, retry_after)
            return StorageError(text)
        # botocore puts the whole URL in its messages; the query (upload ids) is just noise.
        what = re.sub(r"\?[^\"\s]*", "", describe_exception(exc))
        text = f"storage {self.name}: {what} on {op} {key}"
        if isinstance(exc, TRANSIENT_EXCEPTIONS) and not isinstance(
            exc, botocore.exceptions.SSLError
        ):
            return TransientError(text)
        return StorageError(text)

    async def call(
        self, op: str, key: str, fn: Callable[[], Awaitable[T]], policy: RetryPolicy | None = None
    ) -> T:
        """fn() with retries; key is the caller's key (without the prefix), for messages."""

        async def attempt() -> T:
            try:
                return await fn()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise self._error(exc, op, key) from exc
            except TRANSIENT_EXCEPTIONS as exc:
                raise self._error(exc, op, key) from exc

        return await (policy or self.retry).run(attempt)

    # ------------------------------------------------------------------ the interface

    def _full(self, key: str) -> str:
        return self.prefix + clean_key(self.name, key)

    async def open_writer(self, key: str, retain_until: datetime | None = None
                          ) -> ObjectWriter:
        if retain_until is not None and self.lock_mode is None:
            self.refuse_lock(retain_until)
        return S3Writer(self, clean_key(self.name, key), retain_until)

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream an object; a connection lost mid-way resumes with a Range request."""
        full = self._full(key)
        etag: str | None = None
        state = ResumableRead(self.retry.backoff(), TRANSIENT_EXCEPTIONS)
        async with self.client() as client:
            while not state.finished:
                extra = {"Range": f"bytes={state.offset}-", "IfMatch": etag} if etag else {}
                response = await self.call(
                    "GetObject",
                    key,
                    lambda: client.get_object(Bucket=self.bucket, Key=full, **extra),  # noqa: B023
                )
                etag = response["ETag"]
                body = response["Body"]
                try:
                    async for chunk in state.body(
                        lambda: body.read(chunk_size),  # noqa: B023
                        lambda exc: self._error(exc, "GetObject", key),
                    ):
                        yield chunk
                finally:
                    body.close()

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        items: list[ObjectInfo] = []
        token: str | None = None
        async with self.client() as client:
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
                if token:
                    kwargs["ContinuationToken"] = token
                page = await self.call(
                    "ListObjectsV2",
                    prefix or "/",
                    lambda: client.list_objects_v2(**kwargs),  # noqa: B023
                )
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) :]
                    if key and not key.endswith("/"):  # "folder" markers are not objects
                        modified = obj["LastModified"].astimezone(UTC)
                        items.append(ObjectInfo(key, int(obj["Size"]), modified))
                if not page.get("IsTruncated"):
                    break
                token = page["NextContinuationToken"]
        items.sort(key=lambda i: i.key)
        return items

    async def stat(self, key: str) -> ObjectInfo | None:
        full = self._full(key)

        async def head() -> Any:
            try:
                return await client.head_object(Bucket=self.bucket, Key=full)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise

        async with self.client() as client:
            head_response = await self.call("HeadObject", key, head)
        if head_response is None:
            return None
        modified = head_response["LastModified"].astimezone(UTC)
        return ObjectInfo(key, int(head_response["ContentLength"]), modified)

    async def delete(self, key: str) -> None:
        """On a lock target every version of the key goes (a DeleteObject without a version
        only hides the data behind a delete marker); a locked one is refused by S3."""
        full = self._full(key)
        if self.lock_mode is not None:
            found = await s3_lock.versions(self, full)
            await s3_lock.delete_versions(self, [v for v in found if v[0] == full])
            return
        async with self.client() as client:
            await self.call(
                "DeleteObject", key, lambda: client.delete_object(Bucket=self.bucket, Key=full)
            )

    # ------------------------------------------------------------------ object lock

    async def check_lock(self) -> None:
        if self.lock_mode is not None:
            await s3_lock.check_lock(self)

    async def object_lock(self, key: str) -> ObjectLock | None:
        async with self.client() as client:
            return await s3_lock.head_lock(self, client, self._full(key), key)

    async def locked_until(self, prefix: str) -> datetime | None:
        if self.lock_mode is None:
            return None
        return await s3_lock.locked_until(self, self.prefix + prefix)

    async def remove_hidden(self, prefix: str) -> None:
        if self.lock_mode is not None:
            await s3_lock.delete_versions(self, await s3_lock.versions(self, self.prefix + prefix))

    async def abort_stale_uploads(self, older_than: timedelta) -> builtins.list[str]:
        """Abort multipart uploads under the prefix started more than older_than ago.

        Uploads of a daemon that was killed are invisible but billed; nothing else removes
        them unless the bucket has a lifecycle rule. Returns the keys of the aborted uploads.
        """
        cutoff = datetime.now(UTC) - older_than
        aborted: builtins.list[str] = []
        markers: dict[str, str] = {}
        async with self.client() as client:
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, **markers}
                page = await self.call(
                    "ListMultipartUploads",
                    self.prefix or "/",
                    lambda: client.list_multipart_uploads(**kwargs),  # noqa: B023
                )
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] >= cutoff:
                        continue
                    key = upload["Key"][len(self.prefix) :]
                    await self.call(
                        "AbortMultipartUpload",
                        key,
                        functools.partial(client.abort_multipart_upload, Bucket=self.bucket,
                                          Key=upload["Key"], UploadId=upload["UploadId"]),
                    )
                    log.warning("event=upload.aborted target=%s key=%s", self.name, key)
                    aborted.append(key)
                if not page.get("IsTruncated"):
                    break
                markers = {
                    "KeyMarker": page.get("NextKeyMarker", ""),
                    "UploadIdMarker": page.get("NextUploadIdMarker", ""),
                }
        return aborted


class S3Writer(ObjectWriter):
    """A multipart upload, started when the first full part exists (or a PutObject at commit)."""

    def __init__(self, storage: S3Storage, key: str, retain_until: datetime | None = None):
        self.storage = storage
        self.key = key
        self.retain_until = retain_until
        self.full = storage.prefix + key
        self.chunks: deque[bytes] = deque()  # written, not yet in a part
        self.buffered = 0
        self.size = 0
        self.upload_id: str | None = None
        self.parts: dict[int, tuple[str, bytes]] = {}  # number -> (ETag, MD5 digest)
        self.next_part = 1
        self.tasks: set[asyncio.Task[None]] = set()
        self.stack = AsyncExitStack()
        self._client: Any = None
        self.done = False

    def _extra(self) -> dict[str, Any]:
        cls = self.storage.config.storage_class
        extra: dict[str, Any] = {"StorageClass": cls} if cls else {}
        if self.retain_until is not None and self.storage.lock_mode is not None:
            extra["ObjectLockMode"] = self.storage.lock_mode.upper()
            extra["ObjectLockRetainUntilDate"] = self.retain_until
        return extra

    async def _get_client(self) -> Any:
        if self._client is None:
            self._client = await self.stack.enter_async_context(self.storage.client())
        return self._client

    async def write(self, data: bytes) -> None:
        if self.done:
            raise StorageError(f"storage {self.storage.name}: {self.key} is already closed")
        if data:
            self.chunks.append(bytes(data))
            self.buffered += len(data)
            self.size += len(data)
        while self.buffered >= self.storage.part_size:
            # Join the chunks into a part only once a slot is free: memory stays at about
            # (1 + max_in_flight) parts.
            await self._wait_for_slot(self.storage.max_in_flight - 1)
            await self._start_part(self._take(self.storage.part_size))

    def _take(self, size: int) -> bytes:
        """The first `size` buffered bytes as one bytes object (copying one part, once)."""
        taken: list[bytes] = []
        while size > 0 and self.chunks:
            chunk = self.chunks[0]
            if len(chunk) <= size:
                taken.append(self.chunks.popleft())
            else:
                taken.append(chunk[:size])
                self.chunks[0] = chunk[size:]
            size -= len(taken[-1])
            self.buffered -= len(taken[-1])
        return b"".join(taken)

    async def _wait_for_slot(self, busy: int) -> None:
        """Wait until at most `busy` parts are uploading; a failed part fails the writer."""
        while len(self.tasks) > busy:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self.tasks.discard(task)
                task.result()
        for task in [t for t in self.tasks if t.done()]:
            self.tasks.discard(task)
            task.result()

    async def _start_part(self, data: bytes) -> None:
        client = await self._get_client()
        if self.upload_id is None:
            created = await self.storage.call(
                "CreateMultipartUpload",
                self.key,
                lambda: client.create_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.full, **self._extra()
                ),
            )
            self.upload_id = created["UploadId"]
        number = self.next_part
        if number > MAX_PARTS:
            raise StorageError(
                f"storage {self.storage.name}: {self.key} is larger than S3's {MAX_PARTS} parts"
                f" of part_size {self.storage.part_size} bytes: raise part_size"
            )
        self.next_part += 1
        self.tasks.add(asyncio.create_task(self._upload_part(client, number, data)))

    async def _upload_part(self, client: Any, number: int, data: bytes) -> None:
        """One part; a retry re-sends the same buffered bytes."""
        digest = await asyncio.to_thread(lambda: hashlib.md5(data).digest())
        response = await self.storage.call(
            f"UploadPart {number}",
            self.key,
            lambda: client.upload_part(
                Bucket=self.storage.bucket,
                Key=self.full,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=base64.b64encode(digest).decode(),
            ),
        )
        self.parts[number] = (response["ETag"], digest)

    async def commit(self) -> None:
        if self.done:
            raise StorageError(f"storage {self.storage.name}: {self.key} is already closed")
        client = await self._get_client()
        if self.upload_id is None:
            body = self._take(self.buffered)
            digest = await asyncio.to_thread(lambda: hashlib.md5(body).digest())
            await self.storage.call(
                "PutObject",
                self.key,
                lambda: client.put_object(
                    Bucket=self.storage.bucket,
                    Key=self.full,
                    Body=body,
                    ContentMD5=base64.b64encode(digest).decode(),
                    **self._extra(),
                ),
            )
        else:
            if self.buffered:
                await self._wait_for_slot(self.storage.max_in_flight - 1)
                await self._start_part(self._take(self.buffered))
            await self._wait_for_slot(0)
            await self._complete(client)
        if self.retain_until is not None:
            await s3_lock.ensure_lock(self.storage, client, self.full, self.key,
                                      self.retain_until)
        self.done = True
        await self.stack.aclose()

    async def _complete(self, client: Any) -> None:
        """CompleteMultipartUpload; after a lost reply the retry's NoSuchUpload is checked."""
        numbers = sorted(self.parts)
        expected = (
            hashlib.md5(b"".join(self.parts[n][1] for n in numbers)).hexdigest()
            + f"-{len(numbers)}"
        )
        attempts = 0

        async def complete() -> Any:
            nonlocal attempts
            attempts += 1
            try:
                return await client.complete_multipart_upload(
                    Bucket=self.storage.bucket,
                    Key=self.full,
                    UploadId=self.upload_id,
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": self.parts[n][0]} for n in numbers]
                    },
                )
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if attempts > 1 and code == "NoSuchUpload":
                    head = await client.head_object(Bucket=self.storage.bucket, Key=self.full)
                    if head["ETag"].strip('"') == expected:
                        return head  # an earlier attempt completed it; only the reply was lost
                raise

        await self.storage.call("CompleteMultipartUpload", self.key, complete)

    async def abort(self) -> None:
        if self.done:
            return
        self.done = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.chunks.clear()
        try:
            if self.upload_id is not None:
                client = await self._get_client()
                await self.storage.call(
                    "AbortMultipartUpload",
                    self.key,
                    lambda: client.abort_multipart_upload(
                        Bucket=self.storage.bucket, Key=self.full, UploadId=self.upload_id
                    ),
                    self.storage.retry.cleanup(),
                )
        except StorageError as exc:
            # Left for abort_stale_uploads(); the run is failing anyway.
            log.warning("event=upload.abort_failed target=%s error=%r", self.storage.name, str(exc))
        finally:
            with contextlib.suppress(Exception):
                await self.stack.aclose()
