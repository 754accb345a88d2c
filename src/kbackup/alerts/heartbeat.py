"""The dead-man's switch: pings to an external monitor (healthchecks.io, Uptime Kuma push,
Cronitor, any URL) when a job's backup starts, succeeds or fails, and every `every` while the
daemon runs. If kbackupd or its machine dies, the pings stop and the monitor tells someone.

Pings are fire-and-forget tasks: retried a few times with short timeouts and doubling delays,
never awaited by a run, cancelled at shutdown. A ping URL whose last ping failed after every
attempt is a WARNING ("heartbeat" check, health_daemon.py) on the alert channels until a ping
gets through again. The URLs are secrets: logs and errors show only scheme and host.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from kbackup import __version__
from kbackup.config import Config, DaemonHeartbeatConfig, JobHeartbeatConfig, read_secret_file
from kbackup.health_facts import ChannelState
from kbackup.times import utcnow

log = logging.getLogger("kbackup.heartbeat")
DAEMON = "daemon"
BODY_LIMIT = 1000  # healthchecks.io keeps the first 100 kB; one line is all we send


class PingError(Exception):
    """One attempt failed; str() never holds the URL."""


def mask(url: str) -> str:
    """What a log may say about a ping URL: its scheme and host, never path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/***" if parts.scheme else "<url>"


def with_suffix(url: str, suffix: str) -> str:
    """healthchecks.io's URL + "/start" or "/fail", before any query string."""
    if not suffix:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))


def one_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line[:BODY_LIMIT]


async def ping_once(url: str, body: str | None) -> None:
    """One request: POST with the body when there is one, else GET; any 2xx/3xx is fine.
    The caller bounds the time."""
    headers = {"User-Agent": f"kbackupd/{__version__}"}
    method = "GET" if body is None else "POST"
    try:
        async with aiohttp.ClientSession() as s, \
                s.request(method, url, data=None if body is None else body.encode(),
                          headers=headers) as response:
            if response.status >= 400:
                raise PingError(f"HTTP {response.status} {response.reason}")
    except aiohttp.InvalidURL:
        raise PingError("not a valid URL") from None
    except aiohttp.ClientError as exc:
        raise PingError(exc.__class__.__name__) from None  # its text may hold the URL


async def ping(url: str, body: str | None, cfg: DaemonHeartbeatConfig | JobHeartbeatConfig
               ) -> str | None:
    """Ping with retries and doubling delays; None when it got through, else why not."""
    delay = cfg.retry_delay
    attempts = cfg.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(cfg.timeout):
                await ping_once(url, body)
            return None
        except TimeoutError:
            error = f"no answer within {cfg.timeout:g}s"
        except PingError as exc:
            error = str(exc)
        except OSError as exc:
            error = exc.__class__.__name__
        if attempt == attempts:
            return error + (f" (after {attempt} attempts)" if attempt > 1 else "")
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


class Heartbeats:
    """The daemon's pinger: run hooks, the daemon loop, and each ping URL's state."""

    def __init__(self, config: Config, on_change: Callable[[], None] = lambda: None):
        self.config = config
        self.on_change = on_change  # a ping URL started or stopped failing: evaluate health
        self.states: dict[str, ChannelState] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    def reconfigure(self, config: Config) -> None:
        self.config = config
        names = {DAEMON} if config.settings.heartbeat else set()
        names |= {name for name, job in config.jobs.items() if job.heartbeat is not None}
        self.states = {k: v for k, v in self.states.items() if k in names}

    def start(self) -> None:
        self._loop = asyncio.create_task(self._daemon_loop(), name="heartbeat")

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._loop] if self._loop else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def flush(self) -> None:
        """Wait for the pings under way (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ hooks

    def run_started(self, run: Any) -> None:
        job = self.config.jobs.get(run.job)
        if run.kind == "backup" and job is not None and job.heartbeat is not None \
                and job.heartbeat.style == "healthchecks":
            self._fire(run.job, job.heartbeat, job.heartbeat.url_file, "/start",
                       f"backup {run.id} started ({run.trigger})")

    def run_finished(self, run: Any, status: str, error: str | None) -> None:
        job = self.config.jobs.get(run.job)
        cfg = job.heartbeat if job is not None else None
        if run.kind != "backup" or cfg is None or (error or "").startswith("aborted: daemon"):
            return  # a shutdown is no failure of the job; the monitor sees the silence
        if status == "complete":
            body = f"backup {run.id} complete" + (f": {one_line(error)}" if error else "")
            self._fire(run.job, cfg, cfg.url_file, "", body)
        elif cfg.style == "healthchecks":
            self._fire(run.job, cfg, cfg.url_file, "/fail",
                       f"backup {run.id} failed: {one_line(error) or 'failed'}")
        elif cfg.fail_url_file is not None:
            self._fire(run.job, cfg, cfg.fail_url_file, "",
                       f"backup {run.id} failed: {one_line(error) or 'failed'}")

    def _fire(self, name: str, cfg: JobHeartbeatConfig, url_file: Path, suffix: str,
              body: str) -> None:
        """healthchecks.io takes the result as a POST body; "plain" monitors (Uptime Kuma's
        push) want a GET, their status in the URL's own query."""
        sent = body if cfg.style == "healthchecks" else None
        task = asyncio.create_task(self.send(name, cfg, url_file, suffix, sent),
                                   name=f"heartbeat-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ sending

    async def _daemon_loop(self) -> None:
        while True:
            cfg = self.config.settings.heartbeat
            if cfg is None:
                await asyncio.sleep(60)  # a reload may add one
                continue
            began = time.monotonic()
            await self.send(DAEMON, cfg, cfg.url_file, "", None)
            await asyncio.sleep(max(0.0, cfg.every - (time.monotonic() - began)))

    async def send(self, name: str, cfg: DaemonHeartbeatConfig | JobHeartbeatConfig,
                   url_file: Path, suffix: str, body: str | None) -> None:
        """Read the URL, ping, record the outcome; never raises (a bug is logged)."""
        try:
            url = with_suffix(read_secret_file(url_file), suffix)
        except ValueError as exc:
            self._record(name, str(exc), "-")
            return
        try:
            error = await ping(url, body, cfg)
        except Exception as exc:  # noqa: BLE001 - a pinger bug must not reach the daemon
            error = f"internal error: {exc.__class__.__name__}"
        self._record(name, error, mask(url))

    def _record(self, name: str, error: str | None, where: str) -> None:
        state = self.states.setdefault(name, ChannelState(name))
        was_failing = state.failures > 0
        if error is None:
            state.failures, state.failing_since, state.last_error = 0, None, None
            log.debug("event=heartbeat.sent name=%s url=%s", name, where)
            if was_failing:
                log.info("event=heartbeat.recovered name=%s url=%s", name, where)
                self.on_change()
            return
        state.failures += 1
        state.last_error = error
        if state.failing_since is None:
            state.failing_since = utcnow()
        log.warning("event=heartbeat.failed name=%s url=%s error=%r", name, where, error)
        if not was_failing:
            self.on_change()
