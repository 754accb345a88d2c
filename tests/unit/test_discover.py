"""Which databases a multi-database entry takes, and their object names (no server needed)."""

from __future__ import annotations

import re

import pytest

from kbackup.sources.postgres.config import PostgresSource, configured, source_of
from kbackup.sources.postgres.discover import chosen
from kbackup.sources.postgres.dump import PostgresDatabase
from kbackup.sources.tools import safe_file_part

SERVER = ["app_a", "app_b", "postgres", "test_1", "test_2"]


def entry(**fields: object) -> PostgresSource:
    return PostgresSource.model_validate({"name": "main", "dsn": "host=/tmp dbname=postgres",
                                          **fields})


@pytest.mark.parametrize(("databases", "exclude", "expected"), [
    ("*", [], SERVER),
    ("*", ["test_*", "postgres"], ["app_a", "app_b"]),
    ("*", ["app_[ab]"], ["postgres", "test_1", "test_2"]),
    (["app_b", "gone"], [], ["app_b", "gone"]),  # a listed one the server lacks fails by name
    (["app_b", "test_1"], ["test_?"], ["app_b"]),
])
def test_chosen(databases: object, exclude: list[str], expected: list[str]) -> None:
    assert chosen(entry(databases=databases, exclude=exclude), SERVER) == expected


def test_object_names_are_safe_and_distinct() -> None:
    names = ["crm", "my app", "my_app", "my/app", "Ünïcode", "a.b", "a_b"]
    parts = [safe_file_part(n) for n in names]
    assert len(set(parts)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts), parts
    assert parts[0] == "crm" and parts[2] == "my_app"


def test_component_names() -> None:
    config = entry(databases="*")
    one = PostgresDatabase(config, "crm")
    assert (one.component_name, one.file_stem, one.may_fail) == ("main:crm", "mdb-main.crm", True)
    assert "dbname=crm" in one.dsn
    single = PostgresDatabase(entry())
    assert (single.component_name, single.file_stem, single.may_fail) == ("main", "db-main",
                                                                          False)
    assert source_of("main:crm:x") == "main" and source_of("main.globals") == "main.globals"

    class Job:
        def source(self, name: str) -> PostgresSource | None:
            return config if name == "main" else None

    assert configured(Job(), "main:crm") is config
    assert config.describe() == {"name": "main", "kind": "postgres", "databases": "*",
                                 "exclude": []}
