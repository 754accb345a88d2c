"""One contract for every storage backend, run against real servers: local, S3 (moto), WebDAV
(wsgidav). Plus the S3 specifics (multipart, 10 000+ keys, stale uploads) and a real kbackupd
backing up to all three at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from conftest import KbEnv, PgServer
from kbackup.config import ConfigError, load_config
from kbackup.repository import clean_incomplete, list_manifests
from kbackup.storage import Storage, StorageError, open_storage
from kbackup.storage.local import LocalStorage
from storage_servers import (
    BUCKET,
    DAV_PASSWORD,
    ServerProcess,
    dav_config,
    open_test_storage,
    s3_client,
    s3_config,
    toml_table,
    write_secret,
)

pytest_plugins = ["storage_servers"]
MiB = 1 << 20
BACKENDS = ["local", "s3", "webdav"]


@pytest.fixture(params=BACKENDS)
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, make_s3: Callable[..., Storage],
    make_dav: Callable[..., Storage],
) -> Storage:
    if request.param == "local":
        return LocalStorage("local", tmp_path / "store")
    return make_s3() if request.param == "s3" else make_dav()


async def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in await storage.list(prefix)]


async def test_write_commit_read_back(storage: Storage) -> None:
    data = random.Random(7).randbytes(3 * MiB + 123)
    writer = await storage.open_writer("shop/2026/05/x/db-shop.dump.zst")
    for start in range(0, len(data), 700_001):  # odd-sized chunks, as the pipeline sends
        await writer.write(data[start : start + 700_001])
    await writer.commit()
    await writer.abort()  # after commit: nothing happens
    assert await storage.get_bytes("shop/2026/05/x/db-shop.dump.zst") == data
    chunks = [c async for c in storage.read("shop/2026/05/x/db-shop.dump.zst", chunk_size=MiB)]
    assert b"".join(chunks) == data and max(map(len, chunks)) <= MiB
    info = await storage.stat("shop/2026/05/x/db-shop.dump.zst")
    assert info is not None and info.size == len(data)
    assert abs((datetime.now(UTC) - info.modified).total_seconds()) < 120
    await storage.put_bytes("empty", b"")
    assert await storage.get_bytes("empty") == b""
    await storage.put_bytes("shop/2026/05/x/db-shop.dump.zst", b"replaced")
    assert await storage.get_bytes("shop/2026/05/x/db-shop.dump.zst") == b"replaced"


async def test_odd_characters_in_keys(storage: Storage) -> None:
    # Not '?' or '#': wsgidav decodes MOVE's Destination before parsing it (its bug).
    key = "Line Items/ü & ;1=2/100% done+more,'x'.txt"
    await storage.put_bytes(key, b"odd")
    assert await keys(storage) == [key]
    assert await storage.get_bytes(key) == b"odd"
    await storage.delete(key)
    assert await keys(storage) == []


async def test_not_visible_before_commit(storage: Storage) -> None:
    writer = await storage.open_writer("job/2026/05/b/manifest.json")
    await writer.write(b"{}" * 1000)
    assert await storage.stat("job/2026/05/b/manifest.json") is None
    assert "job/2026/05/b/manifest.json" not in await keys(storage)
    with pytest.raises(StorageError):
        await storage.get_bytes("job/2026/05/b/manifest.json")
    await writer.commit()
    assert await keys(storage) == ["job/2026/05/b/manifest.json"]  # no partial left over


async def test_abort_leaves_nothing(storage: Storage) -> None:
    writer = await storage.open_writer("job/2026/05/c/files-pdfs.tar.zst")
    await writer.write(random.randbytes(6 * MiB))  # past one S3 part: a multipart upload
    await writer.abort()
    await writer.abort()  # twice is fine
    assert await keys(storage) == []
    assert await storage.stat("job/2026/05/c/files-pdfs.tar.zst") is None


async def test_list_with_prefix(storage: Storage) -> None:
    for key in ["a/1", "a/2", "ab/3", "b/4", "a/sub/5", "top"]:
        await storage.put_bytes(key, key.encode())
    assert await keys(storage) == ["a/1", "a/2", "a/sub/5", "ab/3", "b/4", "top"]
    assert await keys(storage, "a/") == ["a/1", "a/2", "a/sub/5"]
    assert await keys(storage, "a") == ["a/1", "a/2", "a/sub/5", "ab/3"]
    assert await keys(storage, "a/s") == ["a/sub/5"]
    assert await keys(storage, "zzz/") == []
    sizes = {i.key: i.size for i in await storage.list("b/")}
    assert sizes == {"b/4": 3}


async def test_delete(storage: Storage) -> None:
    await storage.delete("never/was/there")  # missing is not an error
    await storage.put_bytes("d/2026/keep", b"1")
    await storage.put_bytes("d/2026/05/gone", b"2")
    await storage.delete("d/2026/05/gone")
    assert await keys(storage) == ["d/2026/keep"]
    assert await storage.stat("d/2026/05/gone") is None
    with pytest.raises(StorageError, match="d/2026/05/gone"):
        await storage.get_bytes("d/2026/05/gone")
    with pytest.raises(StorageError, match="invalid object key"):
        await storage.open_writer("../escape")


async def test_webdav_removes_empty_collections(
    dav_server: ServerProcess, make_dav: Callable[..., Storage]
) -> None:
    storage = make_dav()
    base = dav_server.root / storage.base.rstrip("/").rsplit("/", 1)[-1]
    await storage.put_bytes("job/2026/05/id1/a", b"a")
    await storage.put_bytes("job/2026/05/id2/b", b"b")
    assert (base / "job/2026/05/id1/a").read_bytes() == b"a"
    await storage.delete("job/2026/05/id1/a")
    assert not (base / "job/2026/05/id1").exists() and (base / "job/2026/05/id2").is_dir()
    writer = await storage.open_writer("job/2026/06/id3/c")
    await writer.write(b"c")
    await writer.abort()
    assert not (base / "job/2026/06").exists()


async def stream(total: int, seed: int = 1) -> AsyncIterator[bytes]:
    rnd = random.Random(seed)
    for _ in range(total // MiB):
        yield rnd.randbytes(MiB)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_large_object_streams_with_bounded_memory(
    backend: str, tmp_path: Path, make_s3: Callable[..., Storage],
    make_dav: Callable[..., Storage],
) -> None:
    """40 MiB through the writer: Python memory stays a fraction of the object's size."""
    total = 40 * MiB
    storage: Storage = {
        "local": lambda: LocalStorage("local", tmp_path / "store"),
        "s3": lambda: make_s3(part_size="5MiB", max_in_flight=2),
        "webdav": make_dav,
    }[backend]()
    await storage.put_bytes("warm-up", b"x")  # botocore loads its S3 model once: not counted
    digest = hashlib.sha256()
    writer = await storage.open_writer("big/stream.zst")
    tracemalloc.start()
    began = time.perf_counter()
    try:
        async for chunk in stream(total):
            digest.update(chunk)
            await writer.write(chunk)
        await writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - began
    print(f"\n{backend}: 40 MiB in {seconds:.2f}s = {total / MiB / seconds:.0f} MiB/s,"
          f" peak Python memory {peak / MiB:.1f} MiB")
    # S3: the part being filled, max_in_flight parts, and one more copy of a part in asyncio's
    # socket buffer (Python 3.11 copies what the socket can't take at once): 4 x 5 MiB.
    # WebDAV: the queue (4 chunks) and the replay buffer (4 MiB). Local: a chunk or two, and
    # whatever else this process allocates meanwhile (seen: 4.3 MiB on a machine 100% busy).
    assert peak < {"local": 6, "s3": 24, "webdav": 11}[backend] * MiB
    read_digest = hashlib.sha256()
    async for chunk in storage.read("big/stream.zst"):
        read_digest.update(chunk)
    assert read_digest.hexdigest() == digest.hexdigest()


