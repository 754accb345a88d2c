"""A job's history as small inline SVG charts, drawn on the server.

No JavaScript charting library: a chart is a time axis, a value axis and one dot per run
(joined by a line), each dot with a <title> the browser shows on hover. The pages stay
readable without JavaScript and nothing has to be vendored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markupsafe import Markup


WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 14, 30  # room for the axis labels
MAX_DOTS = 360  # more runs than this (hourly backups) are drawn as the largest per slot


@dataclass(frozen=True)
class Point:
    when: datetime
    value: float
    label: str  # which backup: the dot's tooltip, with its value
    ok: bool = True  # drawn red when False (a failed or partial run)


def _nice_max(value: float) -> float:
    """The top of the value axis: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 100 if value >= 1 else 0.1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def thin(points: list[Point], since: datetime, until: datetime) -> list[Point]:
    """At most MAX_DOTS points: the largest of each time slot, red if any of it failed."""
    if len(points) <= MAX_DOTS:
        return points
    span = max((until - since).total_seconds(), 1.0)
    slots: dict[int, tuple[Point, bool]] = {}  # the largest point of each slot, all ok?
    for p in points:
        slot = int(MAX_DOTS * (p.when - since).total_seconds() / span)
        kept = slots.get(slot)
        if kept is None:
            slots[slot] = (p, p.ok)
        elif p.value > kept[0].value or not p.ok:
            slots[slot] = (p if p.value > kept[0].value else kept[0], kept[1] and p.ok)
    return [p if ok == p.ok else Point(p.when, p.value, p.label, ok)
            for p, ok in (slots[slot] for slot in sorted(slots))]


def seconds_label(value: float) -> str:
    """An axis label in seconds: tenths below 10 s, minutes and hours above 2 minutes."""
    if value == 0:
        return "0 s"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def chart(title: str, points: list[Point], since: datetime, until: datetime,
          fmt: Callable[[float], str]) -> Markup:
    """One chart: `points` over [since, until], values labelled with `fmt`."""
    points = thin(points, since, until)
    span = max((until - since).total_seconds(), 1.0)
    top = _nice_max(max((p.value for p in points), default=0.0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(when: datetime) -> float:
        return LEFT + inner_w * min(max((when - since).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return TOP + inner_h * (1 - value / top)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
             f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for step in range(5):  # value grid and labels: 0, 1/4 .. top
        value = top * step / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}"'
                     f' y2="{y(value):.1f}"/><text class="axis" x="{LEFT - 6}"'
                     f' y="{y(value) + 4:.1f}" text-anchor="end">{escape(fmt(value))}</text>')
    for step in range(4):  # time labels: since .. until in thirds
        when = since + (until - since) * step / 3
        anchor = "start" if step == 0 else ("end" if step == 3 else "middle")
        parts.append(f'<text class="axis" x="{x(when):.1f}" y="{HEIGHT - 8}"'
                     f' text-anchor="{anchor}">{when:%Y-%m-%d}</text>')
    if not points:
        parts.append(f'<text class="empty" x="{LEFT + inner_w / 2}" y="{TOP + inner_h / 2}"'
                     ' text-anchor="middle">nothing in this period</text>')
    elif len(points) > 1:
        path = " ".join(f"{x(p.when):.1f},{y(p.value):.1f}" for p in points)
        parts.append(f'<polyline class="line" points="{path}"/>')
    radius = 3.5 if len(points) <= 90 else 2.2
    for p in points:
        tip = escape(f"{p.label}: {fmt(p.value)}")
        parts.append(f'<circle class="{"dot" if p.ok else "dot bad"}" cx="{x(p.when):.1f}"'
                     f' cy="{y(p.value):.1f}" r="{radius}"><title>{tip}</title></circle>')
    parts.append("</svg>")
    from markupsafe import Markup  # jinja2's: loaded with the templates, at the first page

    return Markup("".join(parts))
