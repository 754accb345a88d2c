"""`[web]` in kbackupd.toml: the optional TCP listener of the API and the dashboard.

Without `listen` the daemon serves only its Unix socket. Off loopback the listener must speak
TLS (a password or a bearer token in clear text on a LAN is not acceptable), so `listen` on a
non-loopback address without `tls_cert_file` and `tls_key_file` is a config error.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from kbackup.fields import Seconds, Strict

# A host name the browser may put in its Host header (server_names).
HostName = Annotated[str, StringConstraints(min_length=1, max_length=253,
                                            pattern=r"^[A-Za-z0-9.:_-]+$")]


def split_listen(value: str) -> tuple[str, int]:
    """("0.0.0.0", 8443) from "0.0.0.0:8443", ("::1", 8443) from "[::1]:8443"."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT like \"127.0.0.1:8443\" or \"[::1]:8443\","
                         f" got {value!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebSection(Strict):
    listen: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    server_names: list[HostName] = Field(default_factory=list)
    session_lifetime: Seconds = 8 * 3600.0

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> WebSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.listen is None:
            return self
        host, _ = split_listen(self.listen)
        if not self.tls and not is_loopback(host):
            raise ValueError(f"listen = {self.listen!r} is not a loopback address: TLS is"
                             " required there (set tls_cert_file and tls_key_file)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def address(self) -> tuple[str, int] | None:
        return None if self.listen is None else split_listen(self.listen)

    def problems(self, main_file: Path) -> list[str]:
        """One line per certificate or key file that is missing or does not load."""
        if self.listen is None or not self.tls:
            return []
        assert self.tls_cert_file is not None and self.tls_key_file is not None
        for field, path in (("tls_cert_file", self.tls_cert_file),
                            ("tls_key_file", self.tls_key_file)):
            if not path.is_file():
                return [f"{main_file}: web.{field}: {path} does not exist or is not a file"]
        try:
            tls_context(self)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            return [f"{main_file}: web.tls_cert_file: cannot load {self.tls_cert_file} with"
                    f" {self.tls_key_file}: {reason}"]
        return []


def tls_context(section: WebSection) -> ssl.SSLContext:
    """A server context, TLS 1.2 or newer, with the configured certificate chain and key."""
    assert section.tls_cert_file is not None and section.tls_key_file is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(section.tls_cert_file, section.tls_key_file)
    return context
