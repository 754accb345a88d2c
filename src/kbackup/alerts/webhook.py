"""Alerts as a JSON POST to any URL, optionally signed: X-Kbackup-Signature carries
"sha256=" + HMAC-SHA256 of the exact body bytes, keyed with the first line of secret_file.

`post_json` is shared with the Slack channel: 5xx, 429 and network errors are retried, other
4xx are not (the request itself is wrong).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from urllib.parse import urlsplit

import aiohttp

from kbackup import __version__
from kbackup.alerts.base import Channel, ChannelError, Message
from kbackup.config import WebhookChannelConfig, read_secret_file

SIGNATURE_HEADER = "X-Kbackup-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_json(url: str, body: bytes, headers: dict[str, str], verify_tls: bool,
                    label: str) -> None:
    """POST body; `label` names the endpoint in errors (a Slack URL is a secret). The caller
    bounds the time (Channel.send)."""
    headers = {"Content-Type": "application/json", "User-Agent": f"kbackupd/{__version__}",
               **headers}
    ssl_option: ssl.SSLContext | bool = True if verify_tls else False
    try:
        async with aiohttp.ClientSession() as s, \
                s.post(url, data=body, headers=headers, ssl=ssl_option) as response:
            if response.status < 300:
                return
            text = (await response.text(errors="replace")).strip().replace("\n", " ")[:200]
            retry = response.status >= 500 or response.status == 429
            raise ChannelError(f"{label} answered HTTP {response.status} {response.reason}"
                               + (f": {text}" if text else ""), retry=retry)
    except aiohttp.InvalidURL:
        raise ChannelError(f"{label}: not a valid URL", retry=False) from None
    except aiohttp.ClientError as exc:
        raise ChannelError(f"{label}: {exc.__class__.__name__}: {scrub(str(exc), url)}") from None


def scrub(text: str, url: str) -> str:
    """Keep a URL's path (a Slack token) out of error messages."""
    path = urlsplit(url).path
    text = text.replace(url, "<url>")
    return text.replace(path, "/...") if len(path) > 1 else text


class WebhookChannel(Channel):
    type = "webhook"
    config: WebhookChannelConfig

    async def deliver(self, message: Message) -> None:
        body = json.dumps(message.as_dict(), sort_keys=True).encode()
        headers = {"X-Kbackup-Event": message.kind}
        if self.config.secret_file is not None:
            try:
                headers[SIGNATURE_HEADER] = sign(read_secret_file(self.config.secret_file), body)
            except ValueError as exc:
                raise ChannelError(str(exc), retry=False) from None
        await post_json(self.config.url, body, headers, self.config.verify_tls,
                        f"webhook {self.config.url}")
