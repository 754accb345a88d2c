"""The alert channel a config names: email, Slack, webhook or Apprise (each imported when
used)."""

from __future__ import annotations

from kbackup.alerts.base import Channel
from kbackup.config import AlertChannelConfig


def build_channel(name: str, config: AlertChannelConfig) -> Channel:
    if config.type == "email":
        from kbackup.alerts.email import EmailChannel

        return EmailChannel(name, config)
    if config.type == "slack":
        from kbackup.alerts.slack import SlackChannel

        return SlackChannel(name, config)
    if config.type == "apprise":
        from kbackup.alerts.apprise import AppriseChannel

        return AppriseChannel(name, config)
    from kbackup.alerts.webhook import WebhookChannel

    return WebhookChannel(name, config)
