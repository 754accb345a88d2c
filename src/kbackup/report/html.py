"""The report as an HTML mail body: the job and target tables, each job's sizes as a small
PNG bar chart referenced by Content-ID (`<img src="cid:...">`, attached beside the HTML in
multipart/related by alerts/email.py), the open alerts. jinja2 with autoescape: job names,
reasons and host names are data, never markup. Inline styles only: mail clients drop <style>.
"""

from __future__ import annotations

from typing import Any

import jinja2

from kbackup.report.chart import bar_chart
from kbackup.report.text import (
    JOB_HEADINGS,
    TARGET_HEADINGS,
    job_rows,
    period,
    target_rows,
)

CELL = "padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap"
TEMPLATE = """<!DOCTYPE html>
<html><body style="font-family:sans-serif;font-size:14px;color:#222">
<h2 style="font-size:18px">kbackup report for {{ report.host }}</h2>
<p>{{ period }}</p>
{% if jobs %}
<table style="border-collapse:collapse" id="jobs">
<tr>{% for h in job_headings %}<th style="{{ cell }}">{{ h }}</th>{% endfor %}</tr>
{% for row, cid in jobs %}
<tr>{% for value in row %}<td style="{{ cell }}">{{ value }}</td>{% endfor %}
<td style="{{ cell }}"><img src="cid:{{ cid }}" alt="sizes" height="24"></td></tr>
{% endfor %}
</table>
{% else %}<p>No jobs configured.</p>{% endif %}
<h3 style="font-size:15px">Storage</h3>
<table style="border-collapse:collapse" id="targets">
<tr>{% for h in target_headings %}<th style="{{ cell }}">{{ h }}</th>{% endfor %}</tr>
{% for row in targets %}
<tr>{% for value in row %}<td style="{{ cell }}">{{ value }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<h3 style="font-size:15px">Open alerts</h3>
{% if report.alerts %}<ul>
{% for a in report.alerts %}<li><b>{{ a.severity | upper }}</b> {{ a.key }}: {{ a.reason }}</li>
{% endfor %}</ul>{% else %}<p>No open alerts.</p>{% endif %}
<p style="color:#888;font-size:12px">-- kbackupd on {{ report.host }}</p>
</body></html>
"""
_TEMPLATE: jinja2.Template | None = None


def render_html(report: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    """The HTML and its images: {Content-ID: PNG bytes}, one bar chart per job."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = jinja2.Environment(autoescape=True).from_string(TEMPLATE)
    images = {f"sizes-{index}@kbackup": bar_chart(job["sizes"])
              for index, job in enumerate(report["jobs"])}
    html = _TEMPLATE.render(
        report=report, period=period(report), cell=CELL,
        job_headings=[*JOB_HEADINGS, "SIZES"], target_headings=TARGET_HEADINGS,
        jobs=list(zip(job_rows(report), images, strict=True)), targets=target_rows(report))
    return html, images
