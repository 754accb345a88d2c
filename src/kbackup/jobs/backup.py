"""One backup run: every source of a job streamed to every target, manifest last.

Commit rule: each component is written under a temporary name and committed (renamed) only when
its stream ended cleanly; the manifest is written after all components on all targets. Any
failure aborts open writers and deletes what this run committed, so nothing that looks complete
is left behind (and the next daemon start removes what a kill left).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from kbackup import __version__
from kbackup.catalog import Catalog, iso, utcnow
from kbackup.config import Config, JobConfig
from kbackup.pipeline import StreamResult, run_stream, stages_for
from kbackup.progress import Progress
from kbackup.repository import (
    Component,
    Manifest,
    StoredObject,
    backup_prefix,
    delete_backup,
    write_manifest,
)
from kbackup.sources import Source, sources_for
from kbackup.storage import ObjectWriter, Storage

log = logging.getLogger("kbackup.backup")


class BackupFailed(Exception):
    pass


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class BackupRun:
    def __init__(
        self,
        config: Config,
        job: JobConfig,
        storages: dict[str, Storage],
        catalog: Catalog,
        backup_id: str,
        trigger: str,
        progress: Progress,
    ):
        self.config = config
        self.job = job
        self.targets = [storages[name] for name in job.targets]
        self.catalog = catalog
        self.backup_id = backup_id
        self.trigger = trigger
        self.progress = progress
        self.prefix = backup_prefix(job.name, backup_id)
        self.started_at = iso(utcnow()) or ""
        self.components: list[Component] = []

    def _record(
        self, status: str, manifest: Manifest | None = None, error: str | None = None
    ) -> None:
        self.catalog.upsert_backup(
            self.backup_id,
            self.job.name,
            status,
            self.trigger,
            self.started_at,
            None if status == "running" else iso(utcnow()),
            manifest.size_bytes if manifest else 0,
            {t.name: status for t in self.targets},
            manifest.model_dump(mode="json") if manifest else None,
            error,
        )

    async def _stream_to_targets(
        self, file: str, chunks: AsyncIterator[bytes], count_progress: bool
    ) -> tuple[StreamResult, list[ObjectWriter]]:
        writers: list[ObjectWriter] = []
        try:
            for target in self.targets:
                writers.append(await target.open_writer(self.prefix + file))
            base = self.progress.bytes_done

            def advance(raw: int) -> None:
                if count_progress:
                    self.progress.bytes_done = base + raw

            stages = stages_for(self.job.compression.level, self.job.compression.threads)
            result = await run_stream(chunks, stages, writers, advance)
            return result, writers
        except BaseException:
            for writer in writers:
                await writer.abort()
            raise

    async def _commit(self, writers: list[ObjectWriter]) -> None:
        for writer in writers:
            await writer.commit()

    def _compression(self) -> dict[str, Any]:
        return {"algorithm": "zstd", "level": self.job.compression.level}

    async def _backup_source(self, source: Source) -> None:
        self.progress.phase = f"backing up {source.kind} {source.name}"
        self.progress.component = source.name
        file = f"{source.file_stem}{source.extension}.zst"
        async with source.open() as stream:
            result, writers = await self._stream_to_targets(file, stream.chunks(), True)
            try:
                metadata = await stream.finish()
                await self._commit(writers)
            finally:
                for writer in writers:
                    await writer.abort()
            index_record = None
            index = stream.index()
            if index is not None:
                index_file = f"{source.file_stem}.index.json.zst"
                index_result, index_writers = await self._stream_to_targets(
                    index_file, _once(index), False
                )
                try:
                    await self._commit(index_writers)
                finally:
                    for writer in index_writers:
                        await writer.abort()
                index_record = StoredObject(
                    file=index_file,
                    size_bytes=index_result.stored_bytes,
                    sha256=index_result.sha256,
                )
        component = Component(
            name=source.component_name,
            kind=source.kind,
            file=file,  # type: ignore[arg-type]
            size_bytes=result.stored_bytes,
            sha256=result.sha256,
            raw_bytes=result.raw_bytes,
            compression=self._compression(),
            database=metadata if source.kind == "postgres" else None,
            files=metadata if source.kind == "files" else None,
            index=index_record,
        )
        self.components.append(component)
        self.progress.components_done += 1
        log.info(
            "event=component.stored job=%s backup=%s component=%s raw_bytes=%d "
            "stored_bytes=%d sha256=%s",
            self.job.name,
            self.backup_id,
            source.name,
            result.raw_bytes,
            result.stored_bytes,
            result.sha256,
        )

    async def _backup_config(self) -> None:
        snapshot = json.dumps(self.config.redacted_snapshot(self.job), indent=2).encode()
        file = "config.json.zst"
        result, writers = await self._stream_to_targets(file, _once(snapshot), False)
        try:
            await self._commit(writers)
        finally:
            for writer in writers:
                await writer.abort()
        self.components.append(
            Component(
                name="config",
                kind="config",
                file=file,
                size_bytes=result.stored_bytes,
                sha256=result.sha256,
                raw_bytes=result.raw_bytes,
                compression=self._compression(),
            )
        )

    async def run(self) -> Manifest:
        self._record("running")
        sources = sources_for(self.job)
        self.progress.components_total = len(sources)
        self.progress.phase = "estimating size"
        try:
            sizes = await asyncio.gather(*(s.estimate_size() for s in sources))
            self.progress.bytes_total = sum(s or 0 for s in sizes) or None
            for source in sources:
                await self._backup_source(source)
            await self._backup_config()
            manifest = Manifest(
                id=self.backup_id,
                job=self.job.name,
                trigger=self.trigger,
                host=socket.gethostname(),
                kbackup_version=__version__,
                started_at=self.started_at,
                finished_at=iso(utcnow()) or "",
                components=self.components,
            )
            self.progress.phase = "writing manifest"
            for target in self.targets:
                await write_manifest(target, manifest)
        except BaseException as exc:
            await self._discard()
            reason = str(exc) or exc.__class__.__name__
            if isinstance(exc, asyncio.CancelledError):
                reason = "cancelled"
            self._record("failed", error=reason)
            raise
        self._record("complete", manifest)
        self.progress.phase = "complete"
        return manifest

    async def _discard(self) -> None:
        """Remove everything this run wrote, on every target (manifest first)."""
        for target in self.targets:
            with contextlib.suppress(Exception):
                await asyncio.shield(delete_backup(target, self.job.name, self.backup_id))
