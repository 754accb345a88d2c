"""What the network backends share: retries, error wording, keys and secrets.

A network backend turns every failure into either TransientError (connection reset, timeout,
HTTP 5xx, 429: worth another try) or StorageError (401/403, missing bucket, 507: trying again
cannot help, so the run fails at once with a message naming target, status and object).
Retries are bounded in count and in total time, with exponential backoff plus jitter so that
several writers hitting a struggling server do not retry in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar

from kbackup.config import read_secret_file
from kbackup.storage.base import StorageError

T = TypeVar("T")
log = logging.getLogger("kbackup.storage")

# Not worth retrying even though they are 5xx: the server says it can't, not that it failed.
PERMANENT_5XX = {501, 505, 507, 508}


class TransientError(StorageError):
    """A failure another attempt may not have; retry_after is the server's hint in seconds.

    A StorageError too, so that one escaping a retry loop is still handled as a storage failure.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def is_transient_status(status: int) -> bool:
    return status in (408, 429) or (500 <= status < 600 and status not in PERMANENT_5XX)


def status_text(status: int) -> str:
    """ "507 Insufficient Storage"; servers' own reason phrases vary, the standard one doesn't."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def describe_exception(exc: BaseException) -> str:
    """A connection-level failure in a few words (the exception class says more than str())."""
    text = str(exc).strip()
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) and not text:
        return "timed out"
    return f"{name}: {text}" if text else name


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent or odd."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Backoff:
    """One operation's retry budget: attempts so far and when it started."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.attempt = 0
        self.started = time.monotonic()

    async def wait(self, error: TransientError) -> None:
        """Sleep before the next attempt, or raise StorageError when the budget is spent."""
        policy = self.policy
        elapsed = time.monotonic() - self.started
        ceiling = min(policy.max_delay, policy.base_delay * 2**self.attempt)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, policy.max_delay))
        self.attempt += 1
        if self.attempt > policy.retries or elapsed + delay > policy.max_seconds:
            raise StorageError(
                f"{error} (gave up after {self.attempt} attempts in {elapsed:.1f}s)"
            ) from error
        log.warning(
            "event=storage.retry attempt=%d delay=%.2f error=%r", self.attempt, delay, str(error)
        )
        await asyncio.sleep(delay)


class ResumableRead:
    """Where a ranged GET of one object stands: bytes received so far, and whether the last
    body reached its end. A transient failure mid-body waits out the backoff and ends that
    body early, so the backend asks again from `offset` (with Range and If-Match)."""

    def __init__(self, backoff: Backoff, transient: tuple[type[BaseException], ...]):
        self.backoff = backoff
        self.transient = transient
        self.offset = 0
        self.finished = False

    async def body(self, read: Callable[[], Awaitable[bytes]],
                   classify: Callable[[BaseException], StorageError]) -> AsyncIterator[bytes]:
        """One response body's chunks; classify turns a read failure into the backend's error
        (a permanent one is raised, a transient one ends the body for a resume)."""
        while True:
            try:
                chunk = await read()
            except self.transient as exc:
                error = classify(exc)
                if not isinstance(error, TransientError):
                    raise error from exc
                await self.backoff.wait(error)
                return
            if not chunk:
                self.finished = True
                return
            self.offset += len(chunk)
            yield chunk


class RetryPolicy:
    def __init__(
        self,
        retries: int = 5,
        max_seconds: float = 60.0,
        base_delay: float = 0.5,
        max_delay: float = 15.0,
    ):
        self.retries = retries
        self.max_seconds = max_seconds
        self.base_delay = base_delay
        self.max_delay = max_delay

    def backoff(self) -> Backoff:
        return Backoff(self)

    def cleanup(self) -> RetryPolicy:
        """A short budget for best-effort cleanup after a failure: what it leaves behind is
        removed later (clean_incomplete, abort_stale_uploads), and a shutdown must not wait."""
        return RetryPolicy(
            min(self.retries, 2), min(self.max_seconds, 5.0), self.base_delay, self.max_delay
        )

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """attempt() until it returns, raises anything but TransientError, or the budget ends."""
        backoff = self.backoff()
        while True:
            try:
                return await attempt()
            except TransientError as exc:
                await backoff.wait(exc)


def read_secret(storage: str, path: Path) -> str:
    """A secret from its file, for building a client; it never goes into a message or log."""
    try:
        value = read_secret_file(path).strip()
    except ValueError as exc:
        raise StorageError(f"storage {storage}: {exc}") from None
    if not value:
        raise StorageError(f"storage {storage}: secret file {path} is empty")
    return value


def clean_key(storage: str, key: str) -> str:
    """The key with empty parts dropped; '.'/'..' parts are refused like on local storage."""
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise StorageError(f"storage {storage}: invalid object key {key!r}")
    return "/".join(parts)
