"""How long listing the backups of a big repository takes: N complete backups (a manifest
each: a database with 40 tables, its globals, a file tree, the config snapshot) on local
storage and on a local S3 server (moto), then `list_manifests` (what `kbackupctl catalog
rescan` does: list + read every manifest) and the catalog query behind `kbackupctl backups`
after the rescan. Then a real kbackupd on that catalog (every 7th backup verified): GET
/v1/backups?limit=50 and ?limit=10000 on its socket, `kbackupctl backups` (the newest 50)
and `kbackupctl backups --all`, median of a few calls each.

Usage: .venv/bin/python bench/listing.py [--count 10000] [--no-s3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's real moto server

from kbenv import KbEnv  # noqa: E402

from kbackup.catalog import Catalog  # noqa: E402
from kbackup.ctl.client import http_request  # noqa: E402
from kbackup.repository import Component, Manifest, list_manifests, write_manifest  # noqa: E402
from kbackup.storage import Storage  # noqa: E402
from kbackup.storage.local import LocalStorage  # noqa: E402


def manifest(index: int) -> Manifest:
    started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=index)
    backup_id = started.strftime("%Y%m%dT%H%M%SZ") + f"-{index % 0xFFFFFF:06x}"
    zstd = {"algorithm": "zstd", "level": 3}
    components = [
        Component(name="shop", kind="postgres", file="db-shop.dump.zst",
                  size_bytes=52_000_000 + index, sha256=f"{index:064x}", raw_bytes=210_000_000,
                  compression=zstd,
                  database={"server_version": "16.4", "database_size": 260_000_000,
                            "row_counts": {f"public.table_{i}": i * 1000 for i in range(40)}}),
        Component(name="globals", kind="globals", file="globals.sql.zst", size_bytes=900,
                  sha256="1" * 64, raw_bytes=2400, compression=zstd),
        Component(name="pdfs", kind="files", file="files-pdfs.tar.zst",
                  size_bytes=800_000_000, sha256="2" * 64, raw_bytes=810_000_000,
                  compression=zstd, files={"file_count": 12_000, "total_bytes": 810_000_000},
                  index={"file": "files-pdfs.index.json.zst", "size_bytes": 400_000,
                         "sha256": "3" * 64}),
        Component(name="config", kind="config", file="config.json.zst", size_bytes=700,
                  sha256="4" * 64, raw_bytes=1900, compression=zstd),
    ]
    return Manifest(id=backup_id, job="shop", trigger="scheduled", host="bench",
                    kbackup_version="bench", started_at=started.isoformat(),
                    finished_at=(started + timedelta(minutes=3)).isoformat(),
                    components=components)


async def fill(storage: Storage, count: int) -> float:
    began = time.perf_counter()
    for start in range(0, count, 200):
        await asyncio.gather(*(write_manifest(storage, manifest(i))
                               for i in range(start, min(count, start + 200))))
    return time.perf_counter() - began


async def measure(storage: Storage, count: int, state: Path) -> dict[str, float]:
    filled = await fill(storage, count)
    began = time.perf_counter()
    found = await list_manifests(storage, "shop")
    listed = time.perf_counter() - began
    assert len(found) == count, len(found)
    catalog = Catalog(state)
    for item in found:
        catalog.upsert_backup(item.id, item.job, "complete", item.trigger, item.started_at,
                              item.finished_at, item.size_bytes, {storage.name: "complete"},
                              item.model_dump(mode="json"))
    began = time.perf_counter()
    rows = catalog.backups("shop")
    queried = time.perf_counter() - began
    assert len(rows) == count
    for row in rows[::7]:  # some verified, so the listing's verification lookup has work
        catalog.add_verification(f"v-{row['id']}", row["id"], "shop", "checksum",
                                 datetime.now(UTC), True, None, {"objects": 4})
    catalog.close()
    return {"write_s": round(filled, 2), "rescan_list_and_read_s": round(listed, 2),
            "catalog_query_s": round(queried, 3)}


def median_seconds(call: Any, times: int) -> float:
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return round(statistics.median(seconds), 3)


def measure_daemon(base: Path, count: int) -> dict[str, float]:
    """A real kbackupd on the catalog measure() filled (base/state, storage base/store)."""
    kb = KbEnv(base)
    (kb.jobs_dir / "shop.toml").write_text(
        f'targets = ["local"]\n\n[[files]]\nname = "pdfs"\npath = "{base}"\n')
    kb.start()
    try:
        def api(limit: int) -> None:
            status, body = http_request(str(kb.socket), "GET", f"/v1/backups?limit={limit}")
            page = json.loads(body)
            assert status == 200 and page["total"] == count, (status, body[:200])
            assert len(page["items"]) == min(limit, count)

        def ctl(*args: str) -> str:
            return kb.timed_ctl(*args)[1]

        first = ctl("backups")
        assert f"showing {min(50, count)} of {count} backups" in first, first[-300:]
        assert len(ctl("backups", "--all").splitlines()) == count + 1
        _, body = http_request(str(kb.socket), "GET", "/v1/backups?limit=10000")
        return {
            "api_limit_50_s": median_seconds(lambda: api(50), 9),
            "api_limit_10000_s": median_seconds(lambda: api(10_000), 5),
            "api_limit_10000_mb": round(len(body) / 1e6, 1),
            "kbackupctl_backups_s": median_seconds(lambda: ctl("backups"), 9),
            "kbackupctl_backups_all_s": median_seconds(lambda: ctl("backups", "--all"), 5),
            "kbackupctl_json_backups_all_s": median_seconds(
                lambda: ctl("--json", "backups", "--all"), 5),
        }
    finally:
        kb.cleanup()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--no-s3", action="store_true", help="local storage only")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kblist") as tmp:
        base = Path(tmp)
        results["local"] = await measure(LocalStorage("local", base / "store"), args.count,
                                         base / "state")
        results["kbackupd"] = measure_daemon(base, args.count)
        if not args.no_s3:
            from storage_servers import open_test_storage, running, s3_config

            with running("s3") as server:
                storage = open_test_storage("offsite", s3_config(server, base / "secrets"))
                results["s3 (moto)"] = await measure(storage, args.count, base / "state-s3")
    print(f"{args.count} backups")
    for name, figures in results.items():
        print(f"  {name:10} " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
