import re
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
from pydub import AudioSegment
from pydub.generators import Sine

from fsapp import sounds
from fsapp.sounds import SoundsError, build, check, format_report, prompt_path, tts

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed: prompts cannot be built",
)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def tone(ms: int, dbfs: float = -20.0, rate: int = 44100, freq: int = 440) -> AudioSegment:
    """A 16-bit mono sine whose RMS level is ``dbfs``."""
    seg = Sine(freq, sample_rate=rate).to_audio_segment(duration=ms)
    return seg.apply_gain(dbfs - seg.dBFS)


def save_wav(path: Path, seg: AudioSegment) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.export(path, format="wav")
    return path


def save_wav_24bit(path: Path, seg: AudioSegment) -> Path:
    """Write ``seg`` as 24-bit PCM (pydub's generators stop at 16 and 32 bits)."""
    wide = seg.set_sample_width(4).raw_data
    packed = b"".join(wide[i + 1 : i + 4] for i in range(0, len(wide), 4))  # keep the top 3 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(seg.channels)
        w.setsampwidth(3)
        w.setframerate(seg.frame_rate)
        w.writeframes(packed)
    return path


def wav_params(path: Path) -> tuple[int, int, int]:
    """(rate, sample width in bytes, channels) of a written prompt."""
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getsampwidth(), w.getnchannels()


def integrated_lufs(path: Path) -> float:
    """Integrated loudness of a WAV file by ffmpeg's ebur128 meter (not the loudnorm filter the build uses)."""
    done = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
                          capture_output=True, text=True, check=True)
    summary = done.stderr[done.stderr.rindex("Summary:"):]
    return float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))


def by_source(reports):
    return {r.source: r for r in reports}


def test_prompt_path_layout():
    """prompt_path follows <dir>/<language>/<group>/<rate>/<name>.wav, or no rate folder for rate=None."""
    assert prompt_path("sounds", "fa", "club/welcome") == Path("sounds/fa/club/8000/welcome.wav")
    assert prompt_path("sounds", "en", "digits/100", 16000) == Path("sounds/en/digits/16000/100.wav")
    assert prompt_path("sounds", "fa", "club/welcome", None) == Path("sounds/fa/club/welcome.wav")
    with pytest.raises(ValueError, match="welcome"):
        prompt_path("sounds", "fa", "welcome")


@needs_ffmpeg
def test_build_converts_stereo_441_and_24bit_wav(tmp_path):
    """A stereo 44.1 kHz WAV and a 24-bit 48 kHz WAV become 16-bit mono at 8000 and 16000 Hz."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    stereo = AudioSegment.from_mono_audiosegments(tone(800), tone(800, freq=660))
    save_wav(src / "fa/club/welcome.wav", stereo)
    save_wav_24bit(src / "fa/club/intro.wav", tone(800, rate=48000))

    reports = by_source(build(src, dest))

    assert reports["fa/club/welcome.wav"].status == "built"
    assert reports["fa/club/welcome.wav"].before.describe() == "wav 44100 Hz 16-bit stereo"
    assert reports["fa/club/intro.wav"].before.describe() == "wav 48000 Hz 24-bit mono"
    for name in ("club/welcome", "club/intro"):
        for rate in (8000, 16000):
            assert wav_params(prompt_path(dest, "fa", name, rate)) == (rate, 2, 1)


@needs_ffmpeg
def test_build_converts_mp3(tmp_path):
    """An MP3 becomes 16-bit mono WAV at both rates, and the report names its format."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    (src / "en/menu").mkdir(parents=True)
    AudioSegment.from_mono_audiosegments(tone(800), tone(800)).export(src / "en/menu/main.mp3", format="mp3")

    (report,) = build(src, dest)

    assert report.status == "built", report.message
    assert report.before.format == "mp3" and report.before.channels == 2
    for rate in (8000, 16000):
        assert wav_params(prompt_path(dest, "en", "menu/main", rate)) == (rate, 2, 1)


