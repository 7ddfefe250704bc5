"""Per-channel voice activity of a two-channel recording.

Each channel is cut into frames (10, 20 or 30 ms) and every frame is judged twice:
by the WebRTC voice activity detector (webrtcvad-wheels: a small, kept C library
with binary wheels), and by an energy gate that keeps only frames louder than the
channel's own noise floor by ``margin_db`` (and than ``floor_dbfs``). The gate is
what keeps steady line noise, which the WebRTC detector alone may take for speech,
out of the speech. The frames then become segments: pauses shorter than the
hangover are bridged, and segments shorter than the minimum are dropped, so a click
or a breath is not speech and a pause between two words does not split a sentence.

The file is read in blocks with the standard ``wave`` module, so a call of hours
needs no more memory than a minute of it.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass

import numpy as np
import webrtcvad

RATES = (8000, 16000, 32000, 48000)  # what the WebRTC detector takes
BLOCK_SECONDS = 60


class RecordingError(Exception):
    """The recording cannot be analysed; ``state`` says why (missing | corrupt)."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class VadSettings:
    mode: int = 3  # 0 (least) .. 3 (most aggressive at calling a frame non-speech)
    frame_ms: int = 20
    min_speech_ms: int = 200
    hangover_ms: int = 700
    margin_db: float = 4.0
    floor_dbfs: float = -55.0


@dataclass(frozen=True)
class Segment:
    channel: str  # customer | agent
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Activity:
    duration: float
    rate: int
    segments: tuple[Segment, ...]  # both channels, by start

    def of(self, channel: str) -> list[Segment]:
        return [s for s in self.segments if s.channel == channel]


def analyse_file(path: str, customer: str = "left", settings: VadSettings | None = None) -> Activity:
    """The speech segments of both channels; ``customer`` is the left or right channel."""
    if customer not in ("left", "right"):
        raise ValueError(f"customer channel must be left or right, not {customer!r}")
    settings = settings or VadSettings()
    names = ("customer", "agent") if customer == "left" else ("agent", "customer")
    speech, db, rate, frames = _frame_decisions(path, settings)
    step = settings.frame_ms / 1000
    segments: list[Segment] = []
    for ch, name in enumerate(names):
        voiced = speech[ch] & _energy_gate(db[ch], settings)
        for start, end in smooth(voiced, step, settings):
            segments.append(Segment(name, round(start, 3), round(end, 3)))
    segments.sort(key=lambda s: (s.start, s.channel))
    return Activity(duration=round(frames / rate, 3), rate=rate, segments=tuple(segments))


def _open(path: str) -> wave.Wave_read:
    try:
        w = wave.open(path, "rb")
    except FileNotFoundError:
        raise RecordingError("missing", f"{path}: no such recording") from None
    except IsADirectoryError:
        raise RecordingError("missing", f"{path}: is a directory, not a recording") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise RecordingError("corrupt", f"{path}: not a readable WAV file: {exc}") from None
    problem = ""
    if w.getnchannels() != 2:
        problem = f"{w.getnchannels()} channel(s), not 2 (record with RECORD_STEREO=true)"
    elif w.getsampwidth() != 2:
        problem = f"{8 * w.getsampwidth()}-bit samples, not 16-bit PCM"
    elif w.getframerate() not in RATES:
        problem = f"{w.getframerate()} Hz, not one of {', '.join(map(str, RATES))}"
    if problem:
        w.close()
        raise RecordingError("corrupt", f"{path}: {problem}")
    return w


def _frame_decisions(path: str, settings: VadSettings) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per channel and frame: the detector's verdict and the frame's level in dBFS."""
    vad = webrtcvad.Vad(settings.mode)
    w = _open(path)
    rate = w.getframerate()
    n = rate * settings.frame_ms // 1000
    verdicts: list[list[bool]] = [[], []]
    levels: list[list[np.ndarray]] = [[], []]
    frames = 0
    try:
        while True:
            raw = w.readframes(n * (BLOCK_SECONDS * 1000 // settings.frame_ms))
            usable = len(raw) // 4 // n * n
            frames += len(raw) // 4
            if not usable:
                break
            pcm = np.frombuffer(raw[: usable * 4], dtype="<i2").reshape(-1, 2)
            for ch in (0, 1):
                mono = np.ascontiguousarray(pcm[:, ch])
                buf = mono.tobytes()
                size = 2 * n
                verdicts[ch] += [vad.is_speech(buf[i : i + size], rate) for i in range(0, len(buf), size)]
                levels[ch].append(_dbfs(mono.reshape(-1, n)))
    except (wave.Error, EOFError, OSError) as exc:
        raise RecordingError("corrupt", f"{path}: unreadable audio: {exc}") from None
    finally:
        w.close()
    speech = np.array([verdicts[0], verdicts[1]], dtype=bool).reshape(2, -1)
    db = np.array([np.concatenate(levels[ch]) if levels[ch] else np.zeros(0) for ch in (0, 1)]).reshape(2, -1)
    return speech, db, rate, frames


def _dbfs(frames: np.ndarray) -> np.ndarray:
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    return 10 * np.log10(np.maximum(power, 1e-3) / 32768.0**2)


def _energy_gate(db: np.ndarray, settings: VadSettings) -> np.ndarray:
    """Frames louder than the channel's noise floor (its quietest tenth) by the margin."""
    if not db.size:
        return np.zeros(0, dtype=bool)
    floor = float(np.percentile(db, 10))
    return db >= max(floor + settings.margin_db, settings.floor_dbfs)


def smooth(voiced: np.ndarray, step: float, settings: VadSettings) -> list[tuple[float, float]]:
    """Frame verdicts -> (start, end) seconds: pauses under the hangover bridged, short bursts dropped."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], voiced.astype(np.int8), [0]))))
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    merged: list[list[int]] = []
    max_gap = settings.hangover_ms / 1000 / step
    for run in runs:
        if merged and run[0] - merged[-1][1] < max_gap:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    shortest = settings.min_speech_ms / 1000 / step
    return [(a * step, b * step) for a, b in merged if b - a >= shortest]
