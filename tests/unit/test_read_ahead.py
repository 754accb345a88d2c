"""read_ahead: a stream's chunks fetched ahead in their own task, in order, with the source's
error in its place and the source closed when the reader stops early."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from kbackup.pipeline import read_ahead


async def numbered(count: int, fail_at: int | None = None,
                   log: list[str] | None = None) -> AsyncIterator[bytes]:
    try:
        for i in range(count):
            if i == fail_at:
                raise ValueError(f"chunk {i} is corrupt")
            if log is not None:
                log.append(f"read {i}")
            yield str(i).encode()
    finally:
        if log is not None:
            log.append("closed")


async def test_every_chunk_comes_in_order() -> None:
    got = [c async for c in read_ahead(numbered(50), 4)]
    assert got == [str(i).encode() for i in range(50)]


async def test_chunks_are_fetched_ahead_up_to_the_depth() -> None:
    log: list[str] = []
    stream = read_ahead(numbered(20, log=log), 3)
    assert await anext(stream) == b"0"
    await asyncio.sleep(0.05)  # the reader holds chunk 0; the fetcher runs ahead
    assert log == [f"read {i}" for i in range(5)]  # 3 queued + 1 waiting to be put
    await stream.aclose()


async def test_the_sources_error_comes_after_the_chunks_before_it() -> None:
    got: list[bytes] = []
    with pytest.raises(ValueError, match="chunk 3 is corrupt"):
        async for chunk in read_ahead(numbered(10, fail_at=3), 4):
            got.append(chunk)
    assert got == [b"0", b"1", b"2"]


async def test_stopping_early_closes_the_source() -> None:
    log: list[str] = []
    async with contextlib.aclosing(read_ahead(numbered(1000, log=log), 2)) as stream:
        async for chunk in stream:
            if chunk == b"5":
                break
    assert log[-1] == "closed" and len(log) < 20