def test_missing_ffmpeg_stops_the_build_once_in_fsapps_words(tmp_path, monkeypatch):
    """Without ffmpeg the build refuses once, naming ffmpeg and why, and writes nothing."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "en/menu/invalid.wav", tone(300))
    monkeypatch.setattr(sounds.shutil, "which", lambda tool: None)

    with pytest.raises(SoundsError, match=r"needs ffmpeg and ffprobe \(decoding, EBU R128 loudness, resampling\)"):
        build(src, dest)
    assert not dest.exists()


@needs_ffmpeg
def test_silence_is_trimmed(tmp_path):
    """Leading and trailing silence below the threshold is cut, keeping keep_silence_ms each side."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    padded = AudioSegment.silent(500, frame_rate=44100) + tone(1000) + AudioSegment.silent(700, frame_rate=44100)
    save_wav(src / "fa/common/goodbye.wav", padded)

    (report,) = build(src, dest, keep_silence_ms=20)

    assert abs(report.trimmed_start_ms - 480) <= 10
    assert abs(report.trimmed_end_ms - 680) <= 10
    out = AudioSegment.from_wav(prompt_path(dest, "fa", "common/goodbye", 8000))
    assert abs(len(out) - 1040) <= 20


@needs_ffmpeg
def test_loudness_is_normalised_to_the_ebu_r128_target(tmp_path):
    """A quiet 1 kHz tone is raised to the target loudness, read back by ffmpeg's ebur128 meter."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/common/busy.wav", tone(3000, dbfs=-35.0, freq=1000))

    (report,) = build(src, dest, loudness_lufs=-23.0)

    assert report.gain_db == pytest.approx(12.0, abs=0.5)  # a 1 kHz sine reads its RMS level in LUFS
    assert not report.peak_limited
    for rate in (8000, 16000):
        assert integrated_lufs(prompt_path(dest, "fa", "common/busy", rate)) == pytest.approx(-23.0, abs=0.5)


@needs_ffmpeg
def test_a_short_prompt_is_as_loud_as_a_long_one(tmp_path):
    """A 300 ms prompt (a digit) gets the same loudness as a 3 s one, though R128 gates in 400 ms blocks."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/digits/1.wav", tone(300, dbfs=-30.0, freq=1000))
    save_wav(src / "fa/common/busy.wav", tone(3000, dbfs=-12.0, freq=1000))

    reports = by_source(build(src, dest, loudness_lufs=-20.0))

    assert reports["fa/digits/1.wav"].gain_db == pytest.approx(10.0, abs=0.6)
    short = AudioSegment.from_wav(prompt_path(dest, "fa", "digits/1", 16000))
    long = AudioSegment.from_wav(prompt_path(dest, "fa", "common/busy", 16000))
    assert short.dBFS == pytest.approx(long.dBFS, abs=0.6)


@pytest.mark.parametrize("freq", [6000, 5000])
@needs_ffmpeg
def test_the_8k_build_rejects_an_out_of_band_tone(tmp_path, freq):
    """A tone above 4 kHz in a 44.1 kHz source is filtered out of the 8 kHz prompt, not folded into it.

    The 16 kHz prompt, where the tone is in band, is the reference: same gain, same pipeline.
    pydub's audioop.ratecv let a 6 kHz tone through at 0.094 RMS, under 1 dB down.
    """
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "en/common/tone.wav", tone(1000, dbfs=-20.0, freq=freq))

    build(src, dest)

    passed = AudioSegment.from_wav(prompt_path(dest, "en", "common/tone", 16000))
    aliased = AudioSegment.from_wav(prompt_path(dest, "en", "common/tone", 8000))
    attenuation = passed.dBFS - aliased.dBFS
    assert attenuation >= 30.0, f"{freq} Hz only {attenuation:.1f} dB down in the 8 kHz prompt"


