"""The line's quality as FreeSWITCH measured it, from the call's CHANNEL_HANGUP_COMPLETE.

fsapp's socket controls the caller's leg (A), so these are the figures of what
FreeSWITCH received from the caller: ``rtp_audio_in_mos`` (1-5),
``rtp_audio_in_quality_percentage``, ``rtp_audio_in_flaw_total``, the jitter
variances (ms²) and loss rate, and the leg's time on hold (``hold_accum_ms``).
"""

from __future__ import annotations

import math
from typing import Any


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def line_quality(hangup: Any) -> dict[str, Any]:
    """The figures FreeSWITCH gave (absent ones left out), from an ``esl.Event`` or None."""
    if hangup is None:
        return {}
    var = hangup.var
    jitter = _number(var("rtp_audio_in_jitter_max_variance"))
    hold_ms = _number(var("hold_accum_ms"))
    flaws = _number(var("rtp_audio_in_flaw_total"))
    out = {
        "mos": _number(var("rtp_audio_in_mos")),
        "quality_percentage": _number(var("rtp_audio_in_quality_percentage")),
        "flaws": int(flaws) if flaws is not None else None,
        "jitter_ms": round(math.sqrt(jitter), 2) if jitter is not None else None,
        "jitter_loss_rate": _number(var("rtp_audio_in_jitter_loss_rate")),
        "hold_seconds": round(hold_ms / 1000, 3) if hold_ms is not None else None,
    }
    return {k: v for k, v in out.items() if v is not None}
