"""What a call's speech segments say: talk, silence, overtalk, interruptions.

All figures come from the two channels' segments (``vad.Activity``); times are
seconds from the recording's start. Silence is the time in the recording when
neither side speaks; overtalk the time when both do.
"""

from __future__ import annotations

from typing import Any

from fsapp.analysis.vad import Activity, Segment

Span = tuple[float, float]


def union(spans: list[Span]) -> list[Span]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def intersect(xs: list[Span], ys: list[Span]) -> list[Span]:
    out: list[Span] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a < b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def gaps(spans: list[Span], duration: float) -> list[Span]:
    """The stretches of [0, duration] that no span covers."""
    out: list[Span] = []
    at = 0.0
    for a, b in union(spans):
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if duration > at:
        out.append((at, duration))
    return out


def _total(spans: list[Span]) -> float:
    return round(sum(b - a for a, b in spans), 3)


def _interruptions(by: list[Span], other: list[Span]) -> int:
    """How many of ``by``'s turns start while ``other`` is talking."""
    return sum(1 for a, _ in by if any(x < a < y for x, y in other))


def _spans(segments: list[Segment]) -> list[Span]:
    return [(s.start, s.end) for s in segments]


def measure(activity: Activity, *, long_silence_seconds: float = 0.0) -> dict[str, Any]:
    """The call's figures; ``long_silences`` counts silences longer than ``long_silence_seconds``."""
    customer, agent = _spans(activity.of("customer")), _spans(activity.of("agent"))
    duration = activity.duration
    talk_c, talk_a = _total(customer), _total(agent)
    talked = talk_c + talk_a
    silences = gaps(customer + agent, duration)
    silence = _total(silences)
    overlap = intersect(union(customer), union(agent))
    longest = max((b - a for a, b in silences), default=0.0)
    return {
        "duration_seconds": duration,
        "customer": {"talk_seconds": talk_c, "share": round(talk_c / talked, 3) if talked else 0.0,
                     "interruptions": _interruptions(customer, agent), "turns": len(customer)},
        "agent": {"talk_seconds": talk_a, "share": round(talk_a / talked, 3) if talked else 0.0,
                  "interruptions": _interruptions(agent, customer), "turns": len(agent)},
        "silence_seconds": silence,
        "silence_ratio": round(silence / duration, 3) if duration else 0.0,
        "longest_silence_seconds": round(longest, 3),
        "long_silences": sum(1 for a, b in silences if long_silence_seconds and b - a > long_silence_seconds),
        "overtalk_seconds": _total(overlap),
        "overtalk_count": len(overlap),
        "overtalk_ratio": round(_total(overlap) / duration, 3) if duration else 0.0,
        "agent_customer_ratio": round(talk_a / talk_c, 3) if talk_c else None,
        "segments": [{"channel": s.channel, "start": s.start, "end": s.end} for s in activity.segments],
        "silences": [[round(a, 3), round(b, 3)] for a, b in silences],
        "overtalk": [[round(a, 3), round(b, 3)] for a, b in overlap],
    }