@needs_ffmpeg
def test_the_8k_build_keeps_an_in_band_tone(tmp_path):
    """A 1 kHz tone comes through the 8 kHz build at the level of the 16 kHz one (within 0.5 dB)."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "en/common/tone.wav", tone(1000, dbfs=-20.0, freq=1000))

    build(src, dest)

    levels = [AudioSegment.from_wav(prompt_path(dest, "en", "common/tone", r)).dBFS for r in (8000, 16000)]
    assert levels[0] == pytest.approx(levels[1], abs=0.5)


@needs_ffmpeg
def test_gain_stops_at_the_peak_limit(tmp_path):
    """When the target would push peaks past peak_dbfs, the gain stops there and the report says so."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/common/error.wav", tone(1000, dbfs=-30.0))

    (report,) = build(src, dest, loudness_lufs=-2.0, peak_dbtp=-1.0)

    assert report.peak_limited
    out = AudioSegment.from_wav(prompt_path(dest, "fa", "common/error", 16000))
    assert out.max_dBFS == pytest.approx(-1.0, abs=0.3)
    assert out.dBFS == pytest.approx(-4.0, abs=0.5)  # a sine's RMS is 3 dB under its peak


@needs_ffmpeg
def test_corrupt_and_silent_files_are_reported_and_others_built(tmp_path):
    """A corrupt file and a silent file are reported by name; the good file is still built."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    (src / "fa/club").mkdir(parents=True)
    (src / "fa/club/broken.wav").write_bytes(b"this is not audio at all")
    save_wav(src / "fa/club/quiet.wav", AudioSegment.silent(500))
    save_wav(src / "fa/club/welcome.wav", tone(500))

    reports = by_source(build(src, dest))

    assert reports["fa/club/broken.wav"].status == "error"
    assert "not a WAV file" in reports["fa/club/broken.wav"].message
    assert reports["fa/club/quiet.wav"].status == "error"
    assert "silent" in reports["fa/club/quiet.wav"].message
    assert reports["fa/club/welcome.wav"].status == "built"
    assert prompt_path(dest, "fa", "club/welcome", 8000).is_file()
    assert not prompt_path(dest, "fa", "club/broken", 8000).exists()
    assert "1 built, 0 unchanged, 0 skipped, 2 error" in format_report(reports.values())


@needs_ffmpeg
def test_misplaced_duplicate_and_unsupported_files(tmp_path):
    """Files outside <language>/<group>/<name>.<ext> or with two sources for one prompt are errors; others skipped."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/welcome.wav", tone(300))
    save_wav(src / "fa/club/intro.wav", tone(300))
    save_wav(src / "fa/club/intro.WAV.wav", tone(300))
    (src / "fa/club/notes.txt").write_text("script for the voice actor")
    (src / "fa/club/.DS_Store").write_bytes(b"\0")

    reports = by_source(build(src, dest))

    assert reports["fa/welcome.wav"].status == "error"
    assert reports["fa/club/intro.WAV.wav"].status == "error"  # dots are not allowed in names
    assert reports["fa/club/notes.txt"].status == "skipped"
    assert ".DS_Store" not in " ".join(reports)
    assert reports["fa/club/intro.wav"].status == "built"


@needs_ffmpeg
def test_two_formats_of_one_prompt_are_refused(tmp_path):
    """welcome.wav next to welcome.flac is an error for both; neither is built."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/club/welcome.wav", tone(300))
    save_wav(src / "fa/club/welcome.flac", tone(300))

    reports = build(src, dest)

    assert [r.status for r in reports] == ["error", "error"]
    assert all("several source files" in r.message for r in reports)
    assert not prompt_path(dest, "fa", "club/welcome", 8000).exists()


@needs_ffmpeg
def test_rerun_on_unchanged_folder_does_nothing(tmp_path):
    """A second build of the same folder with the same settings writes nothing and reports unchanged."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/club/welcome.wav", tone(500))
    save_wav(src / "fa/club/intro.wav", tone(600))
    build(src, dest)
    out = prompt_path(dest, "fa", "club/welcome", 8000)
    before = out.stat().st_mtime_ns
    manifest_before = (dest / ".build-manifest.json").read_text()

    again = build(src, dest)

    assert [r.status for r in again] == ["unchanged", "unchanged"]
    assert out.stat().st_mtime_ns == before
    assert (dest / ".build-manifest.json").read_text() == manifest_before


