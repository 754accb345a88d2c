"""The verification levels, defined once (stdlib only: the CLI offers them as choices).

checksum: every stored object re-read, size and SHA-256 compared; structure: decoded and its
structure listed; restore-test: restored into a scratch database (see jobs/verify.py).
"""

from __future__ import annotations

from typing import Literal, get_args

VerifyLevel = Literal["checksum", "structure", "restore-test"]
# after_backup: a level, or "none" (no verification after a backup)
AfterBackupLevel = Literal["none", "checksum", "structure", "restore-test"]
LEVELS: tuple[str, ...] = get_args(VerifyLevel)

assert get_args(AfterBackupLevel)[1:] == LEVELS
