"""The prompt pipeline (spec section 7).

A prompt ``group/name`` is played from ``<dir>/<language>/<group>/<rate>/<name>.wav``,
16-bit mono PCM, for each rate in ``RATES``: FreeSWITCH's multi-rate layout, where
mod_sndfile picks the file matching the channel's rate.

- ``build`` turns a designer's drop folder (``<language>/<group>/<name>.<ext>``, any
  common format) into that layout: mono, trimmed, normalised, both rates.
- ``check`` lists prompts that are missing or in the wrong format.
- ``tts`` renders placeholder prompts from ``<dir>/<language>/prompts.toml`` with
  espeak-ng, through the same conversion as ``build``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import tempfile
import tomllib
import warnings
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger()

RATES = (8000, 16000)
SOURCE_FORMATS = ("wav", "mp3", "ogg", "flac", "m4a")
MANIFEST_NAME = ".build-manifest.json"
CATALOGUE_NAME = "prompts.toml"
TTS_VOICES = {"fa": "fa", "en": "en"}

# Bumped when the conversion itself changes, so a re-run rebuilds everything.
_PIPELINE_VERSION = 2
_PART = re.compile(r"[A-Za-z0-9_-]+")
_PART_RULE = "ASCII letters (a-z, A-Z), digits, '_' or '-'"
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class SoundsError(Exception):
    """A problem the operator must fix before anything can be done (missing tool, folder, catalogue)."""


class _FileError(Exception):
    """A problem with one file; reported for that file while the others go on."""


# -- names and paths -----------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """``"club/welcome"`` -> ``("club", "welcome")``; ValueError for anything else."""
    parts = name.split("/")
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
        raise ValueError(f"{name!r} is not a prompt name (group/name, each part {_PART_RULE})")
    return parts[0], parts[1]


def prompt_path(sounds_dir: str | os.PathLike[str], language: str, name: str, rate: int | None = 8000) -> Path:
    """The file of prompt ``name`` at ``rate``.

    ``rate=None`` gives the rate-less path (``<dir>/<language>/<group>/<name>.wav``)
    that FreeSWITCH resolves to the folder matching the channel's rate.
    """
    group, base = split_name(name)
    folder = Path(sounds_dir) / language / group
    if rate is not None:
        folder = folder / str(rate)
    return folder / f"{base}.wav"


# -- WAV headers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _WavFormat:
    format_tag: int
    channels: int
    rate: int
    bits: int
    data_bytes: int | None


def _read_wav_format(path: Path) -> _WavFormat:
    """The fmt chunk of a RIFF/WAVE file, without reading its samples."""
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise _FileError("not a WAV file (no RIFF/WAVE header)")
        found: tuple[int, int, int, int] | None = None
        data_bytes = None
        while data_bytes is None:
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                body = f.read(size)
                if len(body) < 16:
                    raise _FileError("WAV fmt chunk is truncated")
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
                if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack_from("<H", body, 24)[0]  # first bytes of the sub-format GUID
                found = (tag, channels, rate, bits)
                f.seek(size & 1, os.SEEK_CUR)
            elif chunk_id == b"data":
                data_bytes = size
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)
    if found is None:
        raise _FileError("WAV file has no fmt chunk")
    return _WavFormat(*found, data_bytes=data_bytes)


# -- conversion ----------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What a source file was before conversion."""

    format: str
    rate: int
    channels: int
    bits: int | None = None  # None for compressed formats

    def describe(self) -> str:
        width = f" {self.bits}-bit" if self.bits else ""
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{self.format} {self.rate} Hz{width} {layout}"


@dataclass(frozen=True)
class _Settings:
    silence_thresh_dbfs: float
    loudness_lufs: float
    peak_dbtp: float
    keep_silence_ms: int
    rates: tuple[int, ...]


