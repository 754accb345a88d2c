"""Listings that scale: /v1/backups, /v1/runs and /v1/restores answer one page,
{items, total, limit, offset}, paged in SQL; kbackupctl shows the newest 50 unless --limit N
or --all, and says when more exist."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_api_validation import request

from conftest import KbEnv
from kbackup.catalog import Catalog
from kbackup.ctl import client as ctl_client
from kbackup.repository import Component, Manifest, write_manifest
from kbackup.storage.local import LocalStorage
from kbackup.views import backup_view


def manifest(job: str, index: int) -> Manifest:
    started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=index)
    component = Component(name="db", kind="postgres", file="db-db.dump.zst", size_bytes=10,
                          sha256="0" * 64, raw_bytes=40,
                          compression={"algorithm": "zstd", "level": 3},
                          database={"row_counts": {"public.t": index}})
    return Manifest(id=started.strftime("%Y%m%dT%H%M%SZ") + f"-{index:06x}", job=job,
                    trigger="scheduled", host="test", kbackup_version="test",
                    started_at=started.isoformat(), finished_at=started.isoformat(),
                    components=[component])


def fill(kb: KbEnv, jobs: dict[str, int]) -> list[Manifest]:
    """Manifests in the local storage, then `catalog rescan`: what a new server does."""
    names = [job for job, count in jobs.items() for _ in range(count)]
    made = [manifest(job, index) for index, job in enumerate(names)]

    async def write() -> None:
        storage = LocalStorage("local", kb.store)
        for item in made:
            await write_manifest(storage, item)

    asyncio.run(write())
    assert kb.ctl("catalog", "rescan").returncode == 0
    return sorted(made, key=lambda m: m.started_at, reverse=True)


def get(kb: KbEnv, path: str) -> Any:
    status, _, payload = request(kb, "GET", path)
    assert status == 200, payload
    return json.loads(payload)


def test_backups_are_paged_in_the_api_and_in_kbackupctl(kb: KbEnv, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    kb.write_job("shop", f'targets = ["local"]\n\n[[files]]\nname = "t"\npath = "{tree}"\n')
    kb.start()
    newest_first = fill(kb, {"shop": 80, "crm": 45})
    ids = [m.id for m in newest_first]

    page = get(kb, "/v1/backups")
    assert (page["total"], page["limit"], page["offset"]) == (125, 50, 0)
    assert [b["id"] for b in page["items"]] == ids[:50]
    # Pages put together are the whole list, in order, without gaps or repeats.
    pieces = [get(kb, f"/v1/backups?limit=40&offset={o}")["items"] for o in range(0, 125, 40)]
    assert [b["id"] for piece in pieces for b in piece] == ids
    assert get(kb, "/v1/backups?offset=125")["items"] == []
    crm = get(kb, "/v1/backups?job=crm&limit=10&offset=40")
    assert crm["total"] == 45
    assert [b["id"] for b in crm["items"]] == [m.id for m in newest_first if m.job == "crm"][40:]
    assert get(kb, "/v1/backups?status=failed")["total"] == 0
    assert get(kb, "/v1/backups?job=shop&status=complete&limit=1")["total"] == 80
    # A listing item is the same view as before paging (components summarized, no manifest).
    shown = get(kb, f"/v1/backups/{ids[0]}")
    item = page["items"][0]
    assert item == {k: v for k, v in shown.items() if k not in ("manifest", "verifications")}
    assert item["components"][0]["database"]["rows"] == 124

    listing = kb.ctl("backups")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 1 + 50 + 1
    assert lines[1].startswith(ids[0])
    assert lines[-1] == "showing 50 of 125 backups; --all or --limit N for more"
    lines = kb.ctl("backups", "crm", "--limit", "7").stdout.splitlines()
    assert len(lines) == 1 + 7 + 1
    assert lines[-1] == "showing 7 of 45 backups; --all or --limit N for more"
    lines = kb.ctl("backups", "--all").stdout.splitlines()
    assert len(lines) == 1 + 125 and "showing" not in lines[-1]
    everything = kb.ctl_json("backups", "--limit", "200")
    assert [b["id"] for b in everything["items"]] == ids
    assert (everything["total"], everything["limit"], everything["offset"]) == (125, 200, 0)
    assert kb.ctl_json("backups", "--all")["limit"] is None
    refused = kb.ctl("backups", "--limit", "0")
    assert refused.returncode == 2 and "expected a positive number" in refused.stderr
    assert kb.ctl("backups", "--all", "--limit", "5").returncode == 2


def test_runs_and_restores_are_paged(kb: KbEnv, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("a")
    kb.write_job("docs", f'targets = ["local"]\n\n[[files]]\nname = "t"\npath = "{tree}"\n')
    kb.start()
    for _ in range(3):
        assert kb.ctl("run", "docs", "--wait").returncode == 0
    runs = get(kb, "/v1/runs?limit=2")
    assert (runs["total"], len(runs["items"]), runs["limit"]) == (3, 2, 2)
    rest = get(kb, "/v1/runs?limit=2&offset=2")["items"]
    assert len({r["id"] for r in runs["items"] + rest}) == 3
    assert get(kb, "/v1/runs?job=nope") == {"items": [], "total": 0, "limit": 50, "offset": 0}
    lines = kb.ctl("runs", "--limit", "1").stdout.splitlines()
    assert lines[-1] == "showing 1 of 3 runs; --all or --limit N for more"
    assert len(kb.ctl_json("runs", "--all")["items"]) == 3
    assert get(kb, "/v1/restores") == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert kb.ctl("restores").stdout.splitlines()[-1].startswith("RESTORE")


def test_all_fetches_page_after_page(monkeypatch: Any) -> None:
    """--all past the daemon's largest page asks for the next pages until it has them all."""
    rows = [{"id": i} for i in range(25)]
    asked = []

    def call(self: ctl_client.Client, method: str, path: str, body: Any = None) -> Any:
        asked.append(path)
        query = dict(part.split("=") for part in path.split("?")[1].split("&"))
        limit, offset = int(query["limit"]), int(query["offset"])
        return {"items": rows[offset:offset + limit], "total": len(rows), "limit": limit,
                "offset": offset}

    monkeypatch.setattr(ctl_client, "PAGE_MAX", 10)
    monkeypatch.setattr(ctl_client.Client, "call", call)
    got = ctl_client.Client("/nowhere").listing("/v1/backups", "a b", None)
    assert got == {"items": rows, "total": 25, "limit": None, "offset": 0}
    assert asked == ["/v1/backups?limit=10&offset=0&job=a%20b",
                     "/v1/backups?limit=10&offset=10&job=a%20b",
                     "/v1/backups?limit=10&offset=20&job=a%20b"]
    asked.clear()
    assert len(ctl_client.Client("/nowhere").listing("/v1/runs", None, 15)["items"]) == 15
    assert asked == ["/v1/runs?limit=10&offset=0", "/v1/runs?limit=5&offset=10"]


def test_a_catalog_from_before_the_summary_column_is_listed(tmp_path: Path) -> None:
    """An existing catalog gains the components column; rows without it are summarized from
    their manifest when first listed."""
    made = manifest("shop", 3).model_dump(mode="json")
    with sqlite3.connect(tmp_path / "catalog.sqlite3") as db:
        db.execute("CREATE TABLE backups (id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT"
                   " NOT NULL, trigger TEXT NOT NULL, started_at TEXT NOT NULL, finished_at"
                   " TEXT, size_bytes INTEGER NOT NULL DEFAULT 0, targets TEXT NOT NULL DEFAULT"
                   " '{}', manifest TEXT, error TEXT)")
        db.execute("INSERT INTO backups VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (made["id"], "shop", "complete", "scheduled", made["started_at"],
                    made["finished_at"], 10, "{}", json.dumps(made), None))
    catalog = Catalog(tmp_path)
    [row] = catalog.backup_listing()
    assert json.loads(row["components"]) == backup_view(catalog.get_backup(made["id"]) or {}
                                                        )["components"]
    assert catalog.db.execute("SELECT components FROM backups").fetchone()[0] is not None
    catalog.close()
