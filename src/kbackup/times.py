"""Times and durations as kbackup stores and shows them, in one place (stdlib only: the CLI
uses it). Stored times are ISO 8601 UTC with a `Z` ("2026-11-23T10:00:00Z", whole seconds);
durations are shown as their two largest units, a zero second one left out ("45s", "3m07s",
"30h01m", "26h", "8d18h"): hours up to 72, so a daily limit reads "26h", not "1d02h"."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """The stored form of a time: UTC, whole seconds, `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    """A stored (or any ISO 8601) time back, aware; None for None or ""; ValueError else."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_duration(seconds: float | None) -> str:
    """A duration for people: "45s", "3m07s", "11m", "30h01m", "26h", "8d18h", "9d"; "-" for
    None; negative ones with a leading "-"."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 0:
        return "-" + format_duration(-whole)
    minutes, secs = divmod(whole, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if minutes == 0:
        return f"{secs}s"
    if hours == 0:
        return _two(minutes, "m", secs, "s")
    if hours < 72:
        return _two(hours, "h", mins, "m")
    return f"{days}d" + (f"{hrs}h" if hrs else "")


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}" + (f"{small:02d}{small_unit}" if small else "")