@needs_ffmpeg
def test_changed_source_settings_or_missing_output_rebuild(tmp_path):
    """A changed source, changed settings or a deleted output rebuilds only what is affected."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/club/welcome.wav", tone(500))
    save_wav(src / "fa/club/intro.wav", tone(600))
    build(src, dest)

    save_wav(src / "fa/club/welcome.wav", tone(700))
    assert {r.source: r.status for r in build(src, dest)} == {
        "fa/club/intro.wav": "unchanged",
        "fa/club/welcome.wav": "built",
    }
    prompt_path(dest, "fa", "club/intro", 16000).unlink()
    assert {r.source: r.status for r in build(src, dest)} == {
        "fa/club/intro.wav": "built",
        "fa/club/welcome.wav": "unchanged",
    }
    assert {r.status for r in build(src, dest, loudness_lufs=-18.0)} == {"built"}


def test_build_refuses_a_missing_drop_folder(tmp_path):
    """A drop folder that does not exist is a SoundsError naming it."""
    with pytest.raises(SoundsError, match="nowhere"):
        build(tmp_path / "nowhere", tmp_path / "sounds")


@needs_ffmpeg
def test_check_passes_built_prompts_and_ignores_empty_names(tmp_path):
    """check returns no problems for correctly built prompts; "" (do not play) is ignored."""
    src, dest = tmp_path / "drop", tmp_path / "sounds"
    save_wav(src / "fa/club/welcome.wav", tone(300))
    build(src, dest)

    assert check(dest, "fa", ["club/welcome", "", "club/welcome"]) == []


def test_check_finds_missing_and_wrong_rate_prompts(tmp_path):
    """check names a missing prompt's files and a file whose rate does not match its folder."""
    dest = tmp_path / "sounds"
    wrong = tone(300, rate=16000)
    save_wav(prompt_path(dest, "fa", "club/intro", 8000), wrong)
    save_wav(prompt_path(dest, "fa", "club/intro", 16000), wrong)

    problems = check(dest, "fa", ["club/intro", "club/missing"])

    assert problems == [
        f"{prompt_path(dest, 'fa', 'club/intro', 8000)}: 16000 Hz, expected 8000 Hz for its folder",
        f"{prompt_path(dest, 'fa', 'club/missing', 8000)}: missing (prompt club/missing at 8000 Hz)",
        f"{prompt_path(dest, 'fa', 'club/missing', 16000)}: missing (prompt club/missing at 16000 Hz)",
    ]


def test_check_finds_wrong_formats(tmp_path):
    """check names files that are not WAV, not mono, not 16-bit, and bad prompt names."""
    dest = tmp_path / "sounds"
    stereo = AudioSegment.from_mono_audiosegments(tone(300, rate=8000), tone(300, rate=8000))
    save_wav(prompt_path(dest, "en", "menu/main", 8000), stereo)
    save_wav_24bit(prompt_path(dest, "en", "menu/main", 16000), tone(300, rate=16000))
    fake = prompt_path(dest, "en", "menu/invalid", 8000)
    fake.write_bytes(b"ID3 an mp3 renamed to wav")
    save_wav(prompt_path(dest, "en", "menu/invalid", 16000), tone(300, rate=16000))

    problems = check(dest, "en", ["menu/main", "menu/invalid", "no_group"])

    assert problems == [
        f"{prompt_path(dest, 'en', 'menu/main', 8000)}: 2 channels, expected mono",
        f"{prompt_path(dest, 'en', 'menu/main', 16000)}: 24-bit, expected 16-bit",
        f"{fake}: not a WAV file (no RIFF/WAVE header)",
        "'no_group' is not a prompt name (group/name, each part ASCII letters (a-z, A-Z), digits, '_' or '-')",
    ]


