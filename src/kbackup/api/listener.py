"""The optional TCP listener ([web] listen): the same aiohttp app as the Unix socket, on one
more site of the same runner, with TLS 1.2+ when a certificate is configured.

A reload that changes the address or the certificate files moves the listener; one that
keeps them loads the certificate files again into the same context, so a renewed
certificate is served from the next connection on without dropping anybody.
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from kbackup.config.web import WebSection, tls_context

log = logging.getLogger("kbackup.api")


class TcpListener:
    def __init__(self, runner: web.AppRunner):
        self.runner = runner
        self.site: web.TCPSite | None = None
        self.section = WebSection()
        self.context: ssl.SSLContext | None = None

    def _same_place(self, section: WebSection) -> bool:
        old = self.section
        return self.site is not None and (old.listen, old.tls_cert_file, old.tls_key_file) == (
            section.listen, section.tls_cert_file, section.tls_key_file)

    async def apply(self, section: WebSection) -> None:
        """Listen as `section` says (nothing without `listen`); OSError if it cannot."""
        if self._same_place(section):
            if self.context is not None:
                assert section.tls_cert_file is not None
                self.context.load_cert_chain(section.tls_cert_file, section.tls_key_file)
            self.section = section
            return
        await self.stop()
        self.section = section
        if section.address is None:
            return
        host, port = section.address
        self.context = tls_context(section) if section.tls else None
        site = web.TCPSite(self.runner, host, port, ssl_context=self.context, backlog=64,
                           reuse_address=True)
        await site.start()
        self.site = site
        log.info("event=web.listening address=%s tls=%s", section.listen,
                 "yes" if section.tls else "no")

    async def stop(self) -> None:
        if self.site is not None:
            site, self.site = self.site, None
            await site.stop()
            log.info("event=web.stopped address=%s", self.section.listen)
