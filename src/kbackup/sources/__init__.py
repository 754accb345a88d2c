"""Sources: what a job backs up. Each kind is one module with the same verbs (see base.py)."""

from __future__ import annotations

from kbackup.config import JobConfig
from kbackup.sources.base import Source, SourceError, SourceStream
from kbackup.sources.files import FileTree
from kbackup.sources.postgres import PostgresDatabase

__all__ = ["Source", "SourceError", "SourceStream", "sources_for"]


def sources_for(job: JobConfig) -> list[Source]:
    """Databases first: they are what the business cannot recreate."""
    sources: list[Source] = [PostgresDatabase(c) for c in job.postgres]
    sources += [FileTree(c) for c in job.files]
    return sources
