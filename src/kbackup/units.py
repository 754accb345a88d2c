"""Human units used in config files and output: durations ("2h", "14d") and sizes ("10GiB").

Kept free of heavy imports so the CLI can format sizes and ages cheaply.
"""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_DURATION_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from "90s", "30m", "2h", "1h30m", "14d", "2w" or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30m', '2h' or '14d'")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("expected a positive duration")
        return float(value)
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("expected a duration like '30m', '2h' or '14d'")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return parse_duration(float(text))
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_SECONDS[match.group(2).lower()]
        pos = match.end()
    if pos != len(text) or total <= 0:
        raise ValueError(f"{value!r} is not a duration; expected e.g. '30m', '2h', '1h30m', '14d'")
    return total


def parse_size(value: str | int) -> int:
    """Bytes from "512MiB", "10GB", "4096" or a plain integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("expected a non-negative size")
        return value
    match = _SIZE.match(str(value))
    if not match or match.group(2).lower() not in _SIZE_FACTORS:
        raise ValueError(f"{value!r} is not a size; expected e.g. '512MiB' or '10GB'")
    return int(float(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()])


def format_size(num: int | float | None) -> str:
    if num is None:
        return "-"
    size = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
