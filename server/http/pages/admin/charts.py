"""The device page's health charts as inline SVG, drawn from data the domain returns (no query here)."""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup, escape

from server.domain.fleet import alerts as alert_service
from server.domain.fleet.queries import HealthPoint

__all__ = ["CHART_WINDOW", "health_charts", "svg_chart"]

CHART_WINDOW = timedelta(hours=24)
_CHART_CIRCLES_MAX = 300
_GIB = 1024**3


def svg_chart(
    samples: list[tuple[datetime, float]],
    *,
    series: str,
    label: str,
    start: datetime,
    end: datetime,
    y_max: float,
    thresholds: tuple[tuple[float, str], ...] = (),
) -> Markup:
    """A line chart as inline SVG (no script, no external resource): one circle per sample."""
    width, height, left, right, top, bottom = 640, 170, 44, 10, 18, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    span = (end - start).total_seconds() or 1.0
    y_max = y_max or 1.0

    def x(at: datetime) -> float:
        return left + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return top + plot_h * (1 - min(max(value / y_max, 0.0), 1.0))

    parts = [
        f'<svg class="chart" data-series="{series}" data-points="{len(samples)}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<text x="{left}" y="12" class="chart-label">{escape(label)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 4}" class="tick" text-anchor="end">{y_max:g}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" class="tick" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 4}" class="tick">{start.astimezone():%H:%M}</text>',
        f'<text x="{left + plot_w}" y="{height - 4}" class="tick" text-anchor="end">'
        f"{end.astimezone():%H:%M}</text>",
    ]
    for value, name in thresholds:
        if 0 <= value <= y_max:
            parts.append(
                f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_w}" y2="{y(value):.1f}" '
                f'class="threshold"/><text x="{left + plot_w - 2}" y="{y(value) - 3:.1f}" class="tick" '
                f'text-anchor="end">{escape(name)}</text>'
            )
    if samples:
        points = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in samples)
        parts.append(f'<polyline points="{points}" class="line"/>')
        if len(samples) <= _CHART_CIRCLES_MAX:
            parts.extend(
                f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="2.5" class="point"/>' for at, v in samples
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def health_charts(
    points: list[HealthPoint], t: dict[str, str], *, start: datetime, end: datetime
) -> list[Markup]:
    """Battery, free storage and backlog age from ``start`` to ``end``, labelled in the page's language."""
    battery = [(p.at, float(p.battery_pct)) for p in points if p.battery_pct is not None]
    free = [(p.at, p.free_bytes / _GIB) for p in points if p.free_bytes is not None]
    backlog = [(p.at, (p.oldest_pending_age_s or 0.0) / 3600) for p in points]
    free_max = max([v for _, v in free] + [alert_service.LOW_STORAGE_BYTES / _GIB]) * 1.1
    return [
        svg_chart(battery, series="battery", label=t["chart_battery"], start=start, end=end, y_max=100),
        svg_chart(
            free,
            series="free_storage",
            label=t["chart_free"],
            start=start,
            end=end,
            y_max=round(free_max, 1),
            thresholds=((alert_service.LOW_STORAGE_BYTES / _GIB, "2 GiB"),),
        ),
        svg_chart(
            backlog,
            series="backlog_age",
            label=t["chart_backlog"],
            start=start,
            end=end,
            y_max=max([24.0] + [v for _, v in backlog]),
            # JL-17: stored within 24 h; the alert fires at 20 h.
            thresholds=((alert_service.BACKLOG_ALERT_S / 3600, "20 h"), (24.0, "24 h")),
        ),
    ]
