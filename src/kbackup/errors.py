"""kbackup's one error model (stdlib only: the CLI may import it).

Every error kbackup reports is a `KbackupError` whose str() is the one line a user sees
(ConfigError: one line per problem). Below the root there is one class per area, and the
classes a request can meet have their HTTP status in one table (api/server.py, STATUS):

    KbackupError
    |-- Invalid          a request value is wrong                                 400
    |-- NotFound         no such job, backup, run, target, channel, silence       404
    |-- Unauthenticated  a TCP caller without valid credentials (api/auth.py)    401
    |-- Throttled        too many failed logins or tokens; `retry_after`          429
    |-- Refused          refused before anything changed (busy, paused, guard)    409
    |-- ConfigError      config files (config/)                                   422
    |-- ToolError        an external tool failed (process.py); `stderr`
    |   '-- SourceError  a source cannot be read (sources/)
    |-- StorageError     a storage operation failed (storage/), OSError too       502
    |   '-- TransientError  another attempt may succeed (storage/remote.py)     503
    |-- CryptoError      keys and gpg (crypto.py: KeyProblem, GpgFailed)
    |-- RestoreError     restores (jobs/restore*.py)
    |   |-- RestoreRefused  refused before anything changed: also a Refused       409
    |   '-- RestoreFailed   failed while running (what was done is in the message)
    |-- VerifyError      verifications (jobs/verify.py: VerificationFailed, CannotVerify)
    '-- CatalogError     the catalog cannot be used (catalog.py)

Existing names stay where callers import them (storage.StorageError, config.ConfigError,
crypto.KeyProblem, runner.RunnerBusy, ...): they are these classes or subclasses of them.
Any other exception reaching the API is a 500 with a short error id.

Checks that pass or fail (a verification, a storage probe, an alert channel test, a key check)
answer in one shape: `check_result(ok, reason, **details)` = {"ok": bool, "reason": str|None,
...}; `reason` is None when ok.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class KbackupError(Exception):
    """Root of kbackup's errors; str() is the message users see (one line)."""


class Invalid(KbackupError):
    """A request value is wrong; the message names the field."""


class NotFound(KbackupError):
    """The thing a request names does not exist; the message says how to find the right one."""


class Unauthenticated(KbackupError):
    """A TCP caller sent no credentials, or a token or session that is not (or no longer)
    valid; the message says which and how to get one."""


class Throttled(KbackupError):
    """Too many failures from this address or for this name; try again after retry_after s."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class Refused(KbackupError):
    """The request conflicts with the current state and nothing was changed."""


class ConfigError(KbackupError):
    """A configuration problem; str() is one line per problem, each naming file and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class ToolError(KbackupError):
    """An external tool failed: str() is the one-line reason (process.error_reason), `stderr`
    what it printed (for the run's log line, see runner.py)."""

    def __init__(self, message: str, stderr: Sequence[str] = ()):
        super().__init__(message)
        self.stderr = list(stderr)


class SourceError(ToolError):
    """The source cannot be read; the message is one line naming the source and the reason
    (and `stderr`, when a tool failed, what it printed)."""


class StorageError(KbackupError):
    """A storage operation failed; the message names the target (and the object)."""


class CryptoError(KbackupError):
    """A key, a secret or gpg failed; the message names the key or file."""


class RestoreError(KbackupError):
    """A restore went wrong (see RestoreRefused and RestoreFailed)."""


class RestoreRefused(RestoreError, Refused):
    """The restore cannot be planned or started: wrong backup, unknown table, unsafe target,
    failed safety backup... Nothing was changed."""


class RestoreFailed(RestoreError):
    """The restore failed while running; the message says what was already restored and
    where the pre-restore state is."""


class VerifyError(KbackupError):
    """A verification found the backup is not what its manifest promises."""


class CatalogError(KbackupError):
    """The catalog cannot be used by this version (one line, for the log and the terminal)."""


def check_result(ok: bool, reason: str | None = None, **details: Any) -> dict[str, Any]:
    """The one shape of a check that passes or fails: {"ok", "reason", **details}."""
    return {"ok": ok, "reason": None if ok else reason, **details}
