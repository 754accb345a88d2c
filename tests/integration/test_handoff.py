"""Chunks from a reader thread: every byte arrives in order, memory stays bounded, and a
consumer that gives up does not leave the producer blocked."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time

import pytest

from kbackup.handoff import CHUNK, ChunkQueue, Stopped, read_pipe
from kbackup.sources.base import ProcessStream, SourceError, spawn_source

SCRIPT = r"""
import os, sys, time
out = sys.stdout.buffer
seed = 0
for size in (1, 4096, 3, 70000, 1 << 20, (1 << 20) + 5, 17, 2 << 20):
    out.write(bytes((seed + i) % 251 for i in range(size)))
    out.flush()
    seed += 1
    time.sleep(0.01)
"""


class ChildStream(ProcessStream):
    async def finish(self) -> dict[str, object]:
        await self.check_exit()
        return {}


def expected_bytes() -> bytes:
    parts = []
    for seed, size in enumerate((1, 4096, 3, 70000, 1 << 20, (1 << 20) + 5, 17, 2 << 20)):
        parts.append(bytes((seed + i) % 251 for i in range(size)))
    return b"".join(parts)


async def test_a_child_s_output_arrives_whole_and_in_order(tmp_path):
    proc, reader = await spawn_source(["python3", "-c", SCRIPT], {})
    stream = ChildStream(proc, reader, "test child")
    digest, sizes = hashlib.sha256(), []
    async for chunk in stream.chunks():
        digest.update(chunk)
        sizes.append(len(chunk))
    await stream.check_exit()
    assert digest.hexdigest() == hashlib.sha256(expected_bytes()).hexdigest()
    assert max(sizes) <= CHUNK
    assert all(size == CHUNK for size in sizes[:-1])  # short reads are gathered, not passed on


async def test_a_failing_child_is_named_with_its_last_error_line():
    proc, reader = await spawn_source(
        ["sh", "-c", "echo partial; echo 'pg_dump: error: no such database' >&2; exit 3"], {})
    stream = ChildStream(proc, reader, "database shop: pg_dump")
    data = b"".join([chunk async for chunk in stream.chunks()])
    assert data == b"partial\n"
    with pytest.raises(SourceError, match=r"^database shop: pg_dump failed \(exit 3\): "
                                          r"pg_dump: error: no such database$"):
        await stream.check_exit()


async def test_a_missing_program_raises_and_leaks_no_descriptor():
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        await spawn_source(["/nonexistent/pg_dump"], {})
    assert len(os.listdir("/proc/self/fd")) == before


def test_stop_releases_a_producer_blocked_on_a_full_queue():
    def produce(out: ChunkQueue) -> None:
        while True:
            out.put(b"x" * 1024)  # nobody consumes: blocks once the queue is full

    queue = ChunkQueue(produce, name="blocked", depth=2)
    queue.start()
    time.sleep(0.3)
    assert queue.thread.is_alive()
    queue.stop(wait=2.0)
    assert not queue.thread.is_alive()
    assert queue.error is None  # Stopped is how a producer returns, not an error


async def test_a_producer_error_reaches_the_consumer_after_the_data():
    def produce(out: ChunkQueue) -> None:
        out.put(b"first")
        raise OSError("disk on fire")

    queue = ChunkQueue(produce, name="failing")
    got = [chunk async for chunk in queue.chunks()]
    assert got == [b"first"]
    assert isinstance(queue.error, OSError)


async def test_read_pipe_stops_with_the_consumer_while_the_writer_is_still_open():
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"a" * 1000)
        queue = ChunkQueue(read_pipe(read_fd), name="pipe")
        queue.start()
        await asyncio.sleep(0.1)
        queue.stop(wait=0.5)  # the writer stays open: the thread is parked in read()
    finally:
        os.close(write_fd)  # EOF: the thread ends, having been told to stop
    queue.thread.join(timeout=5)
    assert not queue.thread.is_alive()
    assert queue.error is None


def test_stopped_is_raised_to_a_producer_once_stopped():
    queue = ChunkQueue(lambda out: None, name="idle")
    queue.start()
    queue.thread.join(5)
    queue.stop()
    with pytest.raises(Stopped):
        queue.put(b"late")


async def test_the_transform_runs_in_the_producer_thread_and_empty_results_are_skipped():
    producer_thread: list[int] = []
    seen: list[int] = []

    def produce(out: ChunkQueue) -> None:
        producer_thread.append(threading.get_ident())
        for piece in (b"abc", b"", b"keep", b"drop", b"xyz"):
            out.put(piece)

    def transform(data: bytes) -> bytes:
        seen.append(threading.get_ident())
        return b"" if data in (b"", b"drop") else data.upper()

    queue = ChunkQueue(produce, name="transforming")
    got = [chunk async for chunk in queue.chunks(transform)]
    assert got == [b"ABC", b"KEEP", b"XYZ"]
    assert seen == producer_thread * 5


async def test_a_transform_error_is_raised_by_chunks_not_blamed_on_the_source():
    def produce(out: ChunkQueue) -> None:
        out.put(b"fine")
        out.put(b"poison")
        out.put(b"never reached")

    def transform(data: bytes) -> bytes:
        if data == b"poison":
            raise OSError("gpg: broken pipe")
        return data

    queue = ChunkQueue(produce, name="transform-fails")
    got: list[bytes] = []
    with pytest.raises(OSError, match="gpg: broken pipe"):
        async for chunk in queue.chunks(transform):
            got.append(chunk)
    assert got == [b"fine"]
    assert queue.error is None  # the source itself did nothing wrong


async def test_chunks_may_be_asked_for_once():
    queue = ChunkQueue(lambda out: None, name="once")
    assert [chunk async for chunk in queue.chunks()] == []
    with pytest.raises(RuntimeError, match="already started"):
        await anext(queue.chunks())


async def test_a_source_child_writes_through_a_chunk_sized_stdio_buffer():
    # coreutils' stdbuf passes the buffer size to the child's libc in its environment.
    proc, reader = await spawn_source(["env"], {})
    stream = ChildStream(proc, reader, "env")
    output = b"".join([chunk async for chunk in stream.chunks()]).decode()
    await stream.check_exit()
    assert f"_STDBUF_O={CHUNK}" in output.splitlines()
