"""Alerts to a Slack incoming webhook: a coloured attachment with job, reason and next step.

The webhook URL is the credential, so it lives in webhook_url_file and never appears in an
error message or a log line ("Slack webhook answered HTTP 500", not the URL).
"""

from __future__ import annotations

import json

from kbackup.alerts.base import Channel, ChannelError, Message
from kbackup.alerts.webhook import post_json
from kbackup.config import SlackChannelConfig, read_secret_file
from kbackup.times import parse_iso

COLOURS = {"critical": "#d0021b", "warning": "#f5a623", "ok": "#2eb886", "info": "#439fe0"}


def colour(message: Message) -> str:
    if message.kind in ("resolved", "recovery", "success"):
        return COLOURS["ok"]
    if message.kind == "test":
        return COLOURS["info"]
    return COLOURS.get(message.severity, COLOURS["info"])


def payload(message: Message) -> dict[str, object]:
    if message.kind == "digest":  # the report's aligned text, as a code block
        return {"text": f"*{message.subject()}*\n```{message.body}```"}
    steps = message.steps()
    text = message.reason
    if message.kind == "resolved" and message.previous:
        text += f"\nWas: {message.previous}"
    if message.details and message.kind != "resolved":
        text += "\nLast errors:\n" + "\n".join(f"• {d}" for d in message.details)
    if steps:
        text += "\nNext step: " + " ; ".join(f"`{s}`" for s in steps)
    fields = [{"title": "Job", "value": message.who, "short": True},
              {"title": "Severity", "value": message.label, "short": True}]
    if message.first_seen:
        fields.append({"title": "Since", "value": message.first_seen, "short": True})
    if message.key:
        fields.append({"title": "Alert", "value": message.key, "short": True})
    return {
        "text": message.subject(),
        "attachments": [{
            "color": colour(message),
            "fallback": message.subject(),
            "title": f"{message.label}: {message.who}",
            "text": text,
            "fields": fields,
            "footer": f"kbackupd on {message.host}",
            # When the event happened, not when this attempt is sent: a retry resends the same
            # body (and Slack shows the time of the event).
            "ts": int(sent.timestamp()) if (sent := parse_iso(message.sent_at)) else None,
        }],
    }


class SlackChannel(Channel):
    type = "slack"
    config: SlackChannelConfig

    async def deliver(self, message: Message) -> None:
        try:
            url = read_secret_file(self.config.webhook_url_file).strip()
        except ValueError as exc:
            raise ChannelError(str(exc), retry=False) from None
        if not url.startswith(("https://", "http://")):
            raise ChannelError(f"{self.config.webhook_url_file} does not hold a webhook URL",
                               retry=False)
        body = json.dumps(payload(message)).encode()
        await post_json(url, body, {}, True, "Slack webhook")
