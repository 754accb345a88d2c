"""What every source kind offers the jobs: backup streams, and a driver with the other verbs.

Backup: a driver's `sources(config)` gives the Sources of one `[[table]]` entry. A source is
opened as an async context manager yielding a SourceStream: `chunks(transform)` gives its
bytes, each chunk put through the backup's transform in the source's own reader thread (see
kbackup.handoff for why); `finish()` confirms the source ended well and returns what the
manifest records about it. Leaving the context early (failure, timeout, shutdown) stops the
source's processes.

Everything else (verify, restore planning, restore) is a verb of the kind's `Driver`, given a
ReadBack or RestoreContext: the backup as stored, its keys, the run's progress.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from kbackup.config import Config, JobConfig
from kbackup.crypto import Decryptor, KeyProblem
from kbackup.errors import Refused, ToolError, VerifyError
from kbackup.errors import SourceError as SourceError
from kbackup.fields import SourceConfig
from kbackup.handoff import CHUNK, ChunkQueue, Transform, pipe_for_child, read_pipe
from kbackup.pipeline import StoredStream, decode_stages
from kbackup.process import error_reason, kill_tree, read_stderr_tail, spawn
from kbackup.progress import Progress
from kbackup.repository import Component, Manifest, StoredObject, backup_prefix
from kbackup.storage import Storage


class DriverError(ToolError):
    """A verify or restore step of a driver failed (a tool, a connection); one line naming
    the step (and `stderr`, when a tool failed, what it printed)."""


class CannotCheck(DriverError):
    """Verification could not run here (a tool missing or too old): not the backup's fault,
    so the verification is recorded as failed and the backup's status is left as it was."""


class CheckFailed(VerifyError):
    """Verification: the backup is not what its manifest promises; the first mismatch."""


class PlanRefused(Refused):
    """Restore planning: the request cannot be carried out (unknown table, unsafe target)."""


class SourceStream(ABC):
    @abstractmethod
    def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        """The source's bytes, or what `transform` makes of them (applied in the thread that
        reads the source, empty results skipped). Called once."""

    @abstractmethod
    async def finish(self) -> BaseModel:
        """Raise SourceError if the source did not end cleanly; else its manifest metadata
        (the driver's typed model, stored under the source's `metadata_field`)."""

    def index(self) -> bytes | None:
        """An optional listing stored beside the component (file trees: path, size, sha256)."""
        return None


def with_large_stdout_buffer(argv: Sequence[str]) -> list[str]:
    """pg_dump writes its archive through stdio, which buffers a pipe one 4 KiB page at a time:
    a write() and a reader wake-up per page, 300 000 of them for a 1.2 GB dump. coreutils'
    stdbuf gives its stdout a buffer of one pipeline chunk instead: 1 200 writes, and pg_dump
    then costs no more CPU writing into the pipe than into /dev/null (bench/: "children").
    The program is resolved first so that a missing one is still FileNotFoundError."""
    program = shutil.which(argv[0])
    if program is None:
        raise FileNotFoundError(argv[0])
    stdbuf = shutil.which("stdbuf")
    prefix = [stdbuf, f"-o{CHUNK}"] if stdbuf else []
    return [*prefix, program, *argv[1:]]


