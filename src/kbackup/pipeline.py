"""Byte-stream stages between a source and the storage writers.

A source yields ~1 MiB chunks. The stages (compression, encryption) and SHA-256 run on each
chunk in the source's own reader thread (zstd, hashlib and gpg's pipes release the GIL), so
the event loop only hands the much smaller compressed output to the writers: dumping,
compressing and writing overlap. Memory stays at a few chunks whatever the backup's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import zstandard

from kbackup.errors import VerifyError
from kbackup.handoff import Transform
from kbackup.storage.base import ObjectWriter

CHUNK = 1 << 20
DECODE_PIECE = 64 << 10


class Stage(Protocol):
    extension: str

    def process(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def close(self) -> None:
        """Release processes or threads; called after finish() and on failure."""

    def describe(self) -> dict[str, object]: ...


class ZstdStage:
    extension = ".zst"

    # zstd's default job size for multi-threaded compression grows with the level (8+ MiB per
    # worker, several in flight): measured 150-220 MB of RSS on incompressible data. 2 MiB
    # jobs keep it near 35 MB at the same speed (bench/ measures both).
    JOB_SIZE = 2 << 20

    def __init__(self, level: int = 3, threads: int = 0):
        self.level = level
        self.threads = threads or os.cpu_count() or 1
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=self.threads if self.threads > 1 else 0,
            job_size=self.JOB_SIZE if self.threads > 1 else 0)
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def process(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, object]:
        return {"algorithm": "zstd", "level": self.level}


@dataclass
class StreamResult:
    raw_bytes: int
    stored_bytes: int
    sha256: str


ChunkSource = Callable[[Transform], AsyncIterator[bytes]]
"""Given a transform, yields the transformed chunks of a source (SourceStream.chunks)."""


def bytes_source(data: bytes) -> ChunkSource:
    """A small in-memory object (config snapshot, file index) as a ChunkSource."""

    async def chunks(transform: Transform) -> AsyncIterator[bytes]:
        yield await asyncio.to_thread(transform, data)

    return chunks


class _Transform:
    """Stages plus the digest of what comes out of the last one; runs in the source's thread."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = stages
        self.digest = hashlib.sha256()
        self.raw = 0
        self.stored = 0

    def _out(self, data: bytes) -> bytes:
        self.digest.update(data)
        self.stored += len(data)
        return data

    def feed(self, data: bytes) -> bytes:
        self.raw += len(data)
        for stage in self.stages:
            data = stage.process(data)
        return self._out(data)

    def finish(self) -> bytes:
        out = b""
        for stage in self.stages:
            # Each stage also sees what the stages before it flushed.
            out = (stage.process(out) if out else b"") + stage.finish()
        return self._out(out)


async def read_ahead(source: AsyncIterator[bytes], depth: int) -> AsyncIterator[bytes]:
    """The source's chunks, `depth` of them fetched (read, decoded) ahead in a task of their
    own: a tool fed from the stream finds the next chunk ready while it takes the last one,
    instead of waiting for the read and decode to start. The source's error comes out in
    its place; stopping early cancels the task (its generator is closed there)."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=depth)

    async def fetch() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
        except Exception as exc:  # handed to the consumer, raised there
            await queue.put(exc)
            return
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()  # now, not when the loop finalizes it: its decoders, its file
        await queue.put(None)

    task = asyncio.create_task(fetch())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
        await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def rechunk(source: AsyncIterator[bytes], size: int = CHUNK) -> AsyncIterator[bytes]:
    """Gather small pipe reads into chunks worth a thread hop."""
    buffer = bytearray()
    async for piece in source:
        if not buffer and len(piece) >= size:
            yield piece  # already big enough: no copy
            continue
        buffer += piece
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def run_stream(
    source: ChunkSource,
    stages: Sequence[Stage],
    writers: Sequence[ObjectWriter],
    on_progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Pump source through stages into every writer; the caller commits or aborts them.

    The source applies the stages where it reads (one thread, no hop per raw chunk); the last
    stage's final bytes are added here once the source has ended."""
    transform = _Transform(stages)
    pending: asyncio.Future[None] | None = None

    async def write_all(data: bytes) -> None:
        if data:
            await asyncio.gather(*(w.write(data) for w in writers))

    try:
        async for out in source(transform.feed):
            if pending is not None:
                await pending
            # Writing this chunk overlaps with the source transforming the next ones.
            pending = asyncio.ensure_future(write_all(out))
            if on_progress:
                on_progress(transform.raw)
        if pending is not None:
            await pending
        if on_progress:  # the last chunks may have left the stages empty-handed (zstd threads)
            on_progress(transform.raw)
        await write_all(await asyncio.to_thread(transform.finish))
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
        for stage in stages:
            stage.close()
    return StreamResult(transform.raw, transform.stored, transform.digest.hexdigest())