@dataclass(frozen=True)
class _Converted:
    by_rate: dict[int, bytes]  # 16-bit mono PCM samples at each rate
    trimmed_start_ms: int
    trimmed_end_ms: int
    gain_db: float
    peak_limited: bool
    duration_ms: int


def _audio() -> Any:
    """pydub, imported only where audio is handled.

    pydub warns at import when ffmpeg is not on PATH; fsapp says so itself, once, where
    ffmpeg is needed (``require_ffmpeg``), so pydub's own warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Couldn't find ff", category=RuntimeWarning)
        import pydub
        import pydub.silence

    return pydub


def require_ffmpeg(what: str) -> None:
    """SoundsError naming what needs ffmpeg when ffmpeg or ffprobe is not on PATH."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if not shutil.which(tool)]
    if missing:
        raise SoundsError(
            f"{what} needs {' and '.join(missing)} (decoding, EBU R128 loudness, resampling), "
            "not found on PATH: install ffmpeg (apt-get install ffmpeg)"
        )


def _ffmpeg(raw: bytes, rate: int, width: int, args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg on mono PCM samples ``raw`` (``width`` bytes each, at ``rate``) given on stdin."""
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
               "-f", f"s{8 * width}le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0", *args]
    try:
        done = subprocess.run(command, input=raw, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise _FileError("ffmpeg did not finish within 120 s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise _FileError(f"ffmpeg failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done


# EBU R128 gates loudness in 400 ms blocks over a 3 s window: a shorter prompt (a digit)
# is measured repeated to that length, so that short and long prompts come out alike.
_MEASURE_SECONDS = 3.0


def _loudness(raw: bytes, rate: int, width: int) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) by ffmpeg's loudnorm (EBU R128)."""
    repeat = max(1, math.ceil(_MEASURE_SECONDS * rate * width / max(1, len(raw))))
    done = _ffmpeg(raw * repeat, rate, width, ["-af", "loudnorm=print_format=json", "-f", "null", "-"])
    text = done.stderr.decode("utf-8", "replace")
    try:
        found = json.loads(text[text.rindex("{") : text.rindex("}") + 1])
        lufs, peak = float(found["input_i"]), float(found["input_tp"])
    except (ValueError, KeyError) as e:
        raise _FileError(f"ffmpeg's loudnorm gave no measurement ({e})") from None
    if not math.isfinite(lufs) or lufs <= -70.0:
        raise _FileError("too quiet to measure its loudness (below -70 LUFS)")
    return lufs, peak


def _resample(raw: bytes, rate: int, width: int, gain_db: float, out_rate: int) -> bytes:
    """``gain_db`` applied, then resampled to ``out_rate`` by ffmpeg's filtering resampler, as 16-bit."""
    af = f"volume={gain_db:.2f}dB,aresample={out_rate}"
    return _ffmpeg(raw, rate, width, ["-af", af, "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1"]).stdout


def _convert(seg: Any, settings: _Settings) -> _Converted:
    """Mono, silence trimmed, loudness normalised (EBU R128), 16-bit at every rate.

    pydub's own resampling (audioop.ratecv) has no anti-alias filter: a 6 kHz tone
    came out of an 8 kHz build almost whole, folded to 2 kHz. The gain and the
    resampling are ffmpeg's (``aresample``, a windowed-sinc filter), in floating point.
    """
    pydub = _audio()
    if seg.channels > 1:
        seg = seg.set_channels(1)
    if seg.sample_width not in (2, 4):
        seg = seg.set_sample_width(2 if seg.sample_width == 1 else 4)
    thresh = settings.silence_thresh_dbfs
    lead = pydub.silence.detect_leading_silence(seg, silence_threshold=thresh)
    if lead >= len(seg):
        raise _FileError(f"nothing louder than {thresh:g} dBFS: the file is silent or empty")
    trail = pydub.silence.detect_leading_silence(seg.reverse(), silence_threshold=thresh)
    start = max(0, lead - settings.keep_silence_ms)
    end = len(seg) - max(0, trail - settings.keep_silence_ms)
    trimmed_end = len(seg) - end
    seg = seg[start:end]

    raw, rate, width = seg.raw_data, seg.frame_rate, seg.sample_width
    lufs, true_peak = _loudness(raw, rate, width)
    gain = settings.loudness_lufs - lufs
    peak_room = settings.peak_dbtp - true_peak
    limited = gain > peak_room
    if limited:
        gain = peak_room
    by_rate = {out: _resample(raw, rate, width, gain, out) for out in settings.rates}
    return _Converted(by_rate, start, trimmed_end, round(gain, 1), limited, len(seg))


def _write_wav(path: Path, samples: bytes, rate: int) -> None:
    """Write 16-bit mono PCM ``samples``, replacing ``path`` only once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_outputs(dest: Path, language: str, name: str, converted: _Converted) -> None:
    for rate, samples in converted.by_rate.items():
        _write_wav(prompt_path(dest, language, name, rate), samples, rate)


def _decode(path: Path, ext: str) -> tuple[Any, AudioInfo]:
    """Read any supported source file; AudioInfo describes it as it was."""
    pydub = _audio()
    info = None
    if ext == "wav":
        fmt = _read_wav_format(path)
        label = "wav" if fmt.format_tag == _WAVE_FORMAT_PCM else f"wav (format 0x{fmt.format_tag:04X}, not PCM)"
        info = AudioInfo(label, fmt.rate, fmt.channels, fmt.bits)
    try:
        seg = pydub.AudioSegment.from_file(path, format=ext)
    except FileNotFoundError as e:  # pydub fell back to ffmpeg and it is not there
        raise _FileError(f"cannot decode it and ffmpeg is not installed ({e})") from None
    except (pydub.exceptions.CouldntDecodeError, IndexError, KeyError, ValueError) as e:  # IndexError: no stream
        lines = str(e).strip().splitlines()  # ffmpeg's own complaint is its last line
        why = lines[-1].replace(f"{path}: ", "") if lines else type(e).__name__
        raise _FileError(f"cannot decode it as {ext}: {why}") from None
    return seg, info or AudioInfo(ext, seg.frame_rate, seg.channels)


# -- build ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildReport:
    """What ``build`` did with one file of the drop folder."""

    source: str  # path inside the drop folder, with '/' separators
    status: str  # "built", "unchanged", "skipped" or "error"
    language: str = ""
    prompt: str = ""  # "group/name"
    before: AudioInfo | None = None
    outputs: tuple[Path, ...] = ()
    trimmed_start_ms: int = 0
    trimmed_end_ms: int = 0
    gain_db: float = 0.0
    peak_limited: bool = False
    duration_ms: int = 0
    message: str = ""  # the error, or why the file was skipped

    def describe(self) -> str:
        if self.status == "built" and self.before is not None:
            rates = "+".join(str(p.parent.name) for p in self.outputs)
            limit = " (limited by peak)" if self.peak_limited else ""
            return (
                f"{self.before.describe()} -> 16-bit mono {rates} Hz, {self.duration_ms} ms; "
                f"trimmed {self.trimmed_start_ms} ms start, {self.trimmed_end_ms} ms end; "
                f"gain {self.gain_db:+.1f} dB{limit}"
            )
        if self.status == "unchanged":
            return "unchanged"
        return f"{self.status.upper()}: {self.message}"


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def _load_manifest(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["entries"]
        if isinstance(entries, dict):
            return entries
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("sounds.manifest_unreadable", manifest=str(path))
    return {}


def _save_manifest(path: Path, entries: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps({"version": _PIPELINE_VERSION, "entries": dict(sorted(entries.items()))}, indent=1)
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def _scan(src: Path) -> tuple[dict[tuple[str, str], list[Path]], list[BuildReport]]:
    """Source files by (language, prompt), and reports for files that cannot be used."""
    found: dict[tuple[str, str], list[Path]] = {}
    rejected: list[BuildReport] = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        ext = path.suffix.lower().lstrip(".")
        shown = rel.as_posix()
        if ext not in SOURCE_FORMATS:
            why = f"not a supported audio file (supported: {', '.join(SOURCE_FORMATS)})"
            rejected.append(BuildReport(shown, "skipped", message=why))
            continue
        parts = rel.with_suffix("").parts
        bad = [p for p in parts if not _PART.fullmatch(p)]
        if len(parts) != 3 or bad:
            why = f"expected <language>/<group>/<name>.<ext>, each part {_PART_RULE}"
            if bad:
                why += f": {bad[0]!r} is not (FreeSWITCH and the config name prompts by these parts)"
            rejected.append(BuildReport(shown, "error", message=why))
            continue
        found.setdefault((parts[0], f"{parts[1]}/{parts[2]}"), []).append(path)
    return found, rejected


def build(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    silence_thresh_dbfs: float = -50.0,
    loudness_lufs: float = -20.0,
    peak_dbtp: float = -1.0,
    keep_silence_ms: int = 20,
    rates: Sequence[int] = RATES,
) -> list[BuildReport]:
    """Convert every file of the drop folder ``src`` into prompts under ``dest``.

    Each file is made mono, trimmed of leading and trailing silence quieter than
    ``silence_thresh_dbfs`` (keeping ``keep_silence_ms``), normalised to
    ``loudness_lufs`` integrated loudness (EBU R128) without letting the true peak pass
    ``peak_dbtp``, resampled through a filtering resampler and written as 16-bit PCM
    at every rate (all through ffmpeg, which must be installed).  Files unchanged since the last build with the same
    settings (``dest/.build-manifest.json``) are left alone and reported unchanged.
    A file that cannot be used is reported and the others are still built.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise SoundsError(f"{src}: drop folder not found")
    require_ffmpeg("building prompts")
    settings = _Settings(silence_thresh_dbfs, loudness_lufs, peak_dbtp, keep_silence_ms, tuple(rates))
    # rates as a list, as JSON gives it back, so that an unchanged entry compares equal
    fingerprint = {"pipeline": _PIPELINE_VERSION, **dataclasses.asdict(settings), "rates": list(settings.rates)}
    manifest_path = dest / MANIFEST_NAME
    manifest = _load_manifest(manifest_path)
    found, reports = _scan(src)
    changed = False

    for (language, name), paths in sorted(found.items()):
        if len(paths) > 1:
            others = ", ".join(p.relative_to(src).as_posix() for p in paths)
            for path in paths:
                reports.append(
                    BuildReport(
                        path.relative_to(src).as_posix(),
                        "error",
                        language,
                        name,
                        message=f"several source files for prompt {name}: {others}",
                    )
                )
            continue
        path = paths[0]
        shown = path.relative_to(src).as_posix()
        key = f"{language}/{name}"
        outputs = tuple(prompt_path(dest, language, name, rate) for rate in settings.rates)
        try:
            digest = _hash_file(path)
            entry = {"source": shown, "sha256": digest, "settings": fingerprint}
            if manifest.get(key) == entry and all(p.is_file() for p in outputs):
                reports.append(BuildReport(shown, "unchanged", language, name, outputs=outputs))
                continue
            seg, before = _decode(path, path.suffix.lower().lstrip("."))
            converted = _convert(seg, settings)
            _write_outputs(dest, language, name, converted)
        except Exception as e:  # one unusable file must not stop the others
            why = str(e) if isinstance(e, (_FileError, OSError)) else f"{type(e).__name__}: {e}"
            reports.append(BuildReport(shown, "error", language, name, message=why))
            continue
        manifest[key] = entry
        changed = True
        reports.append(
            BuildReport(
                shown,
                "built",
                language,
                name,
                before=before,
                outputs=outputs,
                trimmed_start_ms=converted.trimmed_start_ms,
                trimmed_end_ms=converted.trimmed_end_ms,
                gain_db=converted.gain_db,
                peak_limited=converted.peak_limited,
                duration_ms=converted.duration_ms,
            )
        )

    if changed:
        _save_manifest(manifest_path, manifest)
    reports.sort(key=lambda r: r.source)
    return reports


def format_report(reports: Iterable[BuildReport]) -> str:
    """One line per file and a closing count, for people."""
    reports = list(reports)
    lines = [f"{r.source}: {r.describe()}" for r in reports]
    counts: dict[str, int] = {}
    for r in reports:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = ("built", "unchanged", "skipped", "error")
    lines.append(", ".join(f"{counts.get(s, 0)} {s}" for s in order) if reports else "no source files found")
    return "\n".join(lines)


# -- check ---------------------------------------------------------------------------


def _format_problems(path: Path, rate: int) -> list[str]:
    try:
        fmt = _read_wav_format(path)
    except _FileError as e:
        return [f"{path}: {e}"]
    except OSError as e:
        return [f"{path}: cannot read ({e.strerror or e})"]
    problems = []
    if fmt.format_tag != _WAVE_FORMAT_PCM:
        problems.append(f"{path}: not PCM (WAV format 0x{fmt.format_tag:04X})")
    if fmt.channels != 1:
        problems.append(f"{path}: {fmt.channels} channels, expected mono")
    if fmt.bits != 16:
        problems.append(f"{path}: {fmt.bits}-bit, expected 16-bit")
    if fmt.rate != rate:
        problems.append(f"{path}: {fmt.rate} Hz, expected {rate} Hz for its folder")
    if not fmt.data_bytes:
        problems.append(f"{path}: no audio data")
    return problems


def check(
    sounds_dir: str | os.PathLike[str], language: str, names: Iterable[str], rates: Sequence[int] = RATES
) -> list[str]:
    """One line per missing prompt file or file in the wrong format, naming the file.

    Empty names ("do not play") are ignored.  An empty list means all is well.
    """
    problems: list[str] = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            paths = [(prompt_path(sounds_dir, language, name, rate), rate) for rate in rates]
        except ValueError as e:
            problems.append(str(e))
            continue
        for path, rate in paths:
            if not path.is_file():
                problems.append(f"{path}: missing (prompt {name} at {rate} Hz)")
            else:
                problems.extend(_format_problems(path, rate))
    return problems


# -- tts -----------------------------------------------------------------------------


def load_catalogue(sounds_dir: str | os.PathLike[str], language: str) -> dict[str, str]:
    """The prompts of ``<sounds_dir>/<language>/prompts.toml``: ``{"group/name": "text"}``."""
    path = Path(sounds_dir) / language / CATALOGUE_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SoundsError(f"{path}: catalogue not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SoundsError(f"{path}: {e}") from None
    catalogue = {}
    for key, text in data.items():
        try:
            split_name(key)
        except ValueError as e:
            raise SoundsError(f'{path}:{key}: {e}; quote the key, e.g. "club/welcome" = "..."') from None
        if not isinstance(text, str) or not text.strip():
            raise SoundsError(f"{path}:{key}: expected the text to speak, a non-empty string")
        catalogue[key] = text.strip()
    return catalogue


def _speak(text: str, voice: str, speed: int, out: Path) -> None:
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-b", "1", "-w", str(out), "--stdin"]
    try:
        result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise _FileError("espeak-ng did not finish within 60 s") from None
    if result.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
        detail = result.stderr.decode("utf-8", "replace").strip() or f"exit status {result.returncode}"
        raise _FileError(f"espeak-ng failed: {detail}")


@dataclass(frozen=True)
class TTSReport:
    """What ``tts`` did with each prompt of the catalogue."""

    catalogue: Path
    rendered: tuple[str, ...] = ()
    present: tuple[str, ...] = ()  # already there at every rate, left alone
    kept: tuple[str, ...] = ()  # --overwrite, but not a placeholder tts made: a recording is kept unless named

    def describe(self) -> str:
        lines = [f"{len(self.rendered)} prompts rendered"]
        if not self.rendered and self.present:
            lines[0] += (f": all {len(self.present)} prompts of {self.catalogue} are already there "
                         "(--overwrite re-renders the placeholders tts made)")
        elif self.present:
            lines[0] += f", {len(self.present)} already there"
        if self.kept:
            lines.append(f"kept {len(self.kept)} recordings that tts did not make: {', '.join(self.kept)} "
                         "(name a prompt after --overwrite to replace it)")
        return "\n".join(lines)


_TTS_SOURCE = "tts"


def _tts_targets(catalogue: dict[str, str], manifest: dict[str, dict], present: Any, language: str,
                 overwrite: bool, names: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(to render, left alone as present, kept as recordings) for one tts run."""
    if names:
        unknown = [n for n in names if n not in catalogue]
        if unknown:
            raise SoundsError(f"not in the catalogue: {', '.join(unknown)}")
        return list(dict.fromkeys(names)), [], []
    render, left, kept = [], [], []
    for name in catalogue:
        if not present(name):
            render.append(name)
        elif not overwrite:
            left.append(name)
        elif manifest.get(f"{language}/{name}", {}).get("source") == _TTS_SOURCE:
            render.append(name)
        else:
            kept.append(name)
    return render, left, kept


def tts(
    sounds_dir: str | os.PathLike[str],
    language: str,
    *,
    overwrite: bool = False,
    names: Sequence[str] = (),
    speed: int = 190,
    silence_thresh_dbfs: float = -50.0,
    loudness_lufs: float = -20.0,
    peak_dbtp: float = -1.0,
    keep_silence_ms: int = 20,
    rates: Sequence[int] = RATES,
) -> TTSReport:
    """Render placeholder prompts from the catalogue with espeak-ng.

    Missing prompts are rendered. ``overwrite`` re-renders the placeholders tts made
    (the manifest says which) and keeps every other file, a designer's recording above
    all; ``names`` renders exactly those prompts, whatever is there.
    """
    voice = TTS_VOICES.get(language)
    if voice is None:
        raise SoundsError(f"no espeak-ng voice for language {language!r} (known: {', '.join(TTS_VOICES)})")
    catalogue = load_catalogue(sounds_dir, language)
    settings = _Settings(silence_thresh_dbfs, loudness_lufs, peak_dbtp, keep_silence_ms, tuple(rates))
    root = Path(sounds_dir)
    manifest_path = root / MANIFEST_NAME
    manifest = _load_manifest(manifest_path)

    def present(name: str) -> bool:
        return all(prompt_path(root, language, name, r).is_file() for r in settings.rates)

    render, left, kept = _tts_targets(catalogue, manifest, present, language, overwrite, names)
    if render:
        if not shutil.which("espeak-ng"):
            raise SoundsError("espeak-ng is not installed (apt-get install espeak-ng)")
        require_ffmpeg("rendering prompts")
    with tempfile.TemporaryDirectory(prefix="fsapp-tts-") as tmp:
        spoken = Path(tmp) / "spoken.wav"
        for name in render:
            try:
                _speak(catalogue[name], voice, speed, spoken)
                converted = _convert(_audio().AudioSegment.from_wav(spoken), settings)
            except _FileError as e:
                raise SoundsError(f"{name}: {e}") from None
            _write_outputs(root, language, name, converted)
            manifest[f"{language}/{name}"] = {"source": _TTS_SOURCE, "voice": voice, "text": catalogue[name]}
            _save_manifest(manifest_path, manifest)
    return TTSReport(root / language / CATALOGUE_NAME, tuple(render), tuple(left), tuple(kept))
