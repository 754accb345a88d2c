"""The source kinds this kbackup knows, in the order a job backs them up.

Adding a kind is one line here plus its package kbackup.sources.<table> with `config.py`
(CONFIG: its SourceConfig model, light: the config package loads it) and `driver.py` (DRIVER:
its verbs, found through kbackup.sources.drivers, so that config never imports psycopg, the
pipeline or gpg).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kbackup.fields import SourceConfig

# Databases first: they are what the business cannot recreate.
TABLES: tuple[str, ...] = (
    "postgres",
    "mysql",
    "sqlite",
    "files",
)


def package(table: str) -> str:
    return f"kbackup.sources.{table}"


@cache
def config_models() -> dict[str, type[SourceConfig]]:
    """[[table]] name -> its config model, in backup order."""
    return {t: importlib.import_module(package(t) + ".config").CONFIG for t in TABLES}
