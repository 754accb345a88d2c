"""Byte chunks from a worker thread to the event loop, through a small bounded queue.

Sources read in threads, not in the event loop: a child's pipe read by asyncio costs a
callback per 64 KiB (pg_dump writes 4 KiB at a time, so often less), which on a 2-core server
took more CPU than compressing the dump. A thread doing blocking 1 MiB reads, napping a
millisecond when the pipe is nearly empty so that it fills, wakes ~1000 times less often
(bench/ measures it). The queue bounds memory to a few chunks whatever the source's size.

The same thread may also run the backup's transform (compression, encryption, SHA-256) on each
chunk before handing it over: the event loop then sees one hand-off per *compressed* chunk, not
three thread hops (read, transform, write) per raw MiB.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable

CHUNK = 1 << 20
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, spelled out for Pythons that lack the name
NAP = 0.001  # seconds a pipe reader waits after a short read, for the pipe to fill
NAP_BELOW = 256 << 10  # a read shorter than this counts as short

_DONE = object()

Transform = Callable[[bytes], bytes]


class Stopped(Exception):
    """The consumer has gone away; the producer thread should return."""


class _TransformFailed(Exception):
    """Carries the transform's own error past the producer's handlers (which would otherwise
    blame the source for, say, a gpg failure)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class ChunkQueue:
    """One producer thread puts chunks; the event loop iterates them with `chunks()`.

    The producer starts with the first `chunks()` call, which may name a transform for it to
    apply. The producer's errors are kept for the consumer (`error`), who raises them where it
    checks the source's end; a transform's error is raised by `chunks()` itself. `stop()`
    makes a blocked producer raise Stopped.
    """

    def __init__(self, producer: Callable[[ChunkQueue], None], name: str, depth: int = 4):
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.transform_error: BaseException | None = None
        self._transform: Transform | None = None
        self._producer = producer
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._producer(self)
        except Stopped:
            return
        except _TransformFailed as failed:
            self.transform_error = failed.cause
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop side
            self.error = exc
        try:
            self._put(_DONE)
        except Stopped:
            pass

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def put(self, chunk: bytes | bytearray) -> None:
        """Hand over one chunk, transformed first if the consumer asked for it. Blocks while
        the queue is full; raises Stopped once the consumer gave up."""
        if self._transform is not None:
            try:
                chunk = self._transform(chunk)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - re-raised on the consumer's side
                raise _TransformFailed(exc) from exc
            if not chunk:
                return  # zstd keeps small outputs until it has a block worth writing
        self._put(chunk)

    def _put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                if not self.thread.is_alive() and self._queue.empty():
                    return _DONE

    def start(self, transform: Transform | None = None) -> None:
        """Start the producer; it applies `transform` to every chunk it puts. Once only."""
        if self.thread.ident is not None:
            raise RuntimeError(f"{self.thread.name}: the producer has already started")
        self._transform = transform
        self.thread.start()

    async def chunks(self, transform: Transform | None = None) -> AsyncIterator[bytes]:
        """The producer's chunks, each passed through `transform` in the producer's thread
        (empty results are skipped). One consumer only: this starts the producer."""
        self.start(transform)
        while True:
            item = await asyncio.to_thread(self._get)
            if item is _DONE:
                if self.transform_error is not None:
                    raise self.transform_error
                return
            yield item  # type: ignore[misc]

    def join(self) -> None:
        """Wait for the producer to end (at once if it never started)."""
        if self.thread.ident is not None:
            self.thread.join()

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
        if self.thread.ident is not None:
            self.thread.join(timeout=wait)


def read_pipe(fd: int) -> Callable[[ChunkQueue], None]:
    """A producer reading a pipe to its end in CHUNK-sized pieces (the last may be shorter)."""

    def produce(out: ChunkQueue) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while not out.stopped:
                buffer = bytearray(CHUNK)
                view = memoryview(buffer)
                filled = 0
                while filled < CHUNK:
                    got = pipe.readinto(view[filled:])
                    if not got:
                        break
                    filled += got
                    if got < NAP_BELOW and filled < CHUNK:
                        time.sleep(NAP)
                view.release()
                if filled < CHUNK:
                    if filled:
                        del buffer[filled:]
                        out.put(buffer)
                    return
                out.put(buffer)  # handed over, not copied: the next chunk gets a new buffer

    return produce


def pipe_for_child() -> tuple[int, int]:
    """A pipe (read end, write end) sized to hold a whole chunk where the kernel allows it."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    widen_pipe(write_fd)
    return read_fd, write_fd


def widen_pipe(fd: int) -> None:
    """Let the pipe hold a whole chunk (the default is 64 KiB): the two ends then take turns
    per chunk, not per 64 KiB, and the reader has a chunk in hand while the writer decodes."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for this user: keep the default 64 KiB
