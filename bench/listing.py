"""How long listing the backups of a big repository takes: N complete backups (a manifest
each) on local storage and on a local S3 server (moto), then `list_manifests` (what
`kbackupctl catalog rescan` does: list + read every manifest) and the catalog query behind
`kbackupctl backups` after the rescan.

Usage: .venv/bin/python bench/listing.py [--count 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's real moto server

from kbackup.catalog import Catalog  # noqa: E402
from kbackup.repository import Component, Manifest, list_manifests, write_manifest  # noqa: E402
from kbackup.storage import Storage  # noqa: E402
from kbackup.storage.local import LocalStorage  # noqa: E402


def manifest(index: int) -> Manifest:
    started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=index)
    backup_id = started.strftime("%Y%m%dT%H%M%SZ") + f"-{index % 0xFFFFFF:06x}"
    component = Component(name="shop", kind="postgres", file="db-shop.dump.zst",
                          size_bytes=1000, sha256="0" * 64, raw_bytes=5000,
                          compression={"algorithm": "zstd", "level": 1},
                          database={"row_counts": {f"public.t{i}": i for i in range(20)}})
    return Manifest(id=backup_id, job="shop", trigger="scheduled", host="bench",
                    kbackup_version="bench", started_at=started.isoformat(),
                    finished_at=started.isoformat(), components=[component])


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
    return {"write_s": round(filled, 2), "rescan_list_and_read_s": round(listed, 2),
            "catalog_query_s": round(queried, 3)}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--no-s3", action="store_true", help="local storage only")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kblist") as tmp:
        base = Path(tmp)
        results["local"] = await measure(LocalStorage("local", base / "store"), args.count,
                                         base / "state-local")
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
