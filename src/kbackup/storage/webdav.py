"""A WebDAV collection (Nextcloud, ownCloud, Apache mod_dav, nginx, ...) through aiohttp.

An object streams to `<key>.partial` as one chunked PUT whose body is an async generator fed
by write() through a small bounded queue: memory stays at a few chunks. commit() checks the
size the server stored, then MOVEs the partial to its name (Overwrite: T), so readers never
see half an object. Missing collections are created one level at a time (MKCOL; 405 means it
exists). Listing walks the tree with PROPFIND Depth: 1, which every server allows (Depth:
infinity is often disabled).

A streamed PUT cannot be sent again once its bytes are gone, so only a PUT whose bytes so far
are all still held (up to REPLAY_LIMIT: the manifest, the config snapshot, indexes, the start
of any stream) is retried; a big stream that breaks fails its object with a clear error and
the run's failure handling removes the partial.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from kbackup.config import WebDAVStorageConfig
from kbackup.storage.base import PARTIAL_SUFFIX, ObjectInfo, ObjectWriter, Storage, StorageError
from kbackup.storage.davxml import PROPFIND_BODY, Entry, parse_multistatus, server_message
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

log = logging.getLogger("kbackup.storage.webdav")
QUEUE_CHUNKS = 4  # chunks (~1 MiB each from the pipeline) waiting for the PUT body
REPLAY_LIMIT = 4 << 20  # a PUT is retried only while everything it sent is still held
LIST_CONCURRENCY = 4
TRANSIENT_EXCEPTIONS = (aiohttp.ClientError, TimeoutError, OSError)


class WebDAVStorage(Storage):
    def __init__(self, name: str, config: WebDAVStorageConfig):
        super().__init__(name)
        self.config = config
        self.base = str(URL(config.url.rstrip("/") + "/"))
        self.base_path = unquote(urlsplit(self.base).path)
        password = read_secret(name, config.password_file)
        token = base64.b64encode(f"{config.username}:{password}".encode()).decode()
        # Built here, sent only in headers; never logged and never part of an error message.
        self._headers = {"Authorization": f"Basic {token}", "Accept-Encoding": "identity"}
        self._ssl: ssl.SSLContext | bool = True
        if not config.verify_tls:
            self._ssl = False
        elif config.ca_file is not None:
            try:
                self._ssl = ssl.create_default_context(cafile=str(config.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise StorageError(f"storage {name}: cannot load ca_file: {exc}") from None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(config.timeout, 30.0), sock_read=config.timeout
        )
        self.retry = RetryPolicy(config.retries, config.retry_max_seconds)

    def describe(self) -> str:
        return f"{self.name} (webdav {self.base})"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """A session for one operation: nothing outlives it, so nothing needs closing later."""
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=LIST_CONCURRENCY + 2)
        async with aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            auto_decompress=False,
        ) as session:
            yield session

    def url(self, key: str, collection: bool = False) -> URL:
        path = "/".join(quote(p, safe="") for p in key.split("/") if p)
        return URL(self.base + path + ("/" if collection and path else ""), encoded=True)

    def key_of(self, href: str) -> str | None:
        if "://" in href:  # an absolute URL: keep the path (hrefs carry no query)
            href = "/" + href.split("://", 1)[1].partition("/")[2]
        path = unquote(href)
        if path.rstrip("/") == self.base_path.rstrip("/"):
            return ""
        if not path.startswith(self.base_path):
            return None
        return path[len(self.base_path) :].strip("/")

    # ------------------------------------------------------------------ requests and errors

    def status_error(
        self, status: int, method: str, key: str, headers: CIMultiDictProxy[str], body: bytes
    ) -> Exception:
        text = f"storage {self.name}: HTTP {status_text(status)} on {method} {key or '/'}"
        message = server_message(body)
        if message:
            text += f": {message}"
        if status == 401:
            text += " (check username and password_file)"
        elif 300 <= status < 400:
            text += f" (redirected to {headers.get('Location')}; check url)"
        if is_transient_status(status):
            return TransientError(text, parse_retry_after(headers.get("Retry-After")))
        return StorageError(text)

    def connection_error(self, exc: BaseException, method: str, key: str) -> StorageError:
        """Transient, except TLS failures: a bad certificate stays bad."""
        text = f"storage {self.name}: {describe_exception(exc)} on {method} {key}"
        if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
            return StorageError(text + " (check verify_tls / ca_file)")
        return TransientError(text)

    async def request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        key: str,
        url: URL,
        ok: Iterable[int],
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        policy: RetryPolicy | None = None,
    ) -> tuple[int, bytes]:
        """A small request with retries; statuses in ok are returned, others raise."""

        async def attempt() -> tuple[int, bytes]:
            try:
                async with session.request(
                    method, url, headers=headers, data=data, allow_redirects=False
                ) as resp:
                    body = await resp.read()
            except TRANSIENT_EXCEPTIONS as exc:
                raise self.connection_error(exc, method, key) from exc
            if resp.status in ok:
                return resp.status, body
            raise self.status_error(resp.status, method, key, resp.headers, body)

        return await (policy or self.retry).run(attempt)

    def parse_multistatus(self, body: bytes, key: str) -> list[Entry]:
        try:
            return parse_multistatus(body, self.key_of)
        except ET.ParseError as exc:
            raise StorageError(
                f"storage {self.name}: invalid PROPFIND reply for {key or '/'}: {exc}"
            ) from None

    async def propfind(
        self, session: aiohttp.ClientSession, key: str, depth: int, collection: bool = True
    ) -> list[Entry] | None:
        """The entries of a collection (itself included), or None when it does not exist."""
        status, body = await self.request(
            session,
            "PROPFIND",
            key,
            self.url(key, collection),
            ok=(207, 404),
            headers={"Depth": str(depth), "Content-Type": "application/xml; charset=utf-8"},
            data=PROPFIND_BODY,
        )
        return None if status == 404 else self.parse_multistatus(body, key)

    async def ensure_parents(self, session: aiohttp.ClientSession, key: str) -> None:
        """MKCOL the collections above key: try the deepest, walk down from the top on 409."""
        parts = key.split("/")[:-1]
        chain = ["/".join(parts[:i]) for i in range(len(parts) + 1)]
        if await self._mkcol(session, chain[-1]) != 409:
            return
        for folder in chain:
            if await self._mkcol(session, folder) == 409:
                where = folder or self.base
                raise StorageError(
                    f"storage {self.name}: HTTP 409 Conflict on MKCOL {where}:"
                    " its parent collection does not exist (check url)"
                )

    async def _mkcol(self, session: aiohttp.ClientSession, folder: str) -> int:
        url = self.url(folder, collection=True)
        status, _ = await self.request(session, "MKCOL", folder, url, ok=(201, 405, 409))
        return status

    async def prune(self, session: aiohttp.ClientSession, key: str) -> None:
        """Remove collections left empty above key (like local storage removes empty dirs)."""
        folder = key.rpartition("/")[0]
        try:
            while folder:
                entries = await self.propfind(session, folder, 1)
                if entries is None or any(e.key != folder for e in entries):
                    return
                url = self.url(folder, collection=True)
                await self.request(session, "DELETE", folder, url, ok=(200, 204, 404, 409, 423))
                folder = folder.rpartition("/")[0]
        except StorageError as exc:
            log.info("event=storage.prune_failed target=%s error=%r", self.name, str(exc))

    # ------------------------------------------------------------------ the interface

    async def open_writer(self, key: str, retain_until: datetime | None = None
                          ) -> ObjectWriter:
        self.refuse_lock(retain_until)
        writer = WebDAVWriter(self, clean_key(self.name, key))
        try:
            await writer.start()
        except BaseException:
            await writer.stack.aclose()
            raise
        return writer

    async def _open_get(
        self, session: aiohttp.ClientSession, key: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        async def attempt() -> aiohttp.ClientResponse:
            try:
                resp = await session.get(self.url(key), headers=headers, allow_redirects=False)
            except TRANSIENT_EXCEPTIONS as exc:
                raise self.connection_error(exc, "GET", key) from exc
            if resp.status in (200, 206):
                return resp
            try:
                body = await resp.read()
            except TRANSIENT_EXCEPTIONS:
                body = b""
            finally:
                resp.release()
            raise self.status_error(resp.status, "GET", key, resp.headers, body)

        return await self.retry.run(attempt)

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream an object; a connection lost mid-way resumes with a Range request."""
        key = clean_key(self.name, key)
        etag: str | None = None
        state = ResumableRead(self.retry.backoff(), TRANSIENT_EXCEPTIONS)
        async with self.session() as session:
            while not state.finished:
                headers = {}
                if state.offset:
                    headers["Range"] = f"bytes={state.offset}-"
                    if etag:
                        headers["If-Match"] = etag
                resp = await self._open_get(session, key, headers)
                try:
                    if state.offset and resp.status != 206:
                        raise StorageError(
                            f"storage {self.name}: connection lost reading {key} and the server"
                            " cannot resume (no Range support)"
                        )
                    tag = resp.headers.get("ETag")
                    etag = etag or (tag if tag and not tag.startswith("W/") else None)
                    async for chunk in state.body(
                        lambda: resp.content.read(chunk_size),  # noqa: B023
                        lambda exc: self.connection_error(exc, "GET", key),
                    ):
                        yield chunk
                finally:
                    resp.release()

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        start = "/".join(p for p in prefix.split("/")[:-1] if p)
        items: list[ObjectInfo] = []
        limit = asyncio.Semaphore(LIST_CONCURRENCY)

        async def one(folder: str) -> tuple[str, list[Entry] | None]:
            async with limit:
                return folder, await self.propfind(session, folder, 1)

        async with self.session() as session:
            level, seen = [start], {start}
            while level:
                results = await asyncio.gather(*(one(folder) for folder in level))
                level = []
                for folder, entries in results:
                    for entry in entries or []:
                        inside = not folder or entry.key.startswith(folder + "/")
                        if entry.key in seen or not inside:
                            continue
                        if entry.collection:
                            below = entry.key + "/"
                            if below.startswith(prefix) or prefix.startswith(below):
                                seen.add(entry.key)
                                level.append(entry.key)
                        elif entry.key.startswith(prefix):
                            items.append(ObjectInfo(entry.key, entry.size, entry.modified))
        items.sort(key=lambda i: i.key)
        return items

    async def stat(self, key: str) -> ObjectInfo | None:
        async with self.session() as session:
            return await self.stat_in(session, clean_key(self.name, key))

    async def stat_in(self, session: aiohttp.ClientSession, key: str) -> ObjectInfo | None:
        entries = await self.propfind(session, key, 0, collection=False)
        found = [e for e in entries or [] if e.key == key and not e.collection]
        return ObjectInfo(key, found[0].size, found[0].modified) if found else None

    async def delete(self, key: str) -> None:
        key = clean_key(self.name, key)
        async with self.session() as session:
            status, _ = await self.request(
                session, "DELETE", key, self.url(key), ok=(200, 204, 404)
            )
            if status != 404:
                await self.prune(session, key)

    async def move(
        self, session: aiohttp.ClientSession, source: str, target: str, size: int
    ) -> None:
        headers = {"Destination": str(self.url(target)), "Overwrite": "T"}
        status, _ = await self.request(
            session, "MOVE", source, self.url(source), ok=(201, 204, 404), headers=headers
        )
        if status == 404:
            # A retried MOVE whose first attempt worked but whose reply was lost.
            info = await self.stat_in(session, target)
            if info is None or info.size != size:
                raise StorageError(f"storage {self.name}: HTTP 404 Not Found on MOVE {source}")


