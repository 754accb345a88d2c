"""Alerts by mail over SMTP (STARTTLS, implicit TLS, or plain), with aiosmtplib.

The password comes from password_file, read at each send (so a rotated secret is picked up)
and never logged; SMTP errors are reported with their code and text, e.g. "SMTP 535 5.7.8
Authentication credentials invalid".
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from kbackup.alerts.base import Channel, ChannelError, Message
from kbackup.config import EmailChannelConfig, read_secret_file


def tls_context(config: EmailChannelConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(config.ca_file) if config.ca_file else None)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class EmailChannel(Channel):
    type = "email"
    config: EmailChannelConfig

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.config.sender
        mail["To"] = ", ".join(self.config.to)
        mail["Subject"] = message.subject()
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain=message.host or None)
        mail["X-Kbackup-Key"] = message.key or message.kind
        mail.set_content(message.text())
        if message.html is not None:  # a digest: text or HTML with its images by Content-ID
            mail.add_alternative(message.html, subtype="html")
            html = mail.get_body(preferencelist=("html",))
            if html is not None:
                for cid, png in message.inline.items():
                    html.add_related(png, "image", "png", cid=f"<{cid}>")
        return mail

    async def deliver(self, message: Message) -> None:
        cfg = self.config
        password = None
        if cfg.password_file is not None:
            try:
                password = read_secret_file(cfg.password_file)
            except ValueError as exc:
                raise ChannelError(str(exc), retry=False) from None
        where = f"{cfg.smtp_host}:{cfg.port}"
        try:
            await aiosmtplib.send(
                self.build(message), hostname=cfg.smtp_host, port=cfg.port,
                username=cfg.username, password=password,
                use_tls=cfg.security == "tls", start_tls=cfg.security == "starttls",
                tls_context=tls_context(cfg) if cfg.security != "none" else None,
                timeout=cfg.timeout)
        except aiosmtplib.SMTPResponseException as exc:
            login = f" (login {cfg.username})" if exc.code == 535 and cfg.username else ""
            raise ChannelError(f"{where}: SMTP {exc.code} {exc.message}{login}",
                               retry=400 <= exc.code < 500) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
            raise ChannelError(f"{where}: recipients refused: {refused}", retry=False) from None
        except aiosmtplib.SMTPTimeoutError:
            raise ChannelError(f"{where}: no answer within {cfg.timeout:g}s") from None
        except aiosmtplib.SMTPException as exc:
            raise ChannelError(f"{where}: {exc.__class__.__name__}: {exc}") from None
        except ssl.SSLError as exc:
            raise ChannelError(f"{where}: TLS failed: {exc}", retry=False) from None
        except OSError as exc:
            raise ChannelError(f"{where}: {exc}") from None
