"""Safe extraction: a crafted archive never writes outside its target directory.

Unit tests of kbackup.sources.files.extract against tar archives built in memory, plus one
end-to-end restore of a malicious archive that was slipped into a real backup (checksums resealed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import KBACKUPCTL, KbEnv, PgServer
from kbackup.sources.files.extract import TarThread, UnsafeArchive, check_member, extract_stream

MTIME = 1_234_567_890


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "",
           mode: int = 0o644, mtime: int = MTIME) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.mtime = mtime
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.uid = info.gid = 0
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def extract(data: bytes, target: Path) -> list[dict[str, Any]]:
    return extract_stream(io.BytesIO(data), target, restore_owner=False)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(target, outside): target is outside/target; outside must hold nothing else after."""
    outside = tmp_path / "outside"
    target = outside / "target"
    target.mkdir(parents=True)
    yield target, outside


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def only_target(outside: Path) -> None:
    assert [p.name for p in outside.iterdir()] == ["target"], everything(outside)


ETC_NAME = f"/etc/kbackup-extract-test-{uuid.uuid4().hex[:8]}"

UNSAFE = {
    "dotdot": ([member("ok.txt", data=b"fine"), member("../x", data=b"escaped")], "../x"),
    "dotdot-deep": ([member("a/b/../../../x", data=b"escaped")], "a/b/../../../x"),
    "absolute": ([member(ETC_NAME, data=b"escaped")], ETC_NAME),
    "symlink-outside": ([member("evil", tarfile.SYMTYPE, link="../../etc")], "evil"),
    "symlink-nested-outside": ([member("a/", tarfile.DIRTYPE, mode=0o755),
                                member("a/evil", tarfile.SYMTYPE, link="../..")], "a/evil"),
    "symlink-absolute": ([member("evil", tarfile.SYMTYPE, link="/etc")], "evil"),
    "hardlink-outside": ([member("hl", tarfile.LNKTYPE, link="../x")], "hl"),
    "hardlink-absolute": ([member("hl", tarfile.LNKTYPE, link="/etc/passwd")], "hl"),
    "char-device": ([member("null", tarfile.CHRTYPE)], "null"),
    "block-device": ([member("sda", tarfile.BLKTYPE)], "sda"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "pipe"),
    "link-to-parent": ([member("link", tarfile.SYMTYPE, link=".."),
                        member("link/x", data=b"escaped")], "link"),
    # Each link looks harmless where it is named, but the second is created through the first
    # (d/l1 is the target itself on disk), so it would point above the target.
    "link-through-link": ([member("d/", tarfile.DIRTYPE, mode=0o755),
                           member("d/l1", tarfile.SYMTYPE, link=".."),
                           member("d/l1/l2", tarfile.SYMTYPE, link="../..")], "d/l1/l2"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_member_is_rejected_and_nothing_lands_outside(
    case: str, box: tuple[Path, Path]
) -> None:
    target, outside = box
    members, culprit = UNSAFE[case]
    with pytest.raises(UnsafeArchive) as caught:
        extract(archive(*members), target)
    assert repr(culprit) in str(caught.value)
    only_target(outside)
    assert not Path(ETC_NAME).exists()
    # No link that leads out of the target was left behind either.
    for path in target.rglob("*"):
        assert path.resolve().is_relative_to(outside / "target"), path


def test_check_member_accepts_what_kbackup_writes() -> None:
    for name, kind, link in (("a/b.pdf", tarfile.REGTYPE, ""), ("a/", tarfile.DIRTYPE, ""),
                             ("a/self", tarfile.SYMTYPE, "."), ("a/up", tarfile.SYMTYPE, ".."),
                             ("a/hl", tarfile.LNKTYPE, "a/b.pdf"), (".", tarfile.DIRTYPE, "")):
        check_member(member(name, kind, link=link)[0])


def test_a_legitimate_archive_round_trips_bytes_modes_mtimes_and_inside_links(
    box: tuple[Path, Path]
) -> None:
    target, outside = box
    payload = os.urandom(300_000)
    data = archive(
        member("./", tarfile.DIRTYPE, mode=0o755),
        member("docs/", tarfile.DIRTYPE, mode=0o750, mtime=MTIME + 4),
        member("ro/", tarfile.DIRTYPE, mode=0o555),
        member("ro/inside.txt", data=b"in a read-only directory", mode=0o444),
        member("docs/big.bin", data=payload, mode=0o640, mtime=MTIME + 1),
        member("docs/run.sh", data=b"#!/bin/sh\n", mode=0o755, mtime=MTIME + 2),
        member("docs/same.bin", tarfile.LNKTYPE, link="docs/big.bin", mode=0o640,
               mtime=MTIME + 1),
        member("latest", tarfile.SYMTYPE, link="docs/big.bin"),
        member("here", tarfile.SYMTYPE, link="."),
        member("docs/up", tarfile.SYMTYPE, link=".."),
        member("here/via-link.txt", data=b"through an inside link", mtime=MTIME + 3),
        member("docs/up/docs/twice.txt", data=b"two links deep"),
    )
    written = extract(data, target)

    assert (target / "docs" / "big.bin").read_bytes() == payload
    big = (target / "docs" / "big.bin").stat()
    assert stat.S_IMODE(big.st_mode) == 0o640 and big.st_mtime == MTIME + 1
    run = (target / "docs" / "run.sh").stat()
    assert stat.S_IMODE(run.st_mode) == 0o755 and run.st_mtime == MTIME + 2
    docs = (target / "docs").stat()
    assert stat.S_IMODE(docs.st_mode) == 0o750 and docs.st_mtime == MTIME + 4
    assert (target / "docs" / "same.bin").stat().st_ino == big.st_ino
    assert os.readlink(target / "latest") == "docs/big.bin"
    assert (target / "latest").read_bytes() == payload
    assert (target / "via-link.txt").read_bytes() == b"through an inside link"
    assert (target / "via-link.txt").stat().st_mtime == MTIME + 3
    assert (target / "docs" / "twice.txt").read_bytes() == b"two links deep"
    assert (target / "ro" / "inside.txt").read_bytes() == b"in a read-only directory"
    assert stat.S_IMODE((target / "ro").stat().st_mode) == 0o555
    only_target(outside)

    files = {e["path"]: e for e in written if e["type"] == "file"}
    assert files["docs/big.bin"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert files["docs/big.bin"]["size"] == len(payload)
    assert {e["path"]: e["type"] for e in written if e["type"] != "file"} == {
        "docs": "dir", "ro": "dir", "docs/same.bin": "hardlink", "latest": "symlink",
        "here": "symlink", "docs/up": "symlink"}


def feed_in_chunks(data: bytes, target: Path, size: int) -> list[dict[str, Any]]:
    thread = TarThread(lambda reader: extract_stream(reader, target, False))
    for start in range(0, len(data), size):
        thread.feed(data[start:start + size])
    return thread.finish()


@pytest.mark.parametrize("chunk", [1, 511, 4096, 1 << 20])
def test_extract_stream_fed_in_chunks_through_tar_thread(tmp_path: Path, chunk: int) -> None:
    files = {f"d{i % 3}/f{i}.bin": os.urandom(1000 * i + 17) for i in range(1, 12)}
    if chunk == 1:
        files = dict(list(files.items())[:2])  # byte by byte: keep it small
    data = archive(*(member(name, data=body) for name, body in files.items()))
    written = feed_in_chunks(data, tmp_path, chunk)
    assert {e["path"]: e["sha256"] for e in written} == {
        name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    for name, body in files.items():
        assert (tmp_path / name).read_bytes() == body


def test_tar_thread_hands_back_the_unsafe_member_error(box: tuple[Path, Path]) -> None:
    target, outside = box
    good = [member(f"f{i}", data=os.urandom(50_000)) for i in range(30)]
    data = archive(*good[:10], member("../x", data=b"escaped"), *good[10:])
    with pytest.raises(UnsafeArchive, match=r"'\.\./x'"):
        feed_in_chunks(data, target, 4096)  # the feeder must not hang once the reader stops
    only_target(outside)


def test_a_truncated_archive_is_an_error_not_a_partial_success(tmp_path: Path) -> None:
    data = archive(member("a.bin", data=os.urandom(100_000)))
    with pytest.raises(tarfile.TarError):
        feed_in_chunks(data[:50_000], tmp_path, 4096)


# ---------------------------------------------------------------------- end to end


def test_restore_refuses_a_malicious_archive_in_a_backup(
    kb: KbEnv, pg: PgServer, shop_db: str, pdf_tree: Path, tmp_path: Path
) -> None:
    kb.shop_job(pg, shop_db, pdf_tree)
    kb.start()
    backup = kb.run_backup()
    folder = kb.backup_dir(backup)
    manifest = json.loads((folder / "manifest.json").read_text())
    component = next(c for c in manifest["components"] if c["name"] == "pdfs")
    evil = zstandard.ZstdCompressor().compress(archive(
        member("2026/", tarfile.DIRTYPE, mode=0o755),
        member("2026/inv-0.pdf", data=b"looks fine"),
        member("2026/../../escaped.txt", data=b"written outside"),
    ))
    (folder / component["file"]).write_bytes(evil)
    component["size_bytes"] = len(evil)
    component["sha256"] = hashlib.sha256(evil).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kb.resign(folder)  # by someone with the signing key: only the content is wrong
    assert kb.ctl("catalog", "rescan").returncode == 0

    def restore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KBACKUPCTL, "--socket", str(kb.socket), "restore", backup["id"], "--component",
             "pdfs", *args], env=kb.env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=180)

    parent = tmp_path / "restore-parent"
    out_dir = parent / "out"
    result = restore("--files-to", str(out_dir))
    assert result.returncode == 1, result
    assert "'2026/../../escaped.txt' escapes the target directory" in result.stderr
    assert not (parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert [p.name for p in parent.iterdir()] == ["out"]
    [record] = kb.ctl_json("restores")["items"]
    assert record["status"] == "failed"
    assert "2026/../../escaped.txt" in (record["error"] or ""), record

    # In place: the live tree stays as it was, no half-extracted directory is left beside it.
    live = {str(p.relative_to(pdf_tree)): p.read_bytes() for p in pdf_tree.rglob("*")
            if p.is_file()}
    before = [p.name for p in pdf_tree.parent.iterdir()]
    result = restore("--in-place", "--yes")
    assert result.returncode == 1, result
    assert "'2026/../../escaped.txt' escapes the target directory" in result.stderr
    assert {str(p.relative_to(pdf_tree)): p.read_bytes() for p in pdf_tree.rglob("*")
            if p.is_file()} == live
    assert sorted(p.name for p in pdf_tree.parent.iterdir()) == sorted(before)
    assert not (pdf_tree.parent / "escaped.txt").exists()
    assert kb.ctl_json("restores")["items"][0]["status"] == "failed"
