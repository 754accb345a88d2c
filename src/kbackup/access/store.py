"""A small JSON file in the state dir, private to the daemon's user (0600), replaced whole.

The token and user lists are a few dozen records changed by hand, so one JSON document per
list, written beside and renamed over (a crash leaves the old or the new file, never half of
one), is all the storage they need."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kbackup.errors import KbackupError


class StoreError(KbackupError):
    """The file cannot be read or written; the message names it."""


def load(path: Path) -> dict[str, Any]:
    """The records of the file by name (empty when the file does not exist yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), dict):
        raise StoreError(f"{path}: not a kbackup list (expected {{\"items\": {{...}}}})")
    items: dict[str, Any] = data["items"]
    return items


def save(path: Path, items: dict[str, Any]) -> None:
    """Write the records: beside, fsynced, 0600, renamed over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"items": items}, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write: {exc.strerror or exc}") from None
