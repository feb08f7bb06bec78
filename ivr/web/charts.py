"""Inline SVG charts (no JavaScript, no library): the page is complete as the server sends it."""

from __future__ import annotations

import datetime as dt
from html import escape


def confirmations_svg(start: dt.datetime | None, times: list[dt.datetime], members: int, *,
                      width: int = 560, height: int = 180, label: str = "") -> str:
    """A step line of confirmations so far against seconds since the campaign started."""
    pad_l, pad_r, pad_t, pad_b = 40, 12, 10, 28
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max(members, len(times), 1)
    origin = start or (times[0] if times else None)
    span_s = max(((times[-1] - origin).total_seconds() if times and origin else 0.0) * 1.05, 10.0)

    def x(seconds: float) -> float:
        return pad_l + plot_w * min(max(seconds, 0.0), span_s) / span_s

    def y(count: int) -> float:
        return pad_t + plot_h * (1 - count / top)

    points = [(x(0), y(0))]
    for n, at in enumerate(times, start=1):
        sx = x((at - origin).total_seconds()) if origin else x(0)
        points.append((sx, y(n - 1)))
        points.append((sx, y(n)))
    points.append((x(span_s), y(len(times))))
    path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
    ticks = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        seconds = span_s * frac
        ticks.append(f'<text x="{x(seconds):.1f}" y="{height - 8}" text-anchor="middle">{seconds:.0f} s</text>')
    return (
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{pad_l}" y1="{y(top):.1f}" x2="{width - pad_r}" y2="{y(top):.1f}" class="goal"/>'
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - pad_r}" y2="{pad_t + plot_h}" class="axis"/>'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" class="axis"/>'
        f'<text x="{pad_l - 6}" y="{y(top) + 4:.1f}" text-anchor="end">{top}</text>'
        f'<text x="{pad_l - 6}" y="{pad_t + plot_h + 4}" text-anchor="end">0</text>'
        f'<path d="{path}" class="line"/>{"".join(ticks)}</svg>'
    )