async def spawn_source(argv: Sequence[str], env: Mapping[str, str]
                       ) -> tuple[asyncio.subprocess.Process, ChunkQueue]:
    """Start a child whose stdout is read by a thread (see kbackup.handoff for why).

    Raises FileNotFoundError when the program is missing or not executable."""
    command = with_large_stdout_buffer(argv)
    read_fd, write_fd = pipe_for_child()
    try:
        proc = await spawn(command, env=env, stdout=write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return proc, ChunkQueue(read_pipe(read_fd), name=f"read-{os.path.basename(argv[0])}")


async def stop_source(proc: asyncio.subprocess.Process, reader: ChunkQueue) -> None:
    """Kill the child's tree; its pipe then reaches EOF and the reader thread ends."""
    await kill_tree(proc)
    await asyncio.to_thread(reader.stop)


class ProcessStream(SourceStream):
    """A source that is a child process writing to stdout (pg_dump, pg_dumpall)."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: ChunkQueue, what: str):
        self.proc = proc
        self.reader = reader
        self.what = what  # "database shop: pg_dump", named in errors
        self.stderr_task = asyncio.create_task(read_stderr_tail(proc.stderr))

    def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        return self.reader.chunks(transform)

    async def check_exit(self) -> None:
        code = await self.proc.wait()
        stderr = await self.stderr_task
        if code != 0:
            raise SourceError(f"{self.what} failed (exit {code}): "
                              + error_reason(stderr, "no error message"), stderr)
        if self.reader.error is not None:
            raise SourceError(f"{self.what}: reading its output failed: {self.reader.error}")


class Source(ABC):
    kind: str  # the Component.kind it is stored as
    extension: str
    # Where the manifest component keeps finish()'s metadata ("database", "files"); None:
    # not kept (the globals component records none).
    metadata_field: str | None = None
    # A few kilobytes at most (roles, tablespaces): stored alongside the big sources, not
    # after them, so it adds nothing to the backup's wall time.
    small: bool = False
    # One of several found at run time (a server's databases): its failure is recorded in the
    # manifest's missing_components and the others are still stored (a "partial" backup).
    may_fail: bool = False
    # Where a source that copies before it streams (sqlite) keeps its private temp copy: the
    # daemon's staging_dir, else state_dir (set by the backup run); None: the system's temp.
    scratch_dir: Path | None = None

    def __init__(self, name: str):
        self.name = name

    @property
    def file_stem(self) -> str:
        return f"{self.kind}-{self.name}"

    @property
    def component_name(self) -> str:
        return self.name

    async def estimate_size(self) -> int | None:
        return None

    @abstractmethod
    def open(self) -> AbstractAsyncContextManager[SourceStream]: ...


# ---------------------------------------------------------------- reading a backup back


def open_object(storage: Storage, manifest: Manifest, obj: StoredObject,
                component: Component | None = None,
                decryptor: Decryptor | None = None) -> StoredStream:
    """A stored object of a backup; decoded (decrypted, decompressed) when component is given,
    else the raw stored bytes (enough for checksums, no keys needed)."""
    key = backup_prefix(manifest.job, manifest.id) + obj.file
    stages = []
    if component is not None:
        decrypt = None
        if component.encryption.get("mode", "none") != "none":
            if decryptor is None:
                raise KeyProblem(f"{obj.file} is encrypted and no key was given")
            decrypt = decryptor.stage(component.encryption)
        stages = decode_stages(component.compression, decrypt)
    return StoredStream(storage.read(key), obj.file, obj.size_bytes, obj.sha256, stages)


@dataclass
class ReadBack:
    """One stored backup as a verify verb reads it: from one storage, decoded with the job's
    keys, progress counted in decoded bytes; `details` ends up in the verification record."""

    config: Config
    job: JobConfig | None
    manifest: Manifest
    storage: Storage
    decryptor: Decryptor
    progress: Progress
    details: dict[str, Any] = field(default_factory=dict)

    def open(self, obj: StoredObject, component: Component) -> StoredStream:
        """`obj` (the component itself or its index) decoded."""
        return open_object(self.storage, self.manifest, obj, component, self.decryptor)

    def advance(self, size: int) -> None:
        self.progress.bytes_done += size

    def scratch_base(self) -> Path:
        """Where scratch directories go (staging_dir, else state_dir)."""
        base = self.config.daemon.staging_dir or self.config.daemon.state_dir
        base.mkdir(parents=True, exist_ok=True)
        return base


@dataclass
class RestoreOptions:
    """What the user asked of a restore (jobs/restore_plan.RestoreRequest adds parsing)."""

    backup: str
    job: str | None = None
    component: str | None = None
    to_database: str | None = None
    tables: list[str] = field(default_factory=list)
    schema_only: bool = False
    data_only: bool = False
    no_owner: bool = False
    with_globals: bool = False
    all_databases: bool = False  # every database component, each to its own name, globals first
    clean: bool = False
    files_to: str | None = None
    to_path: str | None = None  # a SQLite database restored to this new file
    in_place: bool = False
    no_safety_backup: bool = False
    force: bool = False
    force_open: bool = False  # replace a SQLite file even though a process has it open
    gpg_homedir: str | None = None
    passphrase_file: str | None = None
    dry_run: bool = False
    yes: bool = False


@dataclass
class Step:
    """One line of a restore plan. `kind` is the driver's (database-replace, database-new,
    globals, files-new, files-replace) or "skip", which no driver is asked to carry out."""

    component: str
    kind: str
    target: str
    detail: str
    destructive: bool = False
    size_bytes: int = 0
    # The driver's restore creates what it restores (a new database, beside its name then
    # renamed in) and reads the whole object back, checked, before it is visible: a plan of
    # this one step needs no separate re-read first, a whole pass over the backup.
    checked_before_change: bool = False


@dataclass
class Planned:
    """A planned step and the job's sources a pre-restore safety backup must hold first."""

    step: Step
    safety_backup: list[str] = field(default_factory=list)


