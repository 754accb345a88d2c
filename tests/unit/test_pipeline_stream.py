"""The byte pipeline without a database: a thread's chunks through zstd and SHA-256 into
local storage writers, then read back through StoredStream, which must notice every damage.

gpg itself is not run here: one gpg call costs over a second on a fresh homedir (it starts an
agent), too slow for this layer; tests/test_encryption.py covers it end to end. The stage
machinery gpg uses (a child process fed and drained by threads, its errors classified) is
exercised with `cat` and `sh`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zstandard

from kbackup.crypto import GpgFailed, GpgStage, KeyProblem
from kbackup.handoff import ChunkQueue, Transform
from kbackup.pipeline import (
    CHUNK,
    CorruptObject,
    StoredStream,
    ZstdStage,
    bytes_source,
    decode_stages,
    run_stream,
)
from kbackup.storage.base import StorageError
from kbackup.storage.local import LocalStorage

pytestmark = pytest.mark.unit

KEY = "shop/2026/01/20260101T020000Z-abcdef/shop.dump.zst"


def sample(size: int) -> bytes:
    """Compressible but not trivial: text-like runs with some random bytes mixed in."""
    random = os.urandom(size // 8)
    text = b"".join(b"row %d: customer %d ordered item %d\n" % (i, i * 7 % 1000, i % 97)
                    for i in range(size // 24))
    mixed = bytearray()
    for start in range(0, len(text), 4096):
        mixed += text[start:start + 4096] + random[start // 8:start // 8 + 512]
    return bytes(mixed[:size])


def thread_source(data: bytes, piece: int = CHUNK):
    """A ChunkSource like a real source: a reader thread hands over pieces via handoff."""

    def produce(out: ChunkQueue) -> None:
        for start in range(0, len(data), piece):
            out.put(data[start:start + piece])

    def chunks(transform: Transform) -> AsyncIterator[bytes]:
        return ChunkQueue(produce, "test-source").chunks(transform)

    return chunks


async def store(storages: list[LocalStorage], data: bytes, key: str = KEY,
                stages: list | None = None, piece: int = CHUNK,
                progress: list[int] | None = None):
    writers = [await s.open_writer(key) for s in storages]
    result = await run_stream(thread_source(data, piece),
                              [ZstdStage(level=3, threads=1)] if stages is None else stages,
                              writers, progress.append if progress is not None else None)
    for writer in writers:
        await writer.commit()
    return result


def read_back(storage: LocalStorage, size: int, sha256: str, key: str = KEY,
              stages: list | None = None) -> StoredStream:
    return StoredStream(storage.read(key), "shop.dump.zst", size, sha256,
                        decode_stages({"algorithm": "zstd"}) if stages is None else stages)


async def decoded(stream: StoredStream) -> bytes:
    return b"".join([chunk async for chunk in stream.chunks()])


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local", tmp_path / "store")


@pytest.mark.parametrize("threads", [1, 2], ids=["one-thread", "zstd-workers"])
async def test_zstd_and_sha256_describe_exactly_what_is_stored(local: LocalStorage,
                                                               tmp_path: Path,
                                                               threads: int) -> None:
    data = sample(3 * CHUNK + 12345)
    other = LocalStorage("other", tmp_path / "other")
    progress: list[int] = []
    result = await store([local, other], data, stages=[ZstdStage(level=3, threads=threads)],
                         progress=progress)
    stored = (local.root / KEY).read_bytes()
    assert result.raw_bytes == len(data)
    assert result.stored_bytes == len(stored) < len(data)
    assert result.sha256 == hashlib.sha256(stored).hexdigest()
    assert (other.root / KEY).read_bytes() == stored  # teed: every target gets the same bytes
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data
    # Progress is reported per output chunk: rising, never past the source's size (zstd
    # workers may hold all output back until the end, so there may be no report at all).
    assert progress == sorted(progress) and all(0 < p <= len(data) for p in progress)
    if threads == 1:
        assert progress
    assert not list(local.root.rglob("*.partial"))


async def test_small_pieces_and_an_empty_source(local: LocalStorage) -> None:
    data = sample(200_000)
    result = await store([local], data, piece=777)  # many tiny pipe reads
    assert result.raw_bytes == len(data)
    assert await decoded(read_back(local, result.stored_bytes, result.sha256)) == data

    empty = await store([local], b"", key=KEY + ".empty")
    assert empty.raw_bytes == 0 and empty.stored_bytes > 0  # still a valid zstd frame
    stream = read_back(local, empty.stored_bytes, empty.sha256, key=KEY + ".empty")
    assert await decoded(stream) == b""


async def test_without_stages_the_bytes_are_stored_as_they_are(local: LocalStorage) -> None:
    data = b"config snapshot\n" * 100
    writer = await local.open_writer("shop/config.json")
    result = await run_stream(bytes_source(data), [], [writer])
    await writer.commit()
    assert (local.root / "shop/config.json").read_bytes() == data
    assert (result.raw_bytes, result.stored_bytes) == (len(data), len(data))
    assert result.sha256 == hashlib.sha256(data).hexdigest()


async def test_reading_back_returns_the_original_bytes(local: LocalStorage) -> None:
    data = sample(2 * CHUNK + 99)
    result = await store([local], data)
    stream = read_back(local, result.stored_bytes, result.sha256)
    assert await decoded(stream) == data
    assert (stream.stored, stream.raw) == (result.stored_bytes, len(data))


async def test_a_corrupted_byte_is_detected(local: LocalStorage) -> None:
    data = sample(CHUNK)
    result = await store([local], data)
    path = local.root / KEY
    stored = bytearray(path.read_bytes())
    stored[len(stored) // 2] ^= 0x01
    path.write_bytes(bytes(stored))
    with pytest.raises(CorruptObject) as caught:
        await read_back(local, result.stored_bytes, result.sha256).drain()
    assert str(caught.value).startswith("shop.dump.zst: ")


async def test_a_changed_byte_zstd_cannot_see_is_caught_by_the_sha256(
        local: LocalStorage) -> None:
    data = b"plain bytes, stored without stages\n" * 1000
    writer = await local.open_writer(KEY)
    result = await run_stream(bytes_source(data), [], [writer])
    await writer.commit()
    path = local.root / KEY
    path.write_bytes(data.replace(b"plain", b"PLAIN", 1))
    stream = read_back(local, result.stored_bytes, result.sha256, stages=[])
    with pytest.raises(CorruptObject, match="^shop.dump.zst: sha256 differs from the manifest$"):
        await stream.drain()


async def test_a_truncated_object_is_detected(local: LocalStorage) -> None:
    data = sample(CHUNK)
    result = await store([local], data)
    path = local.root / KEY
    path.write_bytes(path.read_bytes()[: result.stored_bytes // 2])
    with pytest.raises(CorruptObject, match="^shop.dump.zst: zstd stream is truncated$"):
        await read_back(local, result.stored_bytes, result.sha256).drain()


async def test_bytes_appended_to_an_object_are_detected(local: LocalStorage) -> None:
    data = sample(100_000)
    result = await store([local], data)
    path = local.root / KEY
    path.write_bytes(path.read_bytes() + b"\0" * 10)
    with pytest.raises(CorruptObject, match="^shop.dump.zst: "):
        await read_back(local, result.stored_bytes, result.sha256).drain()


async def test_a_size_that_differs_from_the_manifest_is_named(local: LocalStorage) -> None:
    data = sample(100_000)
    result = await store([local], data)
    stream = read_back(local, result.stored_bytes + 1, result.sha256)
    with pytest.raises(CorruptObject) as caught:
        await stream.drain()
    assert str(caught.value) == (f"shop.dump.zst: size differs: {result.stored_bytes + 1}"
                                 f" bytes in manifest, {result.stored_bytes} stored")


async def test_an_unknown_compression_is_refused() -> None:
    with pytest.raises(CorruptObject, match="unsupported compression 'lz4'"):
        decode_stages({"algorithm": "lz4"})


async def test_a_missing_object_is_a_storage_error(local: LocalStorage) -> None:
    with pytest.raises(StorageError, match="storage local: cannot read"):
        await read_back(local, 1, "0" * 64).drain()


class Exploding:
    """A stage that fails on its second chunk, and remembers being closed."""

    extension = ".boom"

    def __init__(self) -> None:
        self.seen = 0
        self.closed = False

    def process(self, data: bytes) -> bytes:
        self.seen += 1
        if self.seen == 2:
            raise RuntimeError("stage failed")
        return data

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True

    def describe(self) -> dict[str, object]:
        return {}


async def test_a_failing_stage_fails_the_stream_and_every_stage_is_closed(
        local: LocalStorage) -> None:
    zstd, boom = ZstdStage(level=1, threads=1), Exploding()
    writer = await local.open_writer(KEY)
    with pytest.raises(RuntimeError, match="stage failed"):
        await run_stream(thread_source(sample(3 * CHUNK)), [zstd, boom], [writer])
    assert boom.closed
    await writer.abort()  # what a backup run does with its writers on failure
    assert not (local.root / KEY).exists()
    assert not list(local.root.rglob("*.partial"))


# ---------------------------------------------------------------- a child process as a stage


async def test_a_child_process_stage_round_trips(local: LocalStorage) -> None:
    """The stage machinery gpg runs in (GpgStage/GpgProcess), with `cat` as the child."""
    data = sample(2 * CHUNK + 5)
    result = await store([local], data, stages=[ZstdStage(level=1, threads=1),
                                                GpgStage(["cat"], None, {"mode": "test"})])
    stages = decode_stages({"algorithm": "zstd"}, GpgStage(["cat"], None, {}))
    assert await decoded(read_back(local, result.stored_bytes, result.sha256,
                                   stages=stages)) == data


@pytest.mark.parametrize(("stderr", "error", "text"), [
    ("gpg: decryption failed: Bad session key", KeyProblem,
     "gpg cannot decrypt: decryption failed: Bad session key (wrong passphrase or key)"),
    ("gpg: public key decryption failed: No secret key", KeyProblem, "No secret key"),
    ("gpg: [dont know]: invalid packet (ctb=2d)", GpgFailed, "invalid packet (ctb=2d)"),
], ids=["bad-passphrase", "no-secret-key", "corrupt-data"])
def test_why_a_decrypting_child_failed(stderr: str, error: type, text: str) -> None:
    """A wrong key is a KeyProblem (the backup may be fine), anything else GpgFailed."""
    script = f"cat >/dev/null; echo {shlex.quote(stderr)} >&2; exit 2"
    stage = GpgStage(["sh", "-c", script], None, {})
    try:
        stage.process(b"x" * 1000)
        with pytest.raises(error) as caught:
            stage.finish()
    finally:
        stage.close()
    assert text in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_child_stage_that_dies_fails_the_read_back(local: LocalStorage) -> None:
    data = sample(300_000)
    result = await store([local], data)
    dying = GpgStage(["sh", "-c", "head -c 10 >/dev/null; echo 'gpg: decryption failed:"
                      " Bad session key' >&2; exit 2"], None, {})
    stages = decode_stages({"algorithm": "zstd"}, dying)
    with pytest.raises((KeyProblem, CorruptObject)):
        await asyncio.wait_for(read_back(local, result.stored_bytes, result.sha256,
                                         stages=stages).drain(), 10)