# ----------------------------------------------------------------------------- S3 specifics


async def test_s3_multipart_parts_and_prefix(
    s3_server: ServerProcess, make_s3: Callable[..., Storage]
) -> None:
    storage = make_s3(part_size="5MiB", storage_class="STANDARD_IA")
    data = random.randbytes(12 * MiB + 5)
    await storage.put_bytes("m/obj", data)
    raw = s3_client(s3_server)
    head = raw.head_object(Bucket=BUCKET, Key=storage.prefix + "m/obj")
    assert head["ETag"].endswith('-3"')  # 5 + 5 + 2 MiB: three parts
    assert head["StorageClass"] == "STANDARD_IA"
    assert await storage.get_bytes("m/obj") == data
    assert storage.prefix.startswith("t-") and await keys(storage) == ["m/obj"]


async def test_s3_lists_more_than_10000_objects(
    s3_server: ServerProcess, make_s3: Callable[..., Storage]
) -> None:
    storage = make_s3()
    fill = {"bucket": BUCKET, "prefix": storage.prefix + "many/", "count": 10_500}
    s3_server.control("fill", fill)
    await storage.put_bytes("other/x", b"x")
    listed = await keys(storage)  # 11 pages of ListObjectsV2
    assert len(listed) == 10_501 and len(set(listed)) == 10_501
    assert listed[0] == "many/000000" and listed[-2:] == ["many/010499", "other/x"]


