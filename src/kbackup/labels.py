"""User labels of backups (`kbackupctl run JOB --label NAME`): one rule for CLI and API.

Standard library only: the CLI checks a label before it talks to the daemon.
"""

from __future__ import annotations

import re

LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
LABEL_RULE = "1-64 characters of A-Z a-z 0-9 . _ -"


def check_label(value: object) -> str:
    """The label if valid, else ValueError with a one-line message."""
    if not isinstance(value, str) or not LABEL.fullmatch(value):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 70 \
            else repr(value[:64] + "...")
        raise ValueError(f"invalid label {shown}: use {LABEL_RULE}")
    return value
