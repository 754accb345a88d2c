"""Byte chunks from a worker thread to the event loop, through a small bounded queue.

Sources read in threads, not in the event loop: a child's pipe read by asyncio costs a
callback per 64 KiB (pg_dump writes 4 KiB at a time, so often less), which on a 2-core server
took more CPU than compressing the dump. A thread doing blocking 1 MiB reads, napping a
millisecond when the pipe is nearly empty so that it fills, wakes ~1000 times less often
(bench/ measures it). The queue bounds memory to a few chunks whatever the source's size.
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


class Stopped(Exception):
    """The consumer has gone away; the producer thread should return."""


class ChunkQueue:
    """One producer thread puts chunks; the event loop iterates them with `chunks()`.

    The producer's errors are kept for the consumer (`error`), who raises them where it
    checks the source's end; `stop()` makes a blocked producer raise Stopped.
    """

    def __init__(self, producer: Callable[[ChunkQueue], None], name: str, depth: int = 4):
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._producer = producer
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._producer(self)
        except Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop side
            self.error = exc
        try:
            self.put(_DONE)
        except Stopped:
            pass

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def put(self, item: object) -> None:
        """Blocks while the queue is full; raises Stopped once the consumer gave up."""
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

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await asyncio.to_thread(self._get)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
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
    try:
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for this user: keep the default 64 KiB
    return read_fd, write_fd
