"""Finding the driver of a [[table]] or of a stored component's kind (see registry.py for the
list of kinds). Drivers are imported on first use: they bring psycopg, the pipeline, gpg."""

from __future__ import annotations

import importlib
from functools import cache

from kbackup.repository import Component
from kbackup.sources.base import Driver
from kbackup.sources.registry import TABLES, package


@cache
def drivers() -> dict[str, Driver]:
    """[[table]] name -> its driver."""
    return {t: importlib.import_module(package(t) + ".driver").DRIVER for t in TABLES}


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


CONFIG_KIND = "config"  # the config snapshot, stored by every backup and read by no driver


def unreadable(components: list[Component]) -> Component | None:
    """The first component no driver of this version reads (a kind a newer kbackup wrote)."""
    return next((c for c in components
                 if c.kind != CONFIG_KIND and driver_for_component(c.kind) is None), None)


def unreadable_line(component: Component) -> str:
    """The one line naming such a component and its kind."""
    return (f"component {component.name!r} is of kind {component.kind!r}, which this kbackup"
            " version has no source driver for (written by a newer kbackup?)")