async def test_s3_stale_multipart_uploads_are_aborted(
    s3_server: ServerProcess, make_s3: Callable[..., Storage]
) -> None:
    storage = make_s3()
    raw = s3_client(s3_server)
    raw.create_multipart_upload(Bucket=BUCKET, Key=storage.prefix + "job/2026/05/x/db.zst")
    outside = raw.create_multipart_upload(Bucket=BUCKET, Key="elsewhere/y")

    def pending() -> list[str]:
        return [u["Key"] for u in raw.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]

    # moto reports every upload as started in 2010, so "too young" shows with a long age.
    assert await storage.abort_stale_uploads(timedelta(days=365 * 100)) == []
    removed = await clean_incomplete(storage, set(), datetime.now(UTC), timedelta(days=1))
    assert removed == ["job/2026/05/x/db.zst"]
    assert pending() == ["elsewhere/y"]  # outside the prefix: not ours
    raw.abort_multipart_upload(Bucket=BUCKET, Key="elsewhere/y", UploadId=outside["UploadId"])


# ----------------------------------------------------------------------------- config


def write_config(base: Path, storage: str) -> Path:
    conf = base / "conf"
    (conf / "jobs.d").mkdir(parents=True, exist_ok=True)
    (conf / "kbackupd.toml").write_text(f'[daemon]\nstate_dir = "{base}/state"\n{storage}')
    return conf


def test_config_of_remote_targets(tmp_path: Path) -> None:
    key = write_secret(tmp_path, "key", "AKIDEXAMPLE")
    good = write_config(tmp_path / "good", f"""
[storage.offsite]
type = "s3"
endpoint_url = "https://s3.eu-central-003.backblazeb2.com"
bucket = "kb-backups"
prefix = "/shop//"
access_key_id_file = "{key}"
secret_access_key_file = "{key}"
part_size = "64MiB"
retry_max_seconds = "2m"
[storage.nextcloud]
type = "webdav"
url = "https://cloud.example.com/remote.php/dav/files/kb/Backups"
username = "kb"
password_file = "{key}"
""")
    config = load_config(good)
    offsite = config.storage["offsite"]
    assert offsite.type == "s3" and offsite.prefix == "shop/"
    assert offsite.part_size == 64 * MiB and offsite.retry_max_seconds == 120
    assert config.storage["nextcloud"].type == "webdav"

    bad = write_config(tmp_path / "bad", f"""
[storage.offsite]
type = "s3"
bucket = "kb"
access_key_id_file = "{key}"
secret_access_key_file = "relative/secret"
part_size = "1MiB"
[storage.nextcloud]
type = "webdav"
url = "https://kb:hunter2@cloud.example.com/dav"
username = "kb"
password = "hunter2"
""")
    with pytest.raises(ConfigError) as problems:
        load_config(bad)
    text = str(problems.value)
    for expected in [
        "storage.offsite.bucket: expected a bucket name",
        "storage.offsite.secret_access_key_file: expected an absolute file path",
        "storage.offsite.part_size: expected a part size between 5MiB (the S3 minimum) and 5GiB",
        "storage.nextcloud: password must not be written here: put it in a file and set"
        " password_file",
    ]:
        assert f"kbackupd.toml: {expected}" in text, text
    assert "hunter2" not in text

    missing = write_config(tmp_path / "missing", f"""
[storage.nextcloud]
type = "webdav"
url = "https://kb:hunter2@cloud.example.com/dav"
username = "kb"
password_file = "{tmp_path}/nope"
ca_file = "{tmp_path}/no-ca.pem"
""")
    with pytest.raises(ConfigError) as problems:
        load_config(missing)
    assert "storage.nextcloud.url: the URL contains a password" in str(problems.value)
    (missing / "kbackupd.toml").write_text(
        (missing / "kbackupd.toml").read_text().replace("kb:hunter2@", ""))
    with pytest.raises(ConfigError) as problems:
        load_config(missing)
    assert problems.value.problems == [
        f"{missing}/kbackupd.toml: storage.nextcloud.password_file: {tmp_path}/nope"
        " does not exist or is not a file",
        f"{missing}/kbackupd.toml: storage.nextcloud.ca_file: {tmp_path}/no-ca.pem"
        " does not exist or is not a file",
    ]


