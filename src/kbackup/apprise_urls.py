"""The Apprise URLs of an `[alerts.NAME] type = "apprise"` channel: read from its urls_file,
checked, and apprise's own log lines turned into one-line reasons without the secrets.

Every Apprise URL carries a credential (a token in its host, path or query), so no URL ever
appears in an error or a log line: a problem names the file, the line number and the scheme.
Apprise says why something failed only in its log (and, at debug level, logs URLs and
headers): its logger is kept from reaching the daemon's log, and `Capture` collects the lines
of one thread. The apprise package is imported by the functions that need it, so the daemon
and kbackupctl load it only when an apprise channel is configured. Outside config/ and
alerts/ because both use it (config validates at load, alerts/apprise.py sends).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

HINT = "one Apprise URL a line, like ntfy://host/topic; blank lines and # comments are skipped"
_LOADER_LINES = ("Unparseable URL", "Unsupported URL", "Could not load")
# "...: Internal Server Error, error=500." (ntfy: its own code, HTTP status * 100 + n)
_HTTP_STATUS = re.compile(r":\s*([^:]*?),?\s*error=(\d{3})(?:\d\d)?\.?\s*$")
_OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\"()\[\]]+)|(timed out)")


def read_urls(path: Path) -> list[tuple[int, str]]:
    """(line number, URL) of each line that is neither blank nor a # comment; ValueError
    naming the file when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text ({HINT})") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#")]


def scheme_of(url: str) -> str:
    """The URL's scheme, lower case ("" when the line is not SCHEME://...): what a message
    may say about a URL."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else ""


def _public_host(host: str) -> bool:
    """A host name with a dot, an IP address or localhost; anything else in that place may be
    a token (tgram://BOTTOKEN/..., ntfy://TOPIC)."""
    return "." in host or host.startswith("[") or host == "localhost"


def secrets_of(url: str) -> list[str]:
    """The parts of a URL that may be a credential, longest first: all but the scheme, a
    public host name and the port."""
    rest = url.partition("://")[2] or url
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    parts = [url, fragment, *userinfo.split(":"), *[unquote(p) for p in path.split("/")]]
    parts += [value for _, value in parse_qsl(query, keep_blank_values=True)]
    host, _, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not port.isdigit():
        host = hostport
    if not _public_host(host):
        parts += [hostport, *hostport.split(":")]
    return sorted({p for p in parts if len(p) >= 3}, key=len, reverse=True)


def scrub(text: str, urls: list[str]) -> str:
    """text without any part of the URLs that may be a secret, on one line."""
    for url in urls:
        for secret in secrets_of(url):
            text = text.replace(secret, "***")
    return " ".join(text.split())[:300]


def quiet() -> None:
    """apprise's records reach only a Capture (at debug level they hold URLs and headers);
    urllib3 logs request paths (a Telegram token) at debug level."""
    log = logging.getLogger("apprise")
    if log.propagate:
        log.propagate = False
        log.addHandler(logging.NullHandler())
        log.setLevel(logging.DEBUG)
        urllib3 = logging.getLogger("urllib3")
        urllib3.setLevel(max(urllib3.level, logging.WARNING))


class Capture(logging.Handler):
    """apprise's log records made by the calling thread while in the `with` block."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append(record)

    def __enter__(self) -> Capture:
        quiet()
        logging.getLogger("apprise").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("apprise").removeHandler(self)

    def reason(self, urls: list[str], default: str) -> str:
        """What went wrong, one line: the last warning (an HTTP status said as "HTTP 500
        Internal Server Error") and the OS error found in the debug lines."""
        lines = [r.getMessage() for r in self.records if r.levelno >= logging.WARNING
                 and not r.getMessage().startswith(_LOADER_LINES)]
        said = lines[-1] if lines else default
        if status := _HTTP_STATUS.search(said):
            said = f"HTTP {status[2]} {status[1].rstrip('.')}".strip()
        elif found := [m for r in self.records for m in _OS_ERROR.finditer(r.getMessage())]:
            said = f"{said.rstrip('.')}: {found[-1][1] or found[-1][2]}"
        return scrub(said, urls)

    def unknown_scheme(self) -> bool:
        return any(r.getMessage().startswith(_LOADER_LINES[:2]) for r in self.records)


def instantiate(url: str) -> tuple[Any, str]:
    """The apprise plugin a URL names, or None and why not (one line, no secret)."""
    import apprise

    with Capture() as capture:
        plugin = apprise.Apprise.instantiate(url)
    if plugin is not None:
        return plugin, ""
    if not scheme_of(url):
        return None, f"not a URL ({HINT})"
    if capture.unknown_scheme() and not any(
            r.levelno >= logging.WARNING and not r.getMessage().startswith(_LOADER_LINES)
            for r in capture.records):
        return None, f"{scheme_of(url)}:// is not a scheme Apprise knows"
    why = capture.reason([url], "its form does not match the service's")
    return None, f"{scheme_of(url)}:// is not a valid Apprise URL: {why}"


def check_urls(path: Path) -> list[str]:
    """What is wrong with a URLs file, one line per problem naming the file and line."""
    try:
        urls = read_urls(path)
    except ValueError as exc:
        return [str(exc)]
    if not urls:
        return [f"{path} holds no Apprise URL ({HINT})"]
    problems = []
    for number, url in urls:
        plugin, why = instantiate(url)
        if plugin is None:
            problems.append(f"{path} line {number}: {why}")
    return problems
