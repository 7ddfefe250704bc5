"""Two-channel test recordings: espeak-ng speech placed at known times, with line noise.

Each utterance is synthesised, resampled to the recording's rate and trimmed with sox
(as the shared recording was made), normalised, and laid on its channel at a known
time. The truth of a placement is the span of its samples above 1% of full scale.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

RATE = 8000


def speech(text: str, tmp: Path, *, voice: str = "en-us", rate: int = RATE) -> np.ndarray:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:  # .ci/run installs both; a test skips, the analysis bench stops and says why
        why = f"generated speech needs {' and '.join(missing)} (apt-get install {' '.join(missing)})"
        if "pytest" in sys.modules:
            import pytest

            pytest.skip(why)
        raise RuntimeError(why)
    raw, out = tmp / "raw.wav", tmp / "utt.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out),
                    "silence", "1", "0.01", "1%", "reverse", "silence", "1", "0.01", "1%", "reverse"], check=True)
    with wave.open(str(out)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return x / np.max(np.abs(x)) * 0.5 * 32767  # -6 dBFS peak


def build(path: Path, placements: list[tuple[str, float, np.ndarray]], duration: float, *,
          noise_dbfs: float | None = -50.0, rate: int = RATE, seed: int = 1) -> list[tuple[str, float, float]]:
    """Write a stereo WAV (left, right); return the truth: (side, start, end) seconds per utterance."""
    n = int(duration * rate)
    chans = np.zeros((2, n))
    truth = []
    for side, at, x in placements:
        ch = 0 if side == "left" else 1
        i = int(at * rate)
        chans[ch, i : i + len(x)] += x[: n - i]
        loud = np.flatnonzero(np.abs(x) > 0.01 * 32767)
        truth.append((side, at + loud[0] / rate, at + (loud[-1] + 1) / rate))
    if noise_dbfs is not None:
        rng = np.random.default_rng(seed)
        chans += rng.normal(0, 32767 * 10 ** (noise_dbfs / 20), chans.shape)
    pcm = np.clip(np.round(chans), -32768, 32767).astype("<i2").T.copy()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return sorted(truth, key=lambda t: t[1])