@dataclass
class RestoreContext(ReadBack):
    """A restore in progress, as a restore verb sees it."""

    request: RestoreOptions = field(default_factory=lambda: RestoreOptions(""))
    restore_id: str = ""


# ---------------------------------------------------------------- the driver protocol


class Driver(Protocol):
    """Every verb of one source kind (one per kind: kbackup.sources.<table>.driver.DRIVER).
    The jobs call these and never look at a kind's name."""

    table: str  # [[table]] in a job file
    component_kinds: tuple[str, ...]  # the Component.kind values it stores and reads back

    def sources(self, config: SourceConfig) -> list[Source]:
        """The backup streams of one [[table]] entry, in the order they are stored."""
        ...

    async def expand(self, config: SourceConfig) -> list[Source]:
        """The backup streams of one entry for this run: `sources(config)`, or what is found
        on the server now (every database of a `databases = "*"` entry). Raise SourceError
        when the server cannot be asked."""
        ...

    async def check(self, config: SourceConfig) -> dict[str, Any]:
        """The reachability probe (`kbackupctl sources check`): `errors.check_result`'s shape
        ({ok, reason}) plus what the kind found (version, databases, sizes). Never raises for
        a problem of the source: the reason names it in one line."""
        ...

    def summary(self, component: dict[str, Any]) -> dict[str, Any]:
        """Listing fields of a stored component (views.component_view), from manifest JSON."""
        ...

    def size_label(self, component_kind: str) -> str | None:
        """What a size check calls this component ("database"); None: not size-checked."""
        ...

    async def structure(self, back: ReadBack, component: Component) -> None:
        """Decode and parse the whole component; raise CheckFailed at the first mismatch."""
        ...

    async def restore_test(self, back: ReadBack, component: Component) -> None:
        """Restore into scratch space (always removed) and compare with the manifest."""
        ...

    def selected(self, component: Component, request: RestoreOptions) -> bool:
        """Whether a restore request covers this component."""
        ...

    def restore_rank(self, component: Component) -> int:
        """Restore order within a plan, lowest first (roles before the objects they own)."""
        ...

    async def plan(self, job: JobConfig, component: Component,
                   request: RestoreOptions) -> Planned:
        """What restoring it would do, and which sources its safety backup needs; raise
        PlanRefused for whatever would fail later. Touches nothing."""
        ...

    async def restore(self, ctx: RestoreContext, step: Step, component: Component) -> None:
        """Carry out one planned step (after the prechecks and the safety backup)."""
        ...
