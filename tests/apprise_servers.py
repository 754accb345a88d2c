"""Stand-ins for two services Apprise reaches, answering as the real ones do: an ntfy server
(POST / with a JSON {topic, title, message}; its JSON error with code = HTTP status * 100 + n)
and a Gotify server (POST /message with the application token in X-Gotify-Key, JSON {title,
message, priority}; 401 for another token). Both record every request (HttpRecorder) and fail
the next `failures` requests with `fail_with`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from alert_servers import HttpRecorder, Recorded

GOTIFY_TOKEN = "AbCdEf1234567.x"  # Gotify's application tokens look like this


class _StandIn(HttpRecorder):
    def _take(self, recorded: Recorded) -> bool:
        """Record the request; True when it is to fail."""
        with self.lock:
            self.requests.append(recorded)
            failing = self.failures > 0
            self.failures -= 1 if failing else 0
        return failing


class NtfyServer(_StandIn):
    def url_for(self, topic: str = "kbackup-alerts") -> str:
        return f"ntfy://127.0.0.1:{self.port}/{topic}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        failing = self._take(Recorded(request.path, dict(request.headers), body,
                                      request.method, request.query_string))
        if failing:
            status = self.fail_with
            return web.json_response({"code": status * 100 + 1, "http": status,
                                      "error": "internal server error"}, status=status)
        try:
            sent = json.loads(body)
        except ValueError:
            return web.json_response({"code": 40024, "http": 400, "error": "invalid request:"
                                      " request body must be message JSON"}, status=400)
        return web.json_response({"id": "k8Yx2zQ", "time": 1764790000, "event": "message",
                                  "topic": sent.get("topic"), "title": sent.get("title"),
                                  "message": sent.get("message")})


class GotifyServer(_StandIn):
    def url_for(self, token: str = GOTIFY_TOKEN, query: str = "") -> str:
        return f"gotify://127.0.0.1:{self.port}/{token}" + (f"/?{query}" if query else "")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        failing = self._take(Recorded(request.path, dict(request.headers), body,
                                      request.method, request.query_string))
        if failing:
            return web.json_response({"error": "Internal Server Error", "errorCode":
                                      self.fail_with}, status=self.fail_with)
        if request.path != "/message" or request.method != "POST":
            return web.json_response({"error": "Not Found", "errorCode": 404}, status=404)
        if request.headers.get("X-Gotify-Key") != GOTIFY_TOKEN:
            return web.json_response({"error": "Unauthorized", "errorCode": 401,
                                      "errorDescription": "you need to provide a valid access"
                                      " token or user credentials to access this api"},
                                     status=401)
        sent = json.loads(body)
        return web.json_response({"id": len(self.requests), "appid": 1, **sent,
                                  "date": "2026-12-03T20:00:00Z"})


@pytest.fixture
def ntfy_server() -> Iterator[NtfyServer]:
    server = NtfyServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gotify_server() -> Iterator[GotifyServer]:
    server = GotifyServer().start()
    try:
        yield server
    finally:
        server.stop()


def urls_file(path: Path, *urls: str) -> Path:
    """A 0600 URLs file with a comment and a blank line around the URLs."""
    path.write_text("# kbackup alerts\n\n" + "\n".join(urls) + "\n")
    path.chmod(0o600)
    return path


def apprise_channel(urls: Path, name: str = "push", extra: str = "") -> str:
    return f"""
[alerts.{name}]
type = "apprise"
urls_file = "{urls}"
retry_delay = "0.05s"
{extra}
"""
