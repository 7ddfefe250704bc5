"""A call's timeline as SVG: both channels' speech, with the silences and the overtalk marked.

For a web console: ``timeline(figures)`` takes what ``metrics.measure`` returns (or a
``call_analysis`` row's duration and segments) and returns one self-contained ``<svg>``.
Each element carries a ``class`` (speech customer | speech agent | silence | overtalk)
and ``data-start``/``data-end`` seconds, for styling and for tooltips.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

from fsapp.analysis.metrics import gaps, intersect, union

WIDTH, LANE, LEFT, TOP = 1000, 28, 80, 10
COLOURS = {"customer": "#2b7bb9", "agent": "#3a9d5d", "silence": "#e6e6e6", "overtalk": "#d9534f"}


def timeline(figures: dict[str, Any], *, width: int = WIDTH) -> str:
    duration = float(figures.get("duration_seconds") or 0.0)
    segments = figures.get("segments") or []
    lanes = {name: [(float(s["start"]), float(s["end"])) for s in segments if s["channel"] == name]
             for name in ("customer", "agent")}
    silences = gaps(lanes["customer"] + lanes["agent"], duration)
    overtalk = intersect(union(lanes["customer"]), union(lanes["agent"]))
    scale = (width - LEFT - 10) / duration if duration else 0.0
    height = TOP + 2 * LANE + 30

    def rect(kind: str, a: float, b: float, y: float, h: float, css: str) -> str:
        x, w = LEFT + a * scale, max((b - a) * scale, 0.5)
        return (f'<rect class={quoteattr(css)} x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[kind]}" data-start="{a:.2f}" data-end="{b:.2f}"><title>{kind} '
                f"{a:.2f}-{b:.2f} s</title></rect>")

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">']
    parts += [rect("silence", a, b, TOP, 2 * LANE, "silence") for a, b in silences]
    for i, name in enumerate(("customer", "agent")):
        y = TOP + i * LANE
        parts.append(f'<text x="4" y="{y + LANE * 0.65:.1f}">{name}</text>')
        parts += [rect(name, a, b, y + 4, LANE - 8, f"speech {name}") for a, b in lanes[name]]
    parts += [rect("overtalk", a, b, TOP + LANE - 3, 6, "overtalk") for a, b in overtalk]
    axis_y = TOP + 2 * LANE + 16
    step = _tick(duration)
    t = 0.0
    while step and t <= duration + 1e-9:
        parts.append(f'<text x="{LEFT + t * scale:.1f}" y="{axis_y}" text-anchor="middle">{_clock(t)}</text>')
        t += step
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _tick(duration: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 10:
            return float(step)
    return 7200.0 if duration else 0.0


def _clock(t: float) -> str:
    s = int(round(t))
    return f"{s // 60}:{s % 60:02}"