# ----------------------------------------------------------------------------- end to end


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_daemon_backs_up_to_local_s3_and_webdav(
    kb: KbEnv, pg: PgServer, shop_db: str, s3_server: ServerProcess,
    dav_server: ServerProcess, tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    offsite = s3_config(s3_server, secrets)
    nextcloud = dav_config(dav_server, secrets)
    kb.write_daemon(extra=toml_table("offsite", offsite) + toml_table("nextcloud", nextcloud))
    kb.write_job("shop", f"""
targets = ["local", "offsite", "nextcloud"]
timeout = "5m"
[[postgres]]
name = "shop"
dsn = "{pg.dsn(shop_db)}"
""")
    kb.start()
    backup = kb.run_backup()
    assert backup["status"] == "complete"
    assert backup["targets"] == {"local": "complete", "offsite": "complete",
                                 "nextcloud": "complete"}

    config = load_config(kb.config_dir)
    storages = {name: open_storage(name, cfg) for name, cfg in config.storage.items()}
    prefix = f"shop/{backup['id'][:4]}/{backup['id'][4:6]}/{backup['id']}/"

    async def fetch_all() -> dict[str, dict[str, bytes]]:
        found: dict[str, dict[str, bytes]] = {}
        for name, storage in storages.items():
            found[name] = {i.key: await storage.get_bytes(i.key) for i in await storage.list()}
        return found

    stored = asyncio.run(fetch_all())
    manifest_bytes = stored["local"][prefix + "manifest.json"]
    manifest = json.loads(manifest_bytes)
    expected = {prefix + "manifest.json": sha256(manifest_bytes),
                prefix + "manifest.json.sig": sha256(stored["local"][prefix + "manifest.json.sig"])}
    for component in manifest["components"]:
        expected[prefix + component["file"]] = component["sha256"]
    assert len(expected) >= 4  # dump, globals or config, manifest and its signature
    for name, objects in stored.items():
        assert {k: sha256(v) for k, v in objects.items()} == expected, name

    # Secrets stay in their files: not in the log, not in the stored config snapshot.
    snapshot = zstandard.ZstdDecompressor().decompressobj().decompress(
        stored["offsite"][prefix + "config.json.zst"])
    assert json.loads(snapshot)["storage"]["offsite"]["secret_access_key_file"]
    for secret in (s3_server.info["secret_key"], DAV_PASSWORD):
        assert secret.encode() not in snapshot and secret not in kb.logs()

    result = kb.ctl("catalog", "rescan")
    assert result.returncode == 0, result.stderr
    assert kb.ctl_json("show", backup["id"])["targets"] == backup["targets"]

    # Without the local copy the backup is still found, on the two off-site targets.
    for key in expected:
        (kb.store / key).unlink()
    result = kb.ctl("catalog", "rescan")
    assert result.returncode == 0 and "found 1 complete" in result.stdout, result.stderr
    assert kb.ctl_json("show", backup["id"])["targets"] == {
        "offsite": "complete", "nextcloud": "complete"}
    for name in ("offsite", "nextcloud"):
        found = asyncio.run(list_manifests(storages[name], "shop"))
        assert [m.id for m in found] == [backup["id"]]


def test_daemon_full_webdav_target_makes_the_backup_partial(
    kb: KbEnv, pg: PgServer, shop_db: str, s3_server: ServerProcess,
    dav_server: ServerProcess, tmp_path: Path,
) -> None:
    """507 from the WebDAV server: that target fails at once and names the status; the S3
    and local copies are complete, and nothing is left on the full one."""
    secrets = tmp_path / "secrets"
    nextcloud = dav_config(dav_server, secrets)
    kb.write_daemon(extra=toml_table("offsite", s3_config(s3_server, secrets))
                    + toml_table("nextcloud", nextcloud))
    kb.write_job("shop", f"""
targets = ["local", "offsite", "nextcloud"]
[[postgres]]
name = "shop"
dsn = "{pg.dsn(shop_db)}"
""")
    kb.start()
    dav_server.faults({"status": 507, "method": "PUT", "drain": True})
    try:
        result = kb.ctl("run", "shop", "--wait")
    finally:
        dav_server.faults()
    assert result.returncode == 1 and "is partial" in result.stderr, result.stderr
    [backup] = kb.ctl_json("backups")["items"]
    assert backup["status"] == "partial"
    assert backup["targets"]["local"] == backup["targets"]["offsite"] == "complete"
    assert "HTTP 507 Insufficient Storage on PUT shop/" in backup["targets"]["nextcloud"]
    storage = open_test_storage("nextcloud", nextcloud)
    assert asyncio.run(storage.list()) == []
