"""[hooks] of a job: commands run around its backups and restores (stop the app, start it).

Each hook is a list of commands, each command an argv list: no shell unless the user writes
["sh", "-c", "..."]. The model only checks shapes; kbackup.hooks runs them."""

from __future__ import annotations

import shutil
from typing import Annotated

from pydantic import Field, field_validator

from kbackup.fields import Seconds, Strict

HOOK_NAMES = ("before_backup", "after_backup", "on_failure", "before_restore", "after_restore")

Argv = Annotated[list[str], Field(min_length=1)]


def _check_commands(value: object) -> list[list[str]]:
    """A list of non-empty lists of non-empty strings; one line saying which is not."""
    if not isinstance(value, list):
        raise ValueError('expected a list of commands, each an argv list like'
                         ' [["systemctl", "stop", "app.service"]]')
    for index, command in enumerate(value):
        if (not isinstance(command, list) or not command
                or not all(isinstance(arg, str) for arg in command)):
            raise ValueError(f"command {index}: expected a non-empty list of strings like"
                             f' ["systemctl", "stop", "app.service"], got {command!r}')
        if not command[0].strip():
            raise ValueError(f"command {index}: the program (first item) is empty")
        if "/" in command[0] and not command[0].startswith("/"):
            raise ValueError(f"command {index}: {command[0]!r} is a relative path; give an"
                             " absolute path or a program name found on PATH")
    return value


class HooksConfig(Strict):
    """Commands run around the job's runs; `timeout` bounds each command (then its whole
    process group is killed)."""

    timeout: Seconds = Field(default=300.0, gt=0, le=24 * 3600)
    before_backup: list[Argv] = Field(default_factory=list)
    after_backup: list[Argv] = Field(default_factory=list)
    on_failure: list[Argv] = Field(default_factory=list)
    before_restore: list[Argv] = Field(default_factory=list)
    after_restore: list[Argv] = Field(default_factory=list)

    @field_validator(*HOOK_NAMES, mode="before")
    @classmethod
    def _commands(cls, value: object) -> list[list[str]]:
        return _check_commands(value)

    def commands(self, hook: str) -> list[list[str]]:
        return list(getattr(self, hook))

    def missing_programs(self) -> list[str]:
        """Programs that are not there (or not executable) here: `config check` warns, the
        daemon's PATH and mounts may differ. As "hooks.HOOK.N: ..." lines."""
        found = []
        for hook in HOOK_NAMES:
            for index, argv in enumerate(self.commands(hook)):
                program = argv[0]
                if shutil.which(program) is None:
                    found.append(f"hooks.{hook}.{index}: {program!r} not found"
                                 + ("" if "/" in program else " on PATH")
                                 + " (or not executable)")
        return found
