"""One backup run: every source of a job streamed to every target, manifest last.

Commit rule: each component is written under a temporary name and committed (renamed) only when
its stream ended cleanly; the manifest is written after all components on all targets. Any
failure aborts open writers and deletes what this run committed, so nothing that looks complete
is left behind (and the next daemon start removes what a kill left).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kbackup import __version__
from kbackup.catalog import Catalog, iso, utcnow
from kbackup.config import Config, JobConfig
from kbackup.crypto import check_job_keys, encrypt_stage, encryption_meta
from kbackup.errors import KbackupError
from kbackup.hooks import Hooks
from kbackup.pipeline import (
    ChunkSource,
    Stage,
    StreamResult,
    ZstdStage,
    bytes_source,
    run_stream,
)
from kbackup.progress import Progress
from kbackup.repository import (
    Component,
    Manifest,
    StoredObject,
    backup_prefix,
    delete_backup,
    lock_record,
    write_manifest,
)
from kbackup.signing import signer
from kbackup.sources.base import Source, SourceError
from kbackup.sources.drivers import driver
from kbackup.storage import ObjectWriter, Storage, StorageError

log = logging.getLogger("kbackup.backup")

# Seconds the databases' lane has to report its own failure when the lane beside it (globals,
# config) failed first: a dump notices a lost server within milliseconds of reading again.
MAIN_LANE_GRACE = 5.0


class BackupFailed(KbackupError):
    pass


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
        tag: str | None = None,
        label: str | None = None,
    ):
        self.config = config
        self.job = job
        self.targets = [storages[name] for name in job.targets]
        self.catalog = catalog
        self.backup_id = backup_id
        self.trigger = trigger
        self.tag = tag  # the schedule tag that fired it (None: manual, pre-restore)
        self.label = label  # the user's label (kbackupctl run --label)
        self.progress = progress
        self.prefix = backup_prefix(job.name, backup_id)
        started = utcnow()
        self.started_at = iso(started) or ""
        # Object Lock: every object of this backup on such a target is locked until the same
        # date (the start + the target's lock), which the manifest records.
        self.locks = {t.name: until for t in self.targets
                      if (until := t.retain_until(started)) is not None}
        self.components: list[Component] = []
        self.failed: dict[str, str] = {}  # target name -> why it has no copy of this backup
        # Component -> why it is not in this backup (a database of several that failed).
        self.missing: dict[str, str] = {}
        self.notes: list[str] = []  # WARNINGs kept in the manifest (a database gone)
        self._first_open = asyncio.Event()
        # [hooks] around the app; a restore's safety backup runs none (the restore's own
        # before_restore/after_restore hooks surround it).
        self.hooks = Hooks(job.hooks, job.name, backup_id, catalog,
                           enabled=trigger != "pre-restore", KBACKUP_BACKUP_ID=backup_id,
                           KBACKUP_TRIGGER=trigger)
        self.hook_error: str | None = None  # an after_backup command failed (run reports it)

    def _record(self, status: str, manifest: Manifest | None = None,
                error: str | None = None) -> None:
        held = "complete" if status == "partial" else status
        targets = {t.name: (f"failed: {self.failed[t.name]}" if t.name in self.failed
                            else held) for t in self.targets}
        self.catalog.upsert_backup(
            self.backup_id, self.job.name, status, self.trigger, self.started_at,
            None if status == "running" else iso(utcnow()),
            manifest.size_bytes if manifest else 0, targets,
            manifest.model_dump(mode="json") if manifest else None, error,
            tag=self.tag, label=self.label,
        )

    def _healthy(self) -> list[Storage]:
        healthy = [t for t in self.targets if t.name not in self.failed]
        if not healthy:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.failed.items())
            raise BackupFailed(f"no storage target could take the backup ({reasons})")
        return healthy

    def _target_failed(self, target: Storage, exc: BaseException) -> None:
        """One target failing does not stop the others: the backup becomes partial."""
        reason = str(exc) or exc.__class__.__name__
        self.failed.setdefault(target.name, reason)
        log.error("event=target.failed job=%s backup=%s target=%s error=%r", self.job.name,
                  self.backup_id, target.name, reason)

    def _stages(self) -> list[Stage]:
        stages: list[Stage] = [ZstdStage(self.job.compression.level,
                                         self.job.compression.threads)]
        encrypt = encrypt_stage(self.config, self.job.encryption)
        if encrypt is not None:
            stages.append(encrypt)
        return stages

    def _name(self, stem: str) -> str:
        return stem + ".zst" + (".gpg" if self.job.encryption.mode != "none" else "")

    async def _store(self, file: str, chunks: ChunkSource, count_progress: bool,
                     before_commit: Callable[[], Awaitable[Any]] | None = None
                     ) -> tuple[StreamResult, Any]:
        """Stream into every healthy target under a temporary name (one pass over the source,
        teed); commit only if the source ended well. A target that fails is dropped from this
        backup and the others go on."""
        writers: list[_TargetWriter] = []
        try:
            for target in self._healthy():
                try:
                    inner = await target.open_writer(self.prefix + file,
                                                     self.locks.get(target.name))
                    writers.append(_TargetWriter(self, target, inner))
                except StorageError as exc:
                    self._target_failed(target, exc)
            self._healthy()
            base = self.progress.bytes_done

            def advance(raw: int) -> None:
                if count_progress:
                    self.progress.bytes_done = base + raw

            result = await run_stream(chunks, self._stages(), writers, advance)
            extra = await before_commit() if before_commit else None
            for writer in writers:
                await writer.commit()
            self._healthy()
            return result, extra
        finally:
            for writer in writers:
                await writer.abort()  # a no-op for committed objects

    def _component(self, name: str, kind: str, file: str, result: StreamResult,
                   **extra: Any) -> Component:
        return Component(
            name=name, kind=kind, file=file,
            size_bytes=result.stored_bytes, sha256=result.sha256, raw_bytes=result.raw_bytes,
            compression={"algorithm": "zstd", "level": self.job.compression.level},
            encryption=encryption_meta(self.job.encryption), **extra,
        )

    async def _backup_or_skip(self, source: Source) -> None:
        """A source that may fail (one of a server's databases) fails alone: it is named in
        the manifest's missing_components and the others are still stored."""
        try:
            await self._backup_source(source)
        except SourceError as exc:
            if not source.may_fail:
                raise
            self.missing[source.component_name] = str(exc)
            log.error("event=component.failed job=%s backup=%s component=%s error=%r",
                      self.job.name, self.backup_id, source.component_name, str(exc))

    async def _backup_source(self, source: Source) -> None:
        if not source.small:  # small ones run alongside: the phase shows the big one
            self.progress.phase = f"backing up {source.kind} {source.name}"
            self.progress.component = source.name
        file = self._name(f"{source.file_stem}{source.extension}")
        async with source.open() as stream:
            self._first_open.set()
            result, metadata = await self._store(file, stream.chunks, not source.small,
                                                 stream.finish)
            index_record = None
            index = stream.index()
            if index is not None:
                index_file = self._name(f"{source.file_stem}.index.json")
                index_result, _ = await self._store(index_file, bytes_source(index), False)
                index_record = StoredObject(file=index_file, size_bytes=index_result.stored_bytes,
                                            sha256=index_result.sha256)
        kept = {source.metadata_field: metadata.model_dump(mode="json")
                } if source.metadata_field else {}
        self.components.append(self._component(source.component_name, source.kind, file,
                                               result, index=index_record, **kept))
        self.progress.components_done += 1
        log.info("event=component.stored job=%s backup=%s component=%s raw_bytes=%d"
                 " stored_bytes=%d sha256=%s", self.job.name, self.backup_id,
                 source.component_name, result.raw_bytes, result.stored_bytes, result.sha256)

    async def _backup_config(self) -> None:
        snapshot = json.dumps(self.config.redacted_snapshot(self.job), indent=2).encode()
        file = self._name("config.json")
        result, _ = await self._store(file, bytes_source(snapshot), False)
        self.components.append(self._component("config", "config", file, result))

    async def _estimate(self, big: list[Source]) -> int | None:
        """The raw bytes the big sources stream, for the progress percentage: what the
        job's last complete backup held for a component (databases and file trees change
        slowly), else the source's own guess (table sizes on disk, file sizes)."""
        previous = self.catalog.last_complete_backup(self.job.name) or {}
        held = {c["name"]: c.get("raw_bytes")
                for c in (previous.get("manifest") or {}).get("components", [])}
        guesses = await asyncio.gather(*(s.estimate_size() for s in big
                                         if not held.get(s.component_name)))
        total = sum(held.get(s.component_name) or 0 for s in big) + sum(g or 0 for g in guesses)
        basis = "last-backup" if not guesses else ("sources" if len(guesses) == len(big)
                                                   else "last-backup+sources")
        log.info("event=backup.estimate job=%s backup=%s bytes=%d basis=%s", self.job.name,
                 self.backup_id, total, basis)
        return total or None

    def _compare(self, sources: list[Source]) -> None:
        """Components new since the job's last complete backup go to the log; ones it held
        that this run has not found are WARNINGs in the manifest (a database dropped)."""
        previous = self.catalog.last_complete_backup(self.job.name)
        if previous is None or not previous.get("manifest"):
            return
        held = [c["name"] for c in previous["manifest"].get("components", [])
                if c.get("kind") != "config"]
        now = [s.component_name for s in sources]
        for name in now:
            if name not in held:
                log.info("event=component.new job=%s backup=%s component=%s", self.job.name,
                         self.backup_id, name)
        for name in held:
            if name not in now:
                note = (f"WARNING: component {name} of backup {previous['id']} is gone:"
                        " not found at this run (database dropped, excluded or source removed)")
                self.notes.append(note)
                log.warning("event=component.gone job=%s backup=%s component=%s previous=%s",
                            self.job.name, self.backup_id, name, previous["id"])

    def partial_reason(self) -> str | None:
        """Why this backup is partial (a target failed, a component missing); None: whole."""
        problems = [f"{name} not backed up: {why}" for name, why in self.missing.items()]
        if self.failed:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.failed.items())
            problems.append(f"not on every target ({reasons})")
        return "; ".join(problems) or None

    def _manifest(self, sources: list[Source]) -> Manifest:
        """The manifest of what was stored, in the job's order; it never claims a component
        it does not hold: those that failed are named in missing_components."""
        order = [s.component_name for s in sources] + ["config"]
        self.components.sort(key=lambda c: order.index(c.name))
        extra: dict[str, Any] = {}
        if self.missing:
            extra["missing_components"] = [{"name": n, "reason": why}
                                           for n, why in self.missing.items()]
        if self.notes:
            extra["notes"] = self.notes
        if self.locks:
            extra["object_lock"] = {t.name: lock_record(t, self.locks[t.name])
                                    for t in self.targets
                                    if t.name in self.locks and t.name not in self.failed}
        return Manifest(id=self.backup_id, job=self.job.name, trigger=self.trigger,
                        tag=self.tag, label=self.label, host=socket.gethostname(),
                        kbackup_version=__version__, started_at=self.started_at,
                        finished_at=iso(utcnow()) or "", components=self.components, **extra)

    async def _failed(self, exc: BaseException) -> None:
        """Record the failure after the on_failure hook ran; its own failures are added to
        the run's error (raised as BackupFailed, the first cause kept)."""
        reason = "cancelled" if isinstance(exc, asyncio.CancelledError) else (
            str(exc) or exc.__class__.__name__)
        problems = await self.hooks.run("on_failure", "failed", reason,
                                        [s.name for s in self.job.sources])
        error = "; ".join([reason, *problems])
        self._record("failed", error=error)
        if problems and not isinstance(exc, asyncio.CancelledError):
            raise BackupFailed(error) from exc

    async def run(self) -> Manifest:
        self._record("running")
        try:
            await self.hooks.before("before_backup", [s.name for s in self.job.sources])
            sources = await sources_for(self.job)
        except BaseException as exc:
            await self._failed(exc)
            raise
        self._compare(sources)
        for source in sources:  # a source's temp copy (sqlite) goes where the daemon's go
            source.scratch_dir = self.config.daemon.staging_dir or self.config.daemon.state_dir
        self.progress.components_total = len(sources)
        self.progress.phase = "estimating size"
        try:
            await asyncio.to_thread(check_job_keys, self.config, self.job)  # before any work
            signer(self.config.daemon.state_dir)  # and the signing key
            big = [s for s in sources if not s.small]
            small = [s for s in sources if s.small]
            self.progress.bytes_total = await self._estimate(big)
            # The small components (globals, config snapshot) are stored while the big ones
            # stream, one after the other, instead of after them. After a 1.2 GB dump they
            # took about 0.05 s, 0.2 s encrypted (a gpg start each), at the end of every run.
            # They start once the first big source is open, so that a database that cannot
            # be reached is reported by its dump, not by whichever of the two fails first.
            if not big:
                self._first_open.set()
            await _together(
                _in_turn([*(functools.partial(self._backup_or_skip, s) for s in big),
                          _set_event(self._first_open)]),
                _in_turn([self._first_open.wait,
                          *(functools.partial(self._backup_source, s) for s in small),
                          self._backup_config]))
            manifest = self._manifest(sources)
            self.progress.phase = "writing manifest"
            # Signed (signing.py); the signature is written before the manifest, which stays
            # the last object.
            signature = signer(self.config.daemon.state_dir).sign_manifest(manifest)
            for target in self._healthy():
                try:
                    await write_manifest(target, manifest, signature,
                                         self.locks.get(target.name))
                except StorageError as exc:
                    self._target_failed(target, exc)
            self._healthy()
            self.catalog.set_backup_trust(self.backup_id, "trusted", None)
        except BaseException as exc:
            await self._discard(self.targets)
            await self._failed(exc)
            raise
        partial = self.partial_reason()
        if partial:
            # Targets without a complete copy must not keep half of one.
            await self._discard([t for t in self.targets if t.name in self.failed])
            self._record("partial", manifest, error=partial)
            self.progress.phase = "partial"
        else:
            self._record("complete", manifest)
            self.progress.phase = "complete"
        problems = await self.hooks.run("after_backup", "partial" if partial else "complete",
                                        partial, [c.name for c in manifest.components])
        self.hook_error = "; ".join(problems) or None
        return manifest

    async def _discard(self, targets: list[Storage]) -> None:
        """Remove everything this run wrote on these targets (manifest first)."""
        for target in targets:
            with contextlib.suppress(Exception):
                await asyncio.shield(delete_backup(target, self.job.name, self.backup_id))


