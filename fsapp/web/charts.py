"""Server-rendered SVG charts for the console: stacked bars with axis labels and ``<title>`` tooltips.

No script and no inline style (the console's CSP): each part carries a ``class``
(its series' name) that ``static/style.css`` colours, and ``data-*`` attributes
with its numbers. Right to left (Persian), the first bar is on the right and the
value axis on the right; the SVG's own text direction stays left to right so
anchors keep their geometric sense, and Persian labels are shaped as usual.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

HEIGHT, TOP, PLOT, AXIS, PAD = 230, 10, 180, 52, 8


@dataclass
class Bar:
    key: str  # data-key: what the bar is (an ISO day, an hour)
    label: str  # under the bar ("" for none)
    title: str  # the tooltip's first line
    values: dict[str, int]


def stacked(bars: Sequence[Bar], series: Sequence[str], *, names: Callable[[str], str], num: Callable[[int], str],
            caption: str, rtl: bool = False, label_every: int = 1, width: int = 960) -> Markup:
    """Bars of ``series`` stacked bottom up; ``names`` labels a series, ``num`` writes a number."""
    step = max(6.0, min(48.0, (width - AXIS - PAD) / max(len(bars), 1)))
    total_width = AXIS + PAD + step * len(bars)
    top, tick = _scale(max((sum(b.values[s] for s in series) for b in bars), default=0))
    unit = PLOT / top

    def x(i: int) -> float:
        return total_width - AXIS - (i + 1) * step if rtl else AXIS + i * step

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" direction="ltr" '
             f'width="{total_width:.0f}" height="{HEIGHT}" viewBox="0 0 {total_width:.0f} {HEIGHT}" '
             f'aria-label="{escape(caption)}"><title>{escape(caption)}</title>']
    parts += _value_axis(top, tick, unit, num, total_width, rtl)
    for i, bar in enumerate(bars):
        parts.append(_bar(bar, series, x(i), step, unit, names, num, i % label_every == 0))
    parts.append("</svg>")
    return Markup("\n".join(parts))


def _scale(highest: int) -> tuple[int, int]:
    """The value axis' top and tick: whole numbers, at most five ticks above zero."""
    tick = 1
    for magnitude in (10**k for k in range(0, 12)):
        tick = next((m * magnitude for m in (1, 2, 5) if m * magnitude * 5 >= highest), 0)
        if tick:
            break
    return max(tick, tick * math.ceil(highest / tick)), tick


def _value_axis(top: int, tick: int, unit: float, num: Callable[[int], str], width: float, rtl: bool) -> list[str]:
    base = TOP + PLOT
    left, right = (PAD, width - AXIS) if rtl else (AXIS, width - PAD)
    text_x, anchor = (width - AXIS + 4, "start") if rtl else (AXIS - 4, "end")
    out = []
    for value in range(0, top + 1, tick):
        y = base - value * unit
        out.append(f'<line class="grid" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{text_x:.1f}" y="{y + 4:.1f}" text-anchor="{anchor}">'
                   f"{escape(num(value))}</text>")
    return out


def _bar(bar: Bar, series: Sequence[str], x: float, step: float, unit: float, names: Callable[[str], str],
         num: Callable[[int], str], labelled: bool) -> str:
    total = sum(bar.values[s] for s in series)
    tip = "\n".join([bar.title, f"{names('calls')}: {num(total)}", *(f"{names(s)}: {num(bar.values[s])}"
                                                                     for s in series)])
    data = " ".join(f'data-{s}="{bar.values[s]}"' for s in series)
    out = [f'<g class="bar" data-key="{escape(bar.key)}" data-total="{total}" {data}><title>{escape(tip)}</title>']
    y = float(TOP + PLOT)
    for s in series:
        h = bar.values[s] * unit
        if h:
            y -= h
            out.append(f'<rect class="{s}" x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                       f'height="{h:.1f}"/>')
    out.append(f'<rect class="hover" x="{x:.1f}" y="{TOP}" width="{step:.1f}" height="{PLOT}" fill-opacity="0"/>')
    if labelled and bar.label:
        out.append(f'<text class="axis" x="{x + step / 2:.1f}" y="{TOP + PLOT + 16}" '
                   f'text-anchor="middle">{escape(bar.label)}</text>')
    out.append("</g>")
    return "".join(out)
