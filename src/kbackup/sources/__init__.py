"""Sources: what a job backs up. Each kind is one module with the same verbs (see base.py)."""

from __future__ import annotations

from kbackup.config import JobConfig
from kbackup.sources.base import Source, SourceError, SourceStream
from kbackup.sources.files import FileTree
from kbackup.sources.postgres import PostgresDatabase, PostgresGlobals

__all__ = ["Source", "SourceError", "SourceStream", "sources_for"]


def sources_for(job: JobConfig) -> list[Source]:
    """Databases first: they are what the business cannot recreate."""
    sources: list[Source] = []
    for database in job.postgres:
        sources.append(PostgresDatabase(database))
        if database.globals:
            sources.append(PostgresGlobals(database))
    sources += [FileTree(c) for c in job.files]
    return sources
