"""How fast the dashboard answers with a big catalog: N backups of one job (hourly, the newest
just now, every 7th verified, a weekly restore-test, a few failed), a real kbackupd on that
catalog, then GET /, /backups, an old page of /backups and /jobs/shop on its Unix socket,
median of a few calls each (the goal: the overview and the backups page under 100 ms with
10 000 backups).

With --screenshots DIR, also the overview and the job's charts in a headless Chromium (as
docs/screenshots/ has them).

Usage: .venv/bin/python bench/dashboard.py [--count 10000] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' browser and socket forwarder

from kbenv import KbEnv  # noqa: E402
from listing import manifest  # noqa: E402

from kbackup.catalog import Catalog  # noqa: E402
from kbackup.ctl.client import http_request  # noqa: E402


def fill(catalog: Catalog, job: str, count: int, now: datetime, scale: float = 1.0) -> None:
    """count backups of `job`, one an hour up to now, with sizes and times that vary."""
    first = now - timedelta(hours=count)
    for index in range(count):
        m = manifest(index)
        started = first + timedelta(hours=index, minutes=3)
        took = 150 + 40 * math.sin(index / 9) + (index % 24) * 2
        size = int(scale * (1.1e9 + 0.25e9 * index / count + 30e6 * math.sin(index / 30)))
        backup_id = started.strftime("%Y%m%dT%H%M%SZ") + f"-{job[:2]}{index:04x}"
        status = "failed" if index % 97 == 5 else "complete"
        manifest_json = m.model_dump(mode="json")
        manifest_json.update(id=backup_id, job=job, started_at=started.isoformat(),
                             finished_at=(started + timedelta(seconds=took)).isoformat())
        catalog.upsert_backup(backup_id, job, status, "scheduled", started.isoformat(),
                              (started + timedelta(seconds=took)).isoformat(), size,
                              {"local": status}, manifest_json if status == "complete" else None)
        if status == "complete" and (count - 1 - index) % 7 == 0:  # the newest one too
            seconds = 40 + 10 * math.sin(index / 50) if (count - 1 - index) % 168 == 0 else None
            catalog.add_verification(f"v-{backup_id}", backup_id, job,
                                     "restore-test" if seconds else "checksum",
                                     started + timedelta(minutes=10), True, None,
                                     {"objects": 4}, restore_seconds=seconds)
    catalog.db.execute("UPDATE verifications SET finished_at = substr(id, 3, 4) || '-' ||"
                       " substr(id, 7, 2) || '-' || substr(id, 9, 2) || 'T' ||"
                       " substr(id, 12, 2) || ':30:00Z'")  # at the backup's hour, not now


def median_ms(path: str, socket: str, times: int, expect: str) -> float:
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        status, body = http_request(socket, "GET", path)
        seconds.append(time.perf_counter() - began)
        assert status == 200 and expect in str(body), (path, status, str(body)[:300])
    return round(statistics.median(seconds) * 1000, 1)


def screenshots(kb: KbEnv, folder: Path) -> None:
    from browser import chromium, full_page
    from unix_forward import Forwarder

    folder.mkdir(parents=True, exist_ok=True)
    forwarder = Forwarder(kb.socket)
    try:
        with chromium(1100, 800) as driver:
            driver.get(forwarder.url + "/")
            full_page(driver, folder / "overview.png")
            driver.set_window_size(1100, 800)
            driver.get(forwarder.url + "/jobs/shop")
            full_page(driver, folder / "job-charts.png")
    finally:
        forwarder.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--screenshots", type=Path, help="save the overview and job pages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kbdash") as tmp:
        base = Path(tmp)
        began = time.perf_counter()
        catalog = Catalog(base / "state")
        fill(catalog, "shop", args.count, datetime.now(UTC))
        for job, count, scale in (("crm", 400, 0.2), ("wiki", 200, 0.05)):  # beside it
            fill(catalog, job, count, datetime.now(UTC), scale)
        catalog.close()
        filled = time.perf_counter() - began
        kb = KbEnv(base)
        for job in ("shop", "crm", "wiki"):
            (kb.jobs_dir / f"{job}.toml").write_text(
                'schedules = [ { cron = "3 * * * *", tag = "hourly" } ]\n'
                f'targets = ["local"]\n\n[[files]]\nname = "pdfs"\npath = "{base}"\n')
        kb.start()
        try:
            socket = str(kb.socket)
            results = {
                "overview_ms": median_ms("/", socket, 15, 'id="job-shop"'),
                "backups_ms": median_ms("/backups", socket, 15, "data-backup="),
                "backups_page_150_ms": median_ms("/backups?job=shop&page=150", socket, 15,
                                                 "data-backup="),
                "job_charts_ms": median_ms("/jobs/shop", socket, 9, "<svg"),
                "progress_json_ms": median_ms("/progress.json", socket, 15, "running"),
            }
            if args.screenshots:
                screenshots(kb, args.screenshots)
        finally:
            kb.cleanup()
    print(f"{args.count} backups in the catalog (filled in {filled:.1f} s); median answer:")
    for name, value in results.items():
        print(f"  {name:22} {value} ms")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
