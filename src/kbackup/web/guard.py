"""What keeps a browser from being turned against kbackupd, on the Unix socket and on TCP.

A browser reaches the socket through `ssh -L 8080:/run/kbackup/kbackupd.sock` and the TCP
listener directly; both answer a page with the rights of whoever is logged in (or tunnelled),
so another web site must not be able to use that browser:

- Host: only names that are this daemon (localhost and the loopback addresses on any port,
  `kbackupd` as kbackupctl sends it, the listen address, the address the connection came in
  on, [web] server_names). A page of evil.example whose DNS name is rebound to 127.0.0.1
  sends `Host: evil.example` and gets 421: it cannot read answers nor post through the tunnel.
- A request that changes something (not GET/HEAD/OPTIONS) with an Origin header must come
  from this very host and scheme; `Sec-Fetch-Site: cross-site` is refused outright. A
  browser sends `Origin: null` for the forms of a page with `Referrer-Policy: no-referrer`:
  that is taken only together with `Sec-Fetch-Site: same-origin` (a header no page can
  forge), so a sandboxed frame or a data: page of another site, also "null", stays out.
- Every answer carries a Content-Security-Policy without inline script, no framing
  (clickjacking), no MIME sniffing, no Referer (ids in URLs stay here), and HSTS on TLS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from kbackup.api.common import error, services_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALWAYS = frozenset({"localhost", "127.0.0.1", "::1", "kbackupd"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
       " connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none';"
       " form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"


def host_name(value: str) -> str:
    """The name of a Host header or an origin's netloc, without port and brackets, lowercase."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def allowed_hosts(request: web.Request) -> set[str]:
    """The names this daemon answers to on this connection."""
    section = services_of(request).admin.web()
    names = set(ALWAYS) | {name.lower() for name in section.server_names}
    if section.address is not None:
        names.add(section.address[0].lower())
    local = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(local, tuple) and local:
        names.add(str(local[0]).lower())  # an address literal: no DNS name to rebind
    return names


def refusal(request: web.Request) -> web.Response | None:
    """421 for a foreign Host, 403 for a cross-site change; None when the request may go on."""
    host = request.headers.get("Host")
    if host is not None and host_name(host) not in allowed_hosts(request):
        return error(421, f"Host {host[:100]!r} is not a name of this kbackupd (add it to"
                          " [web] server_names if it is)")
    if request.method in SAFE_METHODS:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site == "cross-site":
        return error(403, "refused: a cross-site request may not change anything")
    origin = request.headers.get("Origin")
    if origin == "null" and fetch_site == "same-origin":
        return None  # a form of our own page: Referrer-Policy no-referrer makes it "null"
    if origin is not None:
        scheme = "https" if request.secure else "http"
        parts = urlsplit(origin)
        if origin == "null" or parts.scheme != scheme or host is None or \
                parts.netloc.lower() != host.strip().lower():
            return error(403, f"refused: Origin {origin[:100]!r} is not this site"
                              f" ({scheme}://{(host or '')[:100]})")
    return None


@web.middleware
async def safeguard(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, errors, redirects and streams included."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