class WebDAVWriter(ObjectWriter):
    """One streamed PUT to <key>.partial, MOVEd to <key> by commit()."""

    def __init__(self, storage: WebDAVStorage, key: str):
        self.storage = storage
        self.key = key
        self.partial = key + PARTIAL_SUFFIX
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_CHUNKS)
        self.retained: list[bytes] | None = []  # everything sent so far, while small
        self.retained_bytes = 0
        self.ended = False
        self.size = 0
        self.sent = 0
        self.stack = AsyncExitStack()
        self.session: aiohttp.ClientSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False

    async def start(self) -> None:
        self.session = await self.stack.enter_async_context(self.storage.session())
        await self.storage.ensure_parents(self.session, self.key)

    async def _body(self) -> AsyncIterator[bytes]:
        for chunk in list(self.retained or ()):
            yield chunk  # a retried PUT sends again what the failed one had sent
        while not self.ended:
            item = await self.queue.get()
            if item is None:
                self.ended = True
                return
            if self.retained is not None:
                if self.retained_bytes + len(item) <= REPLAY_LIMIT:
                    self.retained.append(item)
                    self.retained_bytes += len(item)
                else:
                    self.retained = None
            self.sent += len(item)
            yield item

    async def _upload(self, session: aiohttp.ClientSession) -> None:
        storage = self.storage
        backoff = storage.retry.backoff()
        headers = {"Content-Type": "application/octet-stream"}
        while True:
            error: Exception
            try:
                async with session.put(
                    storage.url(self.partial),
                    data=self._body(),
                    headers=headers,
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
            except TRANSIENT_EXCEPTIONS as exc:
                error = storage.connection_error(exc, "PUT", self.partial)
            else:
                if resp.status in (200, 201, 204) and self.ended:
                    return
                error = storage.status_error(resp.status, "PUT", self.partial, resp.headers, body)
                if resp.status < 300:
                    error = StorageError(f"{error}: the server answered before the upload ended")
            if not isinstance(error, TransientError):
                raise error
            if self.retained is None:
                raise StorageError(
                    f"{error}; {self.sent} bytes of the stream had already gone out and a"
                    " WebDAV PUT cannot be resumed, so this object fails"
                ) from error
            await backoff.wait(error)

    def _upload_failure(self) -> BaseException:
        assert self.task is not None
        if self.task.cancelled():
            return StorageError(f"storage {self.storage.name}: upload of {self.key} was cancelled")
        error = self.task.exception()
        if error is None or isinstance(error, StorageError):
            return error or StorageError(
                f"storage {self.storage.name}: upload of {self.key} ended early"
            )
        return StorageError(
            f"storage {self.storage.name}: {describe_exception(error)} on PUT {self.partial}"
        )

    async def _feed(self, item: bytes | None) -> None:
        """Queue a chunk for the PUT body; fail as soon as the upload has failed."""
        if self.task is None:
            # The PUT starts with the first data: a source slow to begin (pg_dump waiting for
            # a lock) must not hold an idle request open until the server drops it.
            assert self.session is not None
            self.task = asyncio.create_task(self._upload(self.session))
        if self.task.done():
            raise self._upload_failure()
        if not self.queue.full():
            self.queue.put_nowait(item)
            return
        put = asyncio.ensure_future(self.queue.put(item))
        try:
            done, _ = await asyncio.wait(
                {put, self.task},
                timeout=self.storage.config.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not put.done():
                put.cancel()
        if put in done:
            return
        if self.task in done:
            raise self._upload_failure()
        raise StorageError(
            f"storage {self.storage.name}: upload of {self.partial} stalled: the server took"
            f" no data for {self.storage.config.timeout:.0f}s"
        )

    def _check_open(self) -> None:
        if self.done:
            raise StorageError(f"storage {self.storage.name}: {self.key} is already closed")

    async def write(self, data: bytes) -> None:
        self._check_open()
        if data:
            self.size += len(data)
            await self._feed(data)

    async def commit(self) -> None:
        self._check_open()
        await self._feed(None)
        assert self.session is not None and self.task is not None
        await self.task
        info = await self.storage.stat_in(self.session, self.partial)
        if info is None or info.size != self.size:
            stored = "nothing" if info is None else f"{info.size} bytes"
            raise StorageError(
                f"storage {self.storage.name}: {self.partial} holds {stored} on the server"
                f" but {self.size} bytes were written"
            )
        await self.storage.move(self.session, self.partial, self.key, self.size)
        self.done = True
        await self.stack.aclose()

    async def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.retained = None
        try:
            if self.session is not None:
                url, policy = self.storage.url(self.partial), self.storage.retry.cleanup()
                await self.storage.request(
                    self.session, "DELETE", self.partial, url, ok=(200, 204, 404), policy=policy
                )
                await self.storage.prune(self.session, self.partial)
        except StorageError as exc:
            # The next daemon start removes it (clean_incomplete lists partials).
            log.warning(
                "event=partial.delete_failed target=%s error=%r", self.storage.name, str(exc)
            )
        finally:
            with contextlib.suppress(Exception):
                await self.stack.aclose()
