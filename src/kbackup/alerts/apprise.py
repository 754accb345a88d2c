"""Alerts through Apprise: one channel reaches every service Apprise knows (Telegram, Discord,
Teams, ntfy, Gotify, ...), one URL a line in urls_file.

Apprise is synchronous, so each attempt runs in a thread; it is imported there, never at the
daemon's start. The URLs are read at each attempt (like Slack's webhook_url_file) and are
secrets: an error names the scheme and the line, and apprise's reason with the URL's parts
scrubbed ("ntfy (line 1): HTTP 500 Internal Server Error"). A retry of the same message
skips the URLs that already took it, so nobody gets it twice.
"""

from __future__ import annotations

import asyncio
import re

from kbackup.alerts.base import Channel, ChannelError, Message
from kbackup.apprise_urls import Capture, instantiate, read_urls, scheme_of, scrub
from kbackup.config import AlertChannelConfig, AppriseChannelConfig


def notify_type(message: Message) -> str:
    """Apprise's NotifyType value (its icon and colour) for a message."""
    if message.kind in ("resolved", "recovery", "success") or message.severity == "ok":
        return "success"
    if message.kind == "failure" or message.severity == "critical":
        return "failure"
    return "warning" if message.severity == "warning" else "info"


def _notify_one(url: str, message: Message, timeout: float) -> tuple[str, bool] | None:
    """Send to one URL: None when it took the message, else (reason, retry)."""
    plugin, why = instantiate(url)
    if plugin is None:
        return why, False
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    with Capture() as capture:
        try:
            sent = plugin.notify(body=message.text(), title=message.subject(),
                                 notify_type=notify_type(message), body_format="text")
        except Exception as exc:  # a plugin's bug must not escape as anything else
            return f"{exc.__class__.__name__}: {scrub(str(exc), [url])}", True
    if sent:
        return None
    why = capture.reason([url], "Apprise reports a failure")
    return why, not re.match(r"HTTP 4(?!08|29)", why)  # the request itself is wrong


def _notify_all(urls: list[tuple[int, str]], message: Message, done: set[str],
                timeout: float) -> list[tuple[str, bool]]:
    """Each URL not yet in `done` in turn (in a thread); the failures as (line, retry)."""
    failures = []
    for number, url in urls:
        if url in done:
            continue
        failed = _notify_one(url, message, timeout)
        if failed is None:
            done.add(url)
        else:
            failures.append((f"{scheme_of(url) or '?'} (line {number}): {failed[0]}", failed[1]))
    return failures


class AppriseChannel(Channel):
    type = "apprise"
    config: AppriseChannelConfig

    def __init__(self, name: str, config: AlertChannelConfig):
        super().__init__(name, config)
        self._sent: tuple[Message, set[str]] | None = None  # a message, the URLs that took it

    async def deliver(self, message: Message) -> None:
        try:
            urls = read_urls(self.config.urls_file)
        except ValueError as exc:
            raise ChannelError(str(exc), retry=False) from None
        if not urls:
            raise ChannelError(f"{self.config.urls_file} holds no Apprise URL", retry=False)
        if self._sent is None or self._sent[0] is not message:
            self._sent = (message, set())
        failures = await asyncio.to_thread(_notify_all, urls, message, self._sent[1],
                                           self.config.timeout)
        if failures:
            raise ChannelError("; ".join(line for line, _ in failures),
                               retry=any(retry for _, retry in failures))
