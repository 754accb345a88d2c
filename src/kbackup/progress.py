"""Live state of a running job, shared by the runner, the API (`status`) and sd_notify."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Progress:
    phase: str = "queued"
    component: str | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    components_done: int = 0
    components_total: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float | None:
        if not self.bytes_total:
            return None
        return min(100.0, 100.0 * self.bytes_done / self.bytes_total)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["percent"] = None if self.percent is None else round(self.percent, 1)
        return data