# ---------------------------------------------------------------------------- reading back


class CorruptObject(VerifyError):
    """A stored object does not match its manifest or cannot be decoded; names the object."""


class ZstdDecodeStage:
    extension = ".zst"

    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def process(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"zstd data is corrupt: {exc}") from None

    def finish(self) -> bytes:
        if not self._obj.eof:
            raise CorruptObject("zstd stream is truncated")
        return b""

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, object]:
        return {"algorithm": "zstd"}


def decode_stages(compression: dict[str, Any], decrypt: Stage | None = None) -> list[Stage]:
    """The stages that undo what the manifest says was applied, in reverse order."""
    if compression.get("algorithm") != "zstd":
        raise CorruptObject(f"unsupported compression {compression.get('algorithm')!r}")
    return ([decrypt] if decrypt is not None else []) + [ZstdDecodeStage()]


class StoredStream:
    """Reads one stored object, hashing what was stored and decoding it for the caller.

    The checksum is known only once the stream is exhausted: callers that must not act on bad
    data (a restore over live data) check the object first with `verify_object`.
    """

    def __init__(self, source: AsyncIterator[bytes], name: str, size: int, sha256: str,
                 stages: Sequence[Stage]):
        self.source = source
        self.name = name
        self.expected_size = size
        self.expected_sha256 = sha256
        self.stages = stages
        self.digest = hashlib.sha256()
        self.stored = 0
        self.raw = 0

    def _decode(self, data: bytes) -> bytes:
        self.digest.update(data)
        self.stored += len(data)
        for stage in self.stages:
            data = stage.process(data)
        self.raw += len(data)
        return data

    def _finish(self) -> bytes:
        out = b""
        try:
            for stage in self.stages:
                out = (stage.process(out) if out else b"") + stage.finish()
        except CorruptObject as exc:
            raise CorruptObject(f"{self.name}: {exc}") from None
        self.raw += len(out)
        return out

    def check(self) -> None:
        if self.stored != self.expected_size:
            raise CorruptObject(f"{self.name}: size differs: {self.expected_size} bytes in"
                                f" manifest, {self.stored} stored")
        if self.digest.hexdigest() != self.expected_sha256:
            raise CorruptObject(f"{self.name}: sha256 differs from the manifest")

    async def chunks(self) -> AsyncIterator[bytes]:
        """Decoded bytes; raises CorruptObject at the end if size or sha256 differ."""
        # Decoding multiplies: 1 MiB of well-compressed zstd can be 50 MiB of dump. Small
        # pieces keep each decoded chunk (and the daemon's memory) bounded.
        piece = DECODE_PIECE if self.stages else CHUNK
        try:
            async for chunk in rechunk(self.source):
                for start in range(0, len(chunk), piece):
                    try:
                        out = await asyncio.to_thread(self._decode, chunk[start:start + piece])
                    except CorruptObject as exc:
                        raise CorruptObject(f"{self.name}: {exc}") from None
                    if out:
                        yield out
            tail = await asyncio.to_thread(self._finish)
            if tail:
                yield tail
            self.check()
        finally:
            for stage in self.stages:
                stage.close()

    async def drain(self) -> None:
        async for _chunk in self.chunks():
            pass