@needs_espeak
@needs_ffmpeg
def test_tts_renders_a_catalogue_and_says_when_all_exist(tmp_path):
    """tts renders each entry at both rates; a second run renders nothing and says all are there."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en/prompts.toml").write_text('"common/goodbye" = "Goodbye."\n"digits/1" = "one"\n')

    first = tts(tmp_path, "en")
    assert first.rendered == ("common/goodbye", "digits/1")
    assert check(tmp_path, "en", ["common/goodbye", "digits/1"]) == []
    assert len(AudioSegment.from_wav(prompt_path(tmp_path, "en", "common/goodbye", 8000))) > 200

    again = tts(tmp_path, "en")
    assert again.rendered == () and again.present == ("common/goodbye", "digits/1")
    assert again.describe() == (f"0 prompts rendered: all 2 prompts of {tmp_path}/en/prompts.toml are already "
                                "there (--overwrite re-renders the placeholders tts made)")


@needs_espeak
@needs_ffmpeg
def test_tts_overwrite_keeps_a_designers_recording_unless_named(tmp_path):
    """--overwrite re-renders tts's placeholders but keeps a prompt built from a recording; naming it replaces it."""
    (tmp_path / "drop/en/common").mkdir(parents=True)
    (tmp_path / "sounds/en").mkdir(parents=True)
    (tmp_path / "sounds/en/prompts.toml").write_text('"common/goodbye" = "Goodbye."\n"digits/1" = "one"\n')
    sounds_dir = tmp_path / "sounds"
    tts(sounds_dir, "en")
    save_wav(tmp_path / "drop/en/common/goodbye.wav", tone(1234, freq=1000))
    build(tmp_path / "drop", sounds_dir)
    recording = prompt_path(sounds_dir, "en", "common/goodbye", 16000)
    recorded = recording.read_bytes()

    report = tts(sounds_dir, "en", overwrite=True)

    assert report.rendered == ("digits/1",) and report.kept == ("common/goodbye",)
    assert recording.read_bytes() == recorded
    assert "kept 1 recordings that tts did not make: common/goodbye" in report.describe()

    named = tts(sounds_dir, "en", overwrite=True, names=["common/goodbye"])
    assert named.rendered == ("common/goodbye",)
    assert recording.read_bytes() != recorded
    with pytest.raises(SoundsError, match="not in the catalogue: club/nope"):
        tts(sounds_dir, "en", overwrite=True, names=["club/nope"])


@needs_ffmpeg
def test_a_persian_file_name_is_refused_asking_for_ascii_letters(tmp_path):
    """A drop file named in Persian is reported naming the part and asking for ASCII letters."""
    src = tmp_path / "drop"
    save_wav(src / "fa/club/خوش_آمد.wav", tone(300))

    (report,) = build(src, tmp_path / "sounds")

    assert report.status == "error"
    assert "ASCII letters (a-z, A-Z), digits, '_' or '-'" in report.message
    assert "'خوش_آمد' is not" in report.message


def test_tts_without_espeak_is_a_clear_error(tmp_path, monkeypatch):
    """Without espeak-ng, tts raises SoundsError saying so."""
    (tmp_path / "fa").mkdir()
    (tmp_path / "fa/prompts.toml").write_text('"common/goodbye" = "خدانگهدار"\n', encoding="utf-8")
    monkeypatch.setattr(sounds.shutil, "which", lambda tool: None)

    with pytest.raises(SoundsError, match="espeak-ng is not installed"):
        tts(tmp_path, "fa")


def test_tts_catalogue_errors_name_file_and_key(tmp_path):
    """A missing catalogue, a bad key or an empty text is a SoundsError naming the file and key."""
    with pytest.raises(SoundsError, match="prompts.toml: catalogue not found"):
        tts(tmp_path, "en")
    (tmp_path / "en").mkdir()
    (tmp_path / "en/prompts.toml").write_text('"welcome" = "Hello"\n')
    with pytest.raises(SoundsError, match="prompts.toml:welcome:"):
        tts(tmp_path, "en")
    (tmp_path / "en/prompts.toml").write_text('"club/welcome" = " "\n')
    with pytest.raises(SoundsError, match="prompts.toml:club/welcome: expected the text"):
        tts(tmp_path, "en")
    with pytest.raises(SoundsError, match="'de'"):
        tts(tmp_path, "de")


def test_shipped_catalogues_cover_the_number_prompts():
    """Both shipped catalogues name every number prompt say.py can play."""
    from fsapp.say import number_prompt_names

    root = Path(__file__).resolve().parent.parent / "sounds"
    for language in ("fa", "en"):
        catalogue = sounds.load_catalogue(root, language)
        assert set(number_prompt_names(language)) <= set(catalogue)
