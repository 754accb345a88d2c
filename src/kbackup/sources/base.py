"""What every source (a database, a file tree) offers a backup job.

A source is opened as an async context manager yielding a SourceStream: `chunks(transform)`
gives its bytes, each chunk put through the backup's transform in the source's own reader
thread (see kbackup.handoff for why); `finish()` confirms the source ended well and returns
what the manifest records about it. Leaving the context early (failure, timeout, shutdown)
stops the source's processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from kbackup.errors import SourceError as SourceError
from kbackup.handoff import CHUNK, ChunkQueue, Transform, pipe_for_child, read_pipe
from kbackup.process import error_reason, kill_tree, read_stderr_tail, spawn


class SourceStream(ABC):
    @abstractmethod
    def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        """The source's bytes, or what `transform` makes of them (applied in the thread that
        reads the source, empty results skipped). Called once."""

    @abstractmethod
    async def finish(self) -> dict[str, Any]:
        """Raise SourceError if the source did not end cleanly; else its manifest metadata."""

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
    kind: str
    extension: str
    # A few kilobytes at most (roles, tablespaces): stored alongside the big sources, not
    # after them, so it adds nothing to the backup's wall time.
    small: bool = False

    def __init__(self, name: str):
        self.name = name

    @property
    def file_stem(self) -> str:
        return f"{'db' if self.kind == 'postgres' else self.kind}-{self.name}"

    @property
    def component_name(self) -> str:
        return self.name

    async def estimate_size(self) -> int | None:
        return None

    @abstractmethod
    def open(self) -> AbstractAsyncContextManager[SourceStream]: ...