async def sources_for(job: JobConfig) -> list[Source]:
    """Every backup stream of the job for this run (databases found on the server now), in
    the job's order of sources. Two streams stored under one component or file name refuse
    the run before anything is written."""
    found: list[Source] = []
    for config in job.sources:
        found += await driver(config.kind).expand(config)
    for what, key in (("component", lambda s: s.component_name),
                      ("object", lambda s: s.file_stem + s.extension)):
        names = [key(s) for s in found] + (["config"] if what == "component" else [])
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise BackupFailed(f"job {job.name}: two sources would be stored as {what}"
                               f" {clash[0]!r}; rename one of them")
    return found


def _set_event(event: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """A step that sets the event: the small sources start even if every big one failed."""
    async def step() -> None:
        event.set()
    return step


async def _in_turn(steps: Iterable[Callable[[], Awaitable[object]]]) -> None:
    for step in steps:
        await step()


async def _together(main: Awaitable[None], beside: Awaitable[None]) -> None:
    """Run both lanes concurrently; a failure cancels the other lane and is raised once both
    have ended (so their sources are stopped before the caller discards the backup). When
    the lane beside fails first, the main lane has a moment to fail too, and its error wins:
    a server that went away mid-dump is named by the dump, not by the globals' connect."""
    first, second = asyncio.ensure_future(main), asyncio.ensure_future(beside)
    try:
        done, _ = await asyncio.wait([first, second], return_when=asyncio.FIRST_EXCEPTION)
        if second in done and second.exception() is not None and not first.done():
            await asyncio.wait([first], timeout=MAIN_LANE_GRACE)
        for task in (first, second):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        await asyncio.gather(first, second)
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


class _TargetWriter(ObjectWriter):
    """Wraps one target's writer: its failure marks the target failed instead of failing the
    whole backup (run_stream writes to every writer of the tee)."""

    def __init__(self, run: BackupRun, target: Storage, inner: ObjectWriter):
        self.run = run
        self.target = target
        self.inner = inner
        self.key = inner.key

    @property
    def alive(self) -> bool:
        return self.target.name not in self.run.failed

    async def write(self, data: bytes) -> None:
        if self.alive:
            try:
                await self.inner.write(data)
            except StorageError as exc:
                self.run._target_failed(self.target, exc)
                await self.inner.abort()
                self.run._healthy()

    async def commit(self) -> None:
        if self.alive:
            try:
                await self.inner.commit()
            except StorageError as exc:
                self.run._target_failed(self.target, exc)
                await self.inner.abort()

    async def abort(self) -> None:
        await self.inner.abort()
