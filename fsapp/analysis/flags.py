"""Which of a call's figures cross the ``[analysis]`` thresholds (a threshold of 0 is off)."""

from __future__ import annotations

from typing import Any

from fsapp.config import AnalysisConfig

# flag name -> (figure, threshold key, crossed when the figure is above (+1) or below (-1) it)
RULES: dict[str, tuple[str, str, int]] = {
    "long_silence": ("longest_silence_seconds", "long_silence_seconds", +1),
    "overtalk": ("overtalk_ratio", "max_overtalk_ratio", +1),
    "agent_share": ("agent_share", "max_agent_share", +1),
    "low_mos": ("mos", "min_mos", -1),
    "long_hold": ("hold_seconds", "max_hold_seconds", +1),
}
NAMES = tuple(RULES)


def flags(figures: dict[str, Any], cfg: AnalysisConfig) -> list[str]:
    """The names of the rules ``figures`` break (figures it lacks break none)."""
    out = []
    for name, (figure, key, sense) in RULES.items():
        limit = getattr(cfg, key)
        value = figures.get(figure)
        if not limit or value is None:
            continue
        if (value > limit) if sense > 0 else (value < limit):
            out.append(name)
    return out
