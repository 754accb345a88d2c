"""`kbackupctl storage check`: prove a target works end to end with a small probe object.

Write, read back (compared), stat, list, delete: the same verbs a backup uses, so a target
that passes can take a backup. A target with object_lock first needs a bucket with Object
Lock enabled. Each step is timed; the first failure is the verdict. On an append-only target
the delete step is skipped (the small probe object stays under `_probe/`).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

from kbackup.errors import check_result
from kbackup.storage.base import Storage, StorageError

PROBE_PREFIX = "_probe/"


async def probe(storage: Storage) -> dict[str, Any]:
    key = f"{PROBE_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    payload = secrets.token_bytes(64 * 1024)
    steps: dict[str, float] = {}
    result = check_result(False, None, target=storage.name, description=storage.describe(),
                          steps_ms=steps)
    started = time.monotonic()

    def lap(name: str) -> None:
        nonlocal started
        now = time.monotonic()
        steps[name] = round((now - started) * 1000, 1)
        started = now

    step = "lock"
    try:
        if storage.lock_mode is not None:  # a bucket without Object Lock: one line
            await storage.check_lock()
            lap(step)
        step = "write"
        await storage.put_bytes(key, payload)
        lap(step)
        step = "read"
        if await storage.get_bytes(key) != payload:
            raise StorageError(f"storage {storage.name}: the probe read back differs")
        lap(step)
        step = "list"
        if key not in {i.key for i in await storage.list(PROBE_PREFIX)}:
            raise StorageError(f"storage {storage.name}: the probe is missing from the listing")
        lap(step)
        result["ok"] = True
        if storage.append_only:  # kbackupd deletes nothing there: the probe stays
            result["note"] = f"append-only target: probe {key} left in place"
            return result
        step = "delete"
        await storage.delete(key)
        lap(step)
    except StorageError as exc:
        result["ok"] = False
        result["reason"] = result["error"] = f"{step}: {exc}"  # "error": the older name
        if storage.append_only:
            return result
        try:
            await storage.delete(key)
        except StorageError:
            pass
    return result
