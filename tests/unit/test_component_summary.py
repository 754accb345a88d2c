"""`kbackupctl show` prints what each component's driver summarised, whatever the kind: the
API's component view (views.component_view) read back by the CLI's generic formatter."""

from __future__ import annotations

from typing import Any

from kbackup.ctl.reads import summary_lines
from kbackup.views import component_view

BASE: dict[str, Any] = {"file": "x.zst", "size_bytes": 10, "sha256": "00", "raw_bytes": 20,
                        "compression": {"algorithm": "zstd"}, "encryption": {"mode": "none"}}


def test_a_database_component_shows_its_tables_rows_and_size() -> None:
    component = {**BASE, "name": "shop", "kind": "postgres",
                 "database": {"server_version": "15.4", "database_size": 7 * 1024 * 1024,
                              "row_counts": {"public.a": 3, "public.b": 4}}}
    lines = summary_lines(component_view(component))
    assert lines == ["database: server version 15.4, database size 7.0 MiB, tables 2, rows 7"]


def test_a_files_component_shows_its_count_and_bytes() -> None:
    component = {**BASE, "name": "pdfs", "kind": "files",
                 "files": {"file_count": 8, "total_bytes": 2048, "hash": "sha256"}}
    assert summary_lines(component_view(component)) == ["files: file count 8, total bytes 2.0 KiB"]


def test_kinds_without_a_summary_show_nothing_more() -> None:
    for kind in ("globals", "config", "sqlite"):
        assert summary_lines(component_view({**BASE, "name": "n", "kind": kind})) == []
