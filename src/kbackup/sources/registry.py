"""The source kinds this kbackup knows, in the order a job backs them up.

Adding a kind is one line here plus its package kbackup.sources.<table> with `config.py`
(CONFIG: its SourceConfig model, light: the config package loads it) and `driver.py` (DRIVER:
its verbs, loaded on first use so that config never imports psycopg, the pipeline or gpg).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kbackup.config.fields import SourceConfig
    from kbackup.sources.base import Driver

# Databases first: they are what the business cannot recreate.
TABLES: tuple[str, ...] = (
    "postgres",
    "files",
)


def _package(table: str) -> str:
    return f"kbackup.sources.{table}"


@cache
def config_models() -> dict[str, type[SourceConfig]]:
    """[[table]] name -> its config model, in backup order."""
    return {t: importlib.import_module(_package(t) + ".config").CONFIG for t in TABLES}


@cache
def drivers() -> dict[str, Driver]:
    """[[table]] name -> its driver."""
    return {t: importlib.import_module(_package(t) + ".driver").DRIVER for t in TABLES}


def driver(table: str) -> Driver:
    return drivers()[table]


@cache
def _by_component_kind() -> dict[str, Driver]:
    return {kind: d for d in drivers().values() for kind in d.component_kinds}


def driver_for_component(kind: str) -> Driver | None:
    """The driver that reads back a manifest component of this kind; None for the config
    snapshot (and kinds this version does not know)."""
    return _by_component_kind().get(kind)


def component_driver(kind: str) -> Driver:
    """Like driver_for_component, for a component that has one (not the config snapshot)."""
    found = driver_for_component(kind)
    if found is None:
        raise ValueError(f"no source driver stores components of kind {kind!r}")
    return found
