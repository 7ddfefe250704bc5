"""What the analysis of one recorded call costs in CPU.

Builds a two-channel 8 kHz 16-bit recording of ``--minutes`` (default 10): espeak-ng
turns laid alternately on the customer's and the agent's channel with pauses, some
overlapping, over line noise, like a real call; then times ``fsapp analyse``'s own
path (read the WAV, voice activity per channel, the figures) with the process's CPU
clock, median of ``--repeat`` runs, and checks the turns were found where they were
laid. Prints one JSON object with the figures and the machine.

    python bench/analysis_bench.py [--minutes 10] [--repeat 5] [--rate 8000] [--noise -50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from fsapp.analysis import worker  # noqa: E402
from fsapp.config import AnalysisConfig  # noqa: E402
from harness import recordings  # noqa: E402

LINES = [
    ("left", "Hello, I am calling about my bill for last month."),
    ("right", "Of course. May I have your customer number please?"),
    ("left", "Yes, it is four five six seven eight."),
    ("right", "Thank you, one moment while I look at your account."),
    ("left", "I think I was charged twice for the same call."),
    ("right", "I see it here, I will send you a payment link for the difference."),
]


def build(path: Path, minutes: float, rate: int, tmp: Path, noise: float) -> list[tuple[str, float, float]]:
    """Lay the lines in turn (a 0.8 s pause, every fifth turn overlapping the last) for ``minutes``."""
    voices = [(side, recordings.speech(text, tmp, voice="en-us" if side == "left" else "en-gb+f3", rate=rate))
              for side, text in LINES]
    placements, at, i = [], 0.5, 0
    while True:
        side, x = voices[i % len(voices)]
        if at + len(x) / rate > minutes * 60 - 0.5:
            break
        placements.append((side, at, x))
        at += len(x) / rate + (-0.6 if i % 5 == 4 else 0.8)
        i += 1
    return recordings.build(path, placements, minutes * 60, noise_dbfs=noise, rate=rate)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rate", type=int, default=8000)
    p.add_argument("--noise", type=float, default=-50.0, help="line noise on both channels, dBFS")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wav = tmp / "call.wav"
        truth = build(wav, args.minutes, args.rate, tmp, args.noise)
        cfg = AnalysisConfig()
        cpu = []
        for _ in range(args.repeat):
            started = time.process_time()
            figures = worker.analyse_recording(str(wav), "left", cfg)
            cpu.append(time.process_time() - started)
        with wave.open(str(wav)) as w:
            frames = w.getnframes()
    found = [(s["channel"], s["start"], s["end"]) for s in figures["segments"]]
    want = [("customer" if side == "left" else "agent", a, b) for side, a, b in truth]
    errors = _edge_errors(found, want)
    print(json.dumps({
        "recording": {"minutes": args.minutes, "rate": args.rate, "channels": 2, "frames": frames,
                      "noise_dbfs": args.noise, "turns_laid": len(truth)},
        "cpu_seconds": {"median": round(statistics.median(cpu), 3), "min": round(min(cpu), 3),
                        "max": round(max(cpu), 3), "runs": args.repeat},
        "accuracy": {"turns_found": len(found), "turns_matched": errors["matched"],
                     "worst_edge_error_seconds": errors["worst"], "mean_edge_error_seconds": errors["mean"]},
        "figures": {k: figures[k] for k in ("silence_seconds", "overtalk_seconds", "overtalk_count")}
                   | {"customer_talk_seconds": figures["customer"]["talk_seconds"],
                      "agent_talk_seconds": figures["agent"]["talk_seconds"]},
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "system": platform.platform()},
    }, indent=1))


def _edge_errors(found: list[tuple[str, float, float]], want: list[tuple[str, float, float]]) -> dict[str, float]:
    """Each laid turn against the found segment of its channel that overlaps it most."""
    edges, matched = [], 0
    for ch, a, b in want:
        best = max((s for s in found if s[0] == ch), key=lambda s: min(b, s[2]) - max(a, s[1]), default=None)
        if best is None or min(b, best[2]) <= max(a, best[1]):
            continue
        matched += 1
        edges += [abs(best[1] - a), abs(best[2] - b)]
    return {"matched": matched, "worst": round(max(edges, default=0.0), 3),
            "mean": round(float(np.mean(edges)) if edges else 0.0, 3)}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
