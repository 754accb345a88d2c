"""The job charts: valid SVG, one dot per run (thinned past MAX_DOTS), axes that fit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from kbackup.web.charts import MAX_DOTS, Point, _nice_max, chart, seconds_label, thin

pytestmark = pytest.mark.unit
SVG = "{http://www.w3.org/2000/svg}"
SINCE = datetime(2026, 9, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=90)


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def test_each_run_is_a_dot_with_its_tooltip_escaped() -> None:
    points = [Point(SINCE + timedelta(days=i), 100.0 * i, f"b{i} <&>", ok=i != 2)
              for i in range(5)]
    svg = parse(chart("size <x>", points, SINCE, UNTIL, lambda v: f"{v:.0f}"))
    dots = svg.findall(f"{SVG}circle")
    assert [d.find(f"{SVG}title").text for d in dots] == [f"b{i} <&>: {100 * i}"
                                                          for i in range(5)]
    assert [d.get("class") for d in dots].count("dot bad") == 1
    assert svg.find(f"{SVG}title").text == "size <x>"
    ys = [float(d.get("cy")) for d in dots]
    assert ys == sorted(ys, reverse=True)  # bigger values higher up
    assert svg.find(f"{SVG}polyline") is not None


def test_an_empty_period_says_so() -> None:
    svg = parse(chart("t", [], SINCE, UNTIL, str))
    assert not svg.findall(f"{SVG}circle")
    assert any(t.text == "nothing in this period" for t in svg.findall(f"{SVG}text"))


def test_many_runs_are_thinned_keeping_the_largest_and_the_failures() -> None:
    hourly = [Point(SINCE + timedelta(hours=h), float(h % 24), str(h), ok=h != 500)
              for h in range(90 * 24)]
    kept = thin(hourly, SINCE, UNTIL)
    assert len(kept) <= MAX_DOTS
    assert max(p.value for p in kept) == 23.0
    assert sum(not p.ok for p in kept) == 1
    assert thin(hourly[:10], SINCE, UNTIL) == hourly[:10]


@pytest.mark.parametrize(("value", "top"), [(0, 1), (0.3, 0.5), (7, 10), (13, 20), (1300, 2000),
                                           (49.9, 50), (51, 100)])
def test_the_axis_top_is_a_round_number_above_the_largest(value: float, top: float) -> None:
    assert _nice_max(value) == pytest.approx(top)


def test_seconds_labels() -> None:
    assert [seconds_label(v) for v in (0, 0.25, 42, 300, 9000)] == [
        "0 s", "0.2 s", "42 s", "5 min", "2.5 h"]
