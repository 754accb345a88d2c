"""Verifying a file tree component against its file index: the archive listed and every file
hashed (structure), or extracted into a scratch directory, always removed (restore-test)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from kbackup.repository import Component
from kbackup.sources.base import CheckFailed, ReadBack
from kbackup.sources.files.extract import extract_stream, list_stream, pump_tar
from kbackup.sources.files.meta import Entry, decode_index


async def read_index(back: ReadBack, component: Component) -> dict[str, Entry]:
    """A file component's index: path → entry (type, size, sha256, mode)."""
    if component.index is None:
        raise CheckFailed(f"files {component.name}: the manifest lists no file index")
    stream = back.open(component.index, component)
    return decode_index(b"".join([chunk async for chunk in stream.chunks()]))


def compare_entries(component: str, index: dict[str, Entry], found: list[Entry]) -> None:
    seen = {e["path"]: e for e in found}
    for path, entry in index.items():
        got = seen.get(path)
        if got is None:
            raise CheckFailed(f"{component}/{path}: in the index but not in the archive")
        if entry["type"] == "file":
            if got.get("size") != entry["size"]:
                raise CheckFailed(f"{component}/{path}: size differs ({entry['size']} in"
                                  f" index, {got.get('size')} in archive)")
            if got.get("sha256") != entry["sha256"]:
                raise CheckFailed(f"{component}/{path}: sha256 differs")
    extra = sorted(set(seen) - set(index))
    if extra:
        raise CheckFailed(f"{component}/{extra[0]}: in the archive but not in the index")


async def structure(back: ReadBack, component: Component) -> None:
    index = await read_index(back, component)
    stream = back.open(component, component)
    found = await pump_tar(stream.chunks(), list_stream, back.advance)
    compare_entries(component.name, index, found)


async def restore_test(back: ReadBack, component: Component) -> None:
    index = await read_index(back, component)
    scratch = Path(tempfile.mkdtemp(prefix=f"verify-{back.manifest.id[-6:]}-",
                                    dir=back.scratch_base()))
    try:
        stream = back.open(component, component)
        written = await pump_tar(stream.chunks(),
                                 lambda reader: extract_stream(reader, scratch, False),
                                 back.advance)
        compare_entries(component.name, index, written)
        back.details[f"files_{component.name}"] = len(written)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
