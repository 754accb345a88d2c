"""GET /metrics: the Prometheus text exposition format (version 0.0.4), written by hand.

Everything comes from the catalog and the last health evaluation, so a scrape costs a few
SQLite queries and never touches storage. Written without prometheus_client to keep the
daemon's dependencies small; the tests parse the output with prometheus_client's parser.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kbackup import __version__
from kbackup.health_facts import RANK, CheckResult, DiskStat, worst
from kbackup.times import parse_iso

if TYPE_CHECKING:
    from kbackup.alerts.store import AlertStore
    from kbackup.config import Config

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Sample = tuple[dict[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {_number(value)}" if text
                              else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _epoch(value: str | None) -> float | None:
    when: datetime | None = parse_iso(value)
    return when.timestamp() if when else None


def job_samples(config: Config, store: AlertStore) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {"success": [], "duration": [], "size": [], "ok": [],
                                      "restore": []}
    for job in sorted(config.jobs):
        tested = store.last_restore_test(job)
        if tested is not None:
            found["restore"].append(({"job": job}, float(tested["restore_seconds"])))
        good = store.last_good_backup(job)
        when = _epoch(good["finished_at"]) if good else None
        if when is not None:
            found["success"].append(({"job": job}, when))
        last = store.last_finished_backup_run(job)
        if last is not None:
            start, end = _epoch(last["started_at"]), _epoch(last["finished_at"])
            if start is not None and end is not None:
                found["duration"].append(({"job": job}, end - start))
            found["ok"].append(({"job": job}, 1.0 if last["status"] == "complete" else 0.0))
        newest = store.good_backups(job, 1)
        manifest: dict[str, Any] = (newest[0]["manifest"] or {}) if newest else {}
        for component in manifest.get("components", []):
            found["size"].append(({"job": job, "component": component["name"],
                                   "kind": component.get("kind", "")},
                                  float(component.get("size_bytes", 0))))
    return found


def render(config: Config, store: AlertStore, results: list[CheckResult],
           disks: list[DiskStat], checked_at: str | None = None) -> str:
    out = Exposition()
    out.family("kbackup_info", "gauge", "kbackupd version", [({"version": __version__}, 1)])
    checked = _epoch(checked_at)
    # The daemon's own heartbeat: a daemon that answers scrapes but whose monitor loop is
    # stuck keeps `up` at 1; this timestamp then goes stale (rule KbackupDaemonStuck).
    out.family("kbackup_health_checked_timestamp_seconds", "gauge",
               "When the daemon last evaluated health (Unix time; every minute)",
               [({}, checked)] if checked is not None else [])
    jobs = job_samples(config, store)
    out.family("kbackup_last_success_timestamp_seconds", "gauge",
               "End of the newest complete backup (Unix time)", jobs["success"])
    out.family("kbackup_last_duration_seconds", "gauge",
               "Duration of the last finished backup run", jobs["duration"])
    out.family("kbackup_last_run_success", "gauge",
               "1 if the last finished backup run completed, else 0", jobs["ok"])
    out.family("kbackup_last_size_bytes", "gauge",
               "Stored size of each component of the newest complete backup", jobs["size"])
    out.family("kbackup_restore_test_seconds", "gauge",
               "Duration of the last passed restore-test: the measured time to recover",
               jobs["restore"])
    out.family("kbackup_runs_total", "counter", "Finished runs by kind and result",
               [({"job": r["job"], "kind": r["kind"], "result": r["status"]}, r["n"])
                for r in store.run_counts()])
    firing = store.firing()
    out.family("kbackup_alerts_firing", "gauge", "Firing alerts by severity",
               [({"severity": s}, sum(1 for a in firing if a["severity"] == s))
                for s in ("warning", "critical")])
    out.family("kbackup_check_status", "gauge", "Each health check: 0 OK, 1 WARNING, 2 CRITICAL",
               [({"job": r.job or "", "check": r.check, "target": r.target or ""},
                 RANK[r.severity]) for r in results])
    per_job: dict[str, list[str]] = {}
    for r in results:
        per_job.setdefault(r.job or "", []).append(r.severity)
    out.family("kbackup_health_status", "gauge",
               "Worst check per job ('' = daemon-wide): 0 OK, 1 WARNING, 2 CRITICAL",
               [({"job": job}, RANK[worst(sev)]) for job, sev in sorted(per_job.items())])
    usable = [d for d in disks if d.free is not None]
    out.family("kbackup_disk_free_bytes", "gauge", "Free bytes on each filesystem written to",
               [({"path": d.path, "roles": ",".join(d.roles)}, d.free or 0) for d in usable])
    out.family("kbackup_disk_size_bytes", "gauge", "Size of each filesystem written to",
               [({"path": d.path, "roles": ",".join(d.roles)}, d.total or 0) for d in usable])
    return out.text()
