"""Analysis of recorded calls: accuracy on real and generated recordings, the queue, the
worker, flags, the reviewer's notification, the speech-to-text door, the journal's view."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsapp import config as configmod
from fsapp.analysis import svg
from harness import recordings
from tests.helpers import ROOT, SHARED, Daemon

MakeConfig = Callable[..., configmod.Config]
StartDaemon = Callable[[configmod.Config], Daemon]

SHARED_WAV = SHARED / "recordings" / "a-inbound-answered.stereo.wav"
# shared/recordings/README.md: the exact utterance windows, seconds from the WAV's start
SHARED_TRUTH = [("customer", 0.56, 2.56), ("agent", 3.56, 5.56), ("customer", 6.56, 8.56), ("agent", 7.56, 8.06)]
TOLERANCE = 0.3

CLUB_TO_AGENT = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
register_unknown = true
next = "ext:1001"
error = "hangup"
"""


def fsapp(*args: str, cfg: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fsapp", *args] + (["-c", str(cfg)] if cfg else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def analyse_file(path: Path, *extra: str) -> dict[str, Any]:
    proc = fsapp("analyse", "--file", str(path), *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_segments(found: list[dict[str, Any]], truth: list[tuple[str, float, float]]) -> None:
    got = sorted((s["channel"], s["start"], s["end"]) for s in found)
    want = sorted(truth)
    assert len(got) == len(want), f"found {got}, truth {want}"
    for (ch, a, b), (tch, ta, tb) in zip(got, want, strict=True):
        assert ch == tch, (got, want)
        assert abs(a - ta) <= TOLERANCE and abs(b - tb) <= TOLERANCE, f"{ch} {a}-{b} vs truth {ta}-{tb}"


# ------------------------------------------------------------------ accuracy


@pytest.mark.skipif(not SHARED_WAV.exists(), reason="shared recordings not present")
def test_real_freeswitch_recording_matches_its_ground_truth() -> None:
    """The shared FreeSWITCH recording: every utterance within 0.3 s, the overlap found where it is."""
    out = analyse_file(SHARED_WAV)
    assert_segments(out["segments"], SHARED_TRUTH)
    assert out["customer"]["talk_seconds"] == pytest.approx(4.0, abs=0.4)
    assert out["agent"]["talk_seconds"] == pytest.approx(2.5, abs=0.4)
    assert out["overtalk_count"] == 1
    (a, b), = out["overtalk"]
    assert abs(a - 7.56) <= TOLERANCE and abs(b - 8.06) <= TOLERANCE
    assert out["overtalk_seconds"] == pytest.approx(0.5, abs=0.2)
    assert out["agent"]["interruptions"] == 1 and out["customer"]["interruptions"] == 0  # "Sure." over the caller
    assert out["silence_seconds"] == pytest.approx(10.6 - 6.0 + 0.5, abs=0.5)
    assert out["duration_seconds"] == 10.6


@pytest.mark.skipif(not SHARED_WAV.exists(), reason="shared recordings not present")
def test_customer_right_swaps_the_roles() -> None:
    out = analyse_file(SHARED_WAV, "--customer", "right")
    assert_segments(out["segments"], [("agent" if c == "customer" else "customer", a, b) for c, a, b in SHARED_TRUTH])
    assert out["customer"]["talk_seconds"] == pytest.approx(2.5, abs=0.4)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    tmp = tmp_path_factory.mktemp("voices")
    return {
        "hello": recordings.speech("Good morning, I would like to check my account balance please.", tmp),
        "offer": recordings.speech("Of course, may I have your customer number?", tmp, voice="en-gb+f3"),
        "digits": recordings.speech("Yes, it is one two three four five.", tmp),
        "thanks": recordings.speech("Thank you.", tmp, voice="en-gb+f3"),
    }


@pytest.mark.parametrize("noise_dbfs", [None, -50.0, -35.0, -30.0])
def test_generated_speech_is_found_where_it_was_placed(
    voices: dict[str, np.ndarray], tmp_path: Path, noise_dbfs: float | None
) -> None:
    """espeak-ng speech laid at known times on each channel, over line noise up to -30 dBFS."""
    wav = tmp_path / "call.wav"
    truth = recordings.build(wav, [("left", 1.0, voices["hello"]), ("right", 5.5, voices["offer"]),
                                   ("left", 9.0, voices["digits"]), ("right", 10.2, voices["thanks"])],
                             15.0, noise_dbfs=noise_dbfs)
    out = analyse_file(wav)
    assert_segments(out["segments"], [("customer" if s == "left" else "agent", a, b) for s, a, b in truth])
    (c_digits, a_thanks) = truth[2], truth[3]
    assert out["overtalk_count"] == 1
    assert out["overtalk_seconds"] == pytest.approx(min(c_digits[2], a_thanks[2]) - a_thanks[1], abs=0.3)
    assert out["agent"]["interruptions"] == 1


def test_pure_line_noise_is_not_speech(tmp_path: Path) -> None:
    """Minutes of steady line noise on both channels (loud, and faint): no speech at all."""
    for level in (-30.0, -60.0):
        wav = tmp_path / f"noise{level}.wav"
        recordings.build(wav, [], 120.0, noise_dbfs=level)
        out = analyse_file(wav)
        assert out["segments"] == []
        assert out["silence_seconds"] == 120.0 and out["customer"]["talk_seconds"] == 0.0


@pytest.mark.parametrize("kind", ["hum", "rumble"])
def test_coloured_line_noise_is_not_speech(tmp_path: Path, kind: str) -> None:
    """Mains hum over hiss, and low-frequency rumble, at -30 dBFS: still no speech."""
    n = recordings.RATE * 60
    rng = np.random.default_rng(7)
    if kind == "hum":
        t = np.arange(n) / recordings.RATE
        x = 3 * np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 150 * t) + rng.normal(0, 1, (2, n))
    else:
        walk = np.cumsum(rng.normal(0, 1, (2, n)), axis=1)
        x = walk - np.array([np.convolve(row, np.ones(801) / 801, "same") for row in walk])
    x = x / np.std(x) * 32767 * 10 ** (-30 / 20)
    wav = tmp_path / f"{kind}.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(recordings.RATE)
        w.writeframes(np.clip(x, -32768, 32767).astype("<i2").T.copy().tobytes())
    assert analyse_file(wav)["segments"] == []


def test_clicks_and_short_pauses_do_not_count(voices: dict[str, np.ndarray], tmp_path: Path) -> None:
    """40 ms clicks are not speech; a 0.3 s pause inside a turn does not split it."""
    click = np.full(int(0.04 * recordings.RATE), 12000.0)
    hello = voices["hello"]
    half = len(hello) // 2
    paused = np.concatenate([hello[:half], np.zeros(int(0.3 * recordings.RATE)), hello[half:]])
    wav = tmp_path / "clicks.wav"
    truth = recordings.build(wav, [("left", 1.0, paused), ("right", 2.0, click), ("right", 7.0, click)], 10.0)
    out = analyse_file(wav)
    assert_segments(out["segments"], [("customer", truth[0][1], truth[0][2])])


@pytest.mark.parametrize("rate", [16000])
def test_wideband_recordings_are_analysed(voices: dict[str, np.ndarray], tmp_path: Path, rate: int) -> None:
    tmp = tmp_path / "v"
    tmp.mkdir()
    x = recordings.speech("Support desk, how can I help?", tmp, rate=rate)
    wav = tmp_path / "wide.wav"
    truth = recordings.build(wav, [("right", 2.0, x)], 6.0, rate=rate)
    out = analyse_file(wav)
    assert_segments(out["segments"], [("agent", truth[0][1], truth[0][2])])


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    missing = fsapp("analyse", "--file", str(tmp_path / "none.wav"))
    assert missing.returncode == 2 and "none.wav: no such recording" in missing.stderr
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00not a wave file at all")
    bad = fsapp("analyse", "--file", str(junk))
    assert bad.returncode == 2 and "junk.wav: not a readable WAV file" in bad.stderr
    mono = tmp_path / "mono.wav"
    with wave.open(str(mono), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000)
    one = fsapp("analyse", "--file", str(mono))
    assert one.returncode == 2 and "1 channel(s), not 2" in one.stderr
    both = fsapp("analyse", "--file", str(mono), "--pending")
    assert both.returncode == 2 and "exactly one of" in both.stderr


# ------------------------------------------------------------------ timeline


def test_svg_timeline_marks_speech_silence_and_overtalk(tmp_path: Path) -> None:
    out_svg = tmp_path / "t.svg"
    proc = fsapp("analyse", "--file", str(SHARED_WAV), "--svg", str(out_svg))
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    root = ET.fromstring(out_svg.read_text())
    rects = [r for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    by_class: dict[str, list[tuple[float, float]]] = {}
    for r in rects:
        by_class.setdefault(r.get("class", ""), []).append((float(r.get("data-start")), float(r.get("data-end"))))
    assert by_class["speech customer"] == [(s["start"], s["end"]) for s in figures["segments"]
                                           if s["channel"] == "customer"]
    assert len(by_class["speech agent"]) == 2
    assert by_class["overtalk"] == [tuple(x) for x in figures["overtalk"]]
    assert by_class["silence"] == [tuple(x) for x in figures["silences"]]
    # x grows with time: the customer's second turn is right of its first
    xs = [float(r.get("x")) for r in rects if r.get("class") == "speech customer"]
    assert xs[0] < xs[1]
    assert svg.timeline({"duration_seconds": 0, "segments": []}).startswith("<svg")


# ------------------------------------------------------------------ recorded calls, through the daemon


def _config(make_config: MakeConfig, tmp_path: Path, analysis: str = "", journal: str = "") -> configmod.Config:
    rec = tmp_path / "rec"
    notify = tmp_path / "notify.sh"
    notify.write_text('#!/bin/sh\nenv | grep ^FSAPP_ | sort > "$0.$FSAPP_REASON.$FSAPP_UUID"\n')
    notify.chmod(0o755)
    extra = (f'[journal]\nrecord = true\nrecord_dir = "{rec}"\nnotify_command = "{notify}"\n{journal}\n'
             f"[analysis]\npoll_seconds = 0.1\n{analysis}\n")
    return make_config(CLUB_TO_AGENT, extra=extra)


def _notified(tmp_path: Path, uuid: str) -> dict[str, str]:
    path = tmp_path / f"notify.sh.flagged.{uuid}"
    for _ in range(200):
        if path.exists() and path.read_text():
            return dict(line.split("=", 1) for line in path.read_text().splitlines())
        import time

        time.sleep(0.02)
    raise AssertionError("the reviewer was not notified")


LOW_MOS = {"rtp_audio_in_mos": "2.90", "rtp_audio_in_quality_percentage": "61.50", "rtp_audio_in_flaw_total": "17",
           "rtp_audio_in_jitter_max_variance": "16.00", "rtp_audio_in_jitter_loss_rate": "0.02",
           "hold_accum_ms": "0"}


@pytest.mark.skipif(not SHARED_WAV.exists(), reason="shared recordings not present")
def test_recorded_call_is_queued_analysed_flagged_and_listed(
    make_config: MakeConfig, daemon: StartDaemon, tmp_path: Path
) -> None:
    """A stereo-recorded call is queued as it ends; `fsapp analyse --pending` stores its figures;
    the low MOS flags it, the reviewer is notified with the flag names; `fsapp calls` shows it."""
    cfg = _config(make_config, tmp_path)
    d = daemon(cfg)
    fake, row = d.call(caller="09121234567", bridges=["answer:10"], variables=LOW_MOS,
                       recording=str(SHARED_WAV))
    assert row is not None and row["recording_customer"] == "left"
    i = fake.apps().index("record_session")
    assert fake.steps[i - 1].app == "multiset"
    assert fake.steps[i - 1].arg == "RECORD_STEREO=true RECORD_STEREO_SWAP=false"
    queued = d.store.analysis_get(fake.uuid)
    assert queued is not None and queued["state"] == "pending" and queued["mos"] == 2.9
    assert queued["flaws"] == 17 and queued["jitter_ms"] == 4.0 and queued["quality_percentage"] == 61.5

    proc = fsapp("analyse", "--pending", cfg=Path(cfg.file))
    assert proc.returncode == 0, proc.stderr
    assert "1 calls analysed, 0 still queued" in proc.stdout
    done = d.store.analysis_get(fake.uuid)
    assert done is not None and done["state"] == "done"
    assert_segments(done["segments"], SHARED_TRUTH)
    assert done["flags"] == ["low_mos"]
    env = _notified(tmp_path, fake.uuid)
    assert env["FSAPP_FLAGS"] == "low_mos" and env["FSAPP_UUID"] == fake.uuid
    assert env["FSAPP_CALLER"] == "09121234567"

    again = fsapp("analyse", "--pending", cfg=Path(cfg.file))
    assert "0 calls analysed" in again.stdout  # done is never analysed twice

    listed = fsapp("calls", "--flag", "low_mos", "--format", "json", cfg=Path(cfg.file))
    assert listed.returncode == 0, listed.stderr
    (call,) = json.loads(listed.stdout)
    assert call["uuid"] == fake.uuid and call["analysis_flags"] == ["low_mos"]
    assert call["analysis_state"] == "done" and call["analysis_mos"] == 2.9
    assert call["customer_talk_seconds"] == pytest.approx(4.0, abs=0.4)
    assert call["overtalk_count"] == 1 and call["recording_customer"] == "left"
    none = fsapp("calls", "--flag", "overtalk", "--format", "json", cfg=Path(cfg.file))
    assert json.loads(none.stdout) == []
    table = fsapp("calls", cfg=Path(cfg.file))
    assert "low_mos" in table.stdout and "61%" in table.stdout


def test_outbound_and_bridged_only_recording_variables(make_config: MakeConfig, daemon: StartDaemon,
                                                       tmp_path: Path) -> None:
    """An agent's outbound call swaps the channels (customer still left); bridged-only asks RECORD_BRIDGE_REQ."""
    d = daemon(_config(make_config, tmp_path, journal="record_bridged_only = true"))
    fake, row = d.call(direction="outbound", bridges=["no-answer"])
    i = fake.apps().index("record_session")
    assert fake.steps[i - 1].arg == "RECORD_STEREO=true RECORD_STEREO_SWAP=true RECORD_BRIDGE_REQ=true"
    assert row is not None and row["recording_customer"] == "left"
    assert d.store.analysis_get(fake.uuid) is None  # nobody was bridged: FreeSWITCH wrote no file


def test_missing_and_corrupt_recordings_get_a_state_not_a_crash(
    make_config: MakeConfig, daemon: StartDaemon, tmp_path: Path
) -> None:
    cfg = _config(make_config, tmp_path)
    d = daemon(cfg)
    lost, _ = d.call(bridges=["answer:5"])  # FreeSWITCH wrote nothing
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEfmt garbage")
    broken, _ = d.call(bridges=["answer:5"], recording=str(junk))
    proc = fsapp("analyse", "--pending", cfg=Path(cfg.file))
    assert proc.returncode == 0, proc.stderr
    assert "2 calls analysed" in proc.stdout
    a, b = d.store.analysis_get(lost.uuid), d.store.analysis_get(broken.uuid)
    assert a is not None and a["state"] == "missing" and "no such recording" in a["error"]
    assert b is not None and b["state"] == "corrupt" and "not a readable WAV" in b["error"]
    one = fsapp("analyse", lost.uuid, cfg=Path(cfg.file))
    assert one.returncode == 1 and json.loads(one.stdout)["state"] == "missing"
    unknown = fsapp("analyse", "no-such-call", cfg=Path(cfg.file))
    assert unknown.returncode == 2 and "no call with uuid 'no-such-call'" in unknown.stderr


def test_a_worker_that_dies_gives_its_call_back(make_config: MakeConfig, daemon: StartDaemon,
                                                tmp_path: Path) -> None:
    """A claim whose lease ran out (its worker died) is taken again; the queue survives a restart."""
    cfg = _config(make_config, tmp_path)
    d = daemon(cfg)
    fake, _ = d.call(bridges=["answer:10"], recording=str(SHARED_WAV))
    import time

    dead = d.store.analysis_claim("dead-worker", time.time() - 3600, 60, 3)  # leased an hour ago, never finished
    assert dead is not None and dead["call_uuid"] == fake.uuid
    assert not d.store.analysis_finish(fake.uuid, "another", "done", {}, time.time())  # not its lease
    d.stop()  # the daemon restarts: nothing is lost
    proc = fsapp("analyse", "--pending", cfg=Path(cfg.file))
    assert "1 calls analysed" in proc.stdout, proc.stderr
    from fsapp.store import open_store

    store = open_store(cfg.storage_url)
    row = store.analysis_get(fake.uuid)
    assert row is not None and row["state"] == "done" and row["attempts"] == 2
    store.close()


# ------------------------------------------------------------------ speech-to-text door


def test_transcribe_command_output_is_stored_and_searchable(
    make_config: MakeConfig, daemon: StartDaemon, tmp_path: Path
) -> None:
    engine = tmp_path / "stt.py"
    engine.write_text(
        "import json, os, sys\n"
        "path = sys.argv[-1]\n"
        "assert os.path.exists(path)\n"
        "print(json.dumps([{'start': 0.6, 'end': 2.5, 'channel': os.environ['FSAPP_CUSTOMER_CHANNEL'],"
        " 'text': 'سلام، درباره صورت حسابم تماس گرفتم'},"
        " {'start': 3.6, 'end': 5.5, 'channel': os.environ['FSAPP_AGENT_CHANNEL'], 'text': 'Support desk'}]))\n"
    )
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho engine exploded >&2\nexit 3\n")
    failing.chmod(0o755)
    cfg = _config(make_config, tmp_path, analysis=f'transcribe_command = "{sys.executable} {engine}"')
    d = daemon(cfg)
    fake, _ = d.call(bridges=["answer:10"], recording=str(SHARED_WAV))
    assert fsapp("analyse", "--pending", cfg=Path(cfg.file)).returncode == 0
    row = d.store.analysis_get(fake.uuid)
    assert row is not None and row["transcript_state"] == "ok"
    segments = json.loads(row["transcript_segments"])
    assert [s["channel"] for s in segments] == ["customer", "agent"]
    found = fsapp("calls", "--text", "صورت حسابم", "--format", "json", cfg=Path(cfg.file))
    assert [r["uuid"] for r in json.loads(found.stdout)] == [fake.uuid]
    found = fsapp("calls", "--text", "support DESK", "--format", "json", cfg=Path(cfg.file))
    assert [r["uuid"] for r in json.loads(found.stdout)] == [fake.uuid]
    missing = fsapp("calls", "--text", "refund", "--format", "json", cfg=Path(cfg.file))
    assert json.loads(missing.stdout) == []

    path = Path(cfg.file)
    path.write_text(path.read_text().replace(f"{sys.executable} {engine}", str(failing)))
    again = fsapp("analyse", fake.uuid, cfg=path)
    assert again.returncode == 0, again.stderr
    shown = json.loads(again.stdout)
    assert shown["state"] == "done" and shown["transcript_state"] == "failed"
    assert "exit status 3: engine exploded" in shown["transcript_error"]


def test_check_names_bad_analysis_keys(tmp_path: Path) -> None:
    from tests.helpers import write_config

    path = write_config(tmp_path, CLUB_TO_AGENT, extra="[analysis]\nworkers = 0\nmax_agent_share = 2.0\n"
                                                       "frame_ms = 25\nspeed = 1\n"
                                                       'transcribe_command = "stt"\nlease_seconds = 300\n')
    proc = fsapp("check", cfg=path)
    assert proc.returncode == 2
    assert f"{path}:analysis.workers: must be at least 1, not 0" in proc.stderr
    assert f"{path}:analysis.max_agent_share: is a share of the call" in proc.stderr
    assert f"{path}:analysis.frame_ms: must be one of 10, 20, 30, not 25" in proc.stderr
    assert f"{path}:analysis.speed: unknown key" in proc.stderr
    assert f"{path}:analysis.lease_seconds: must outlast transcribe_timeout_seconds by a minute" in proc.stderr


# ------------------------------------------------------------------ off the call's path: fsapp serve


def _long_recording(voices: dict[str, np.ndarray], tmp_path: Path, minutes: int) -> Path:
    """``minutes`` of a conversation: one generated minute, written again and again."""
    block = tmp_path / "minute.wav"
    recordings.build(block, [("left", 1.0, voices["hello"]), ("right", 6.0, voices["offer"]),
                             ("left", 20.0, voices["digits"]), ("right", 40.0, voices["thanks"])], 60.0)
    with wave.open(str(block)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    out = tmp_path / "long.wav"
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        for _ in range(minutes):
            w.writeframes(frames)
    return out


def _serve(cfg_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    import time

    err = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(cfg_path)], stderr=err,
                            stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "server_started" in line:
                return proc, ("127.0.0.1", int(json.loads(line)["listen"].rsplit(":", 1)[1]))
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"daemon did not start: {log.read_text()}")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _state(store: Any, uuid: str) -> str:
    row = store.analysis_get(uuid)
    return row["state"] if row else ""


def _wait_state(store: Any, uuid: str, states: tuple[str, ...], timeout: float) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(store, uuid)
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"call {uuid} still {_state(store, uuid)!r} after {timeout} s, not {states}")


@pytest.mark.skipif(not SHARED_WAV.exists(), reason="shared recordings not present")
def test_serve_analyses_recorded_calls_in_a_niced_worker_while_calls_go_on(
    make_config: MakeConfig, voices: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """`fsapp serve` starts a low-priority worker process: a recorded call is analysed within seconds
    of its end, and while an hour-long recording (and a CPU-heavy speech engine) is being analysed
    the daemon goes on answering and journaling calls."""
    from fsapp.fakefs import Script, run_call
    from fsapp.store import open_store

    engine = tmp_path / "heavy_stt.py"
    engine.write_text("import sys, time\nend = time.process_time() + 3\nwhile time.process_time() < end:\n"
                      "    pass\nprint('a slow engine was here')\n")
    cfg = _config(make_config, tmp_path, analysis=f'transcribe_command = "{sys.executable} {engine}"\nnice = 12')
    long_wav = _long_recording(voices, tmp_path, 60)
    proc, address = _serve(Path(cfg.file), tmp_path / "serve.log")
    store = open_store(cfg.storage_url)
    try:
        first = run_call(address, Script(bridges=["answer:10"], recording=str(SHARED_WAV)))
        assert _wait_state(store, first.uuid, ("done",), 60) == "done"  # a deadline, not a timing: CI is loaded
        workers = _children(proc.pid)
        assert workers and all(os.getpriority(os.PRIO_PROCESS, w) >= 12 for w in workers)

        long_call = run_call(address, Script(bridges=["answer:3600"], recording=str(long_wav)))
        _wait_state(store, long_call.uuid, ("running",), 60)
        during = []
        for _ in range(20):
            before = _state(store, long_call.uuid)
            fake = run_call(address, Script(bridges=["answer:5"]))
            after = _state(store, long_call.uuid)
            assert fake.exit_received and fake.apps()[-1] == "hangup", (fake.apps(), fake.error)
            during.append(before == after == "running")
            if after != "running":
                break
        assert sum(during) >= 3, "the daemon served no calls while the worker analysed"
        # the hour-long call was too long: its notification ran in the daemon, which went on
        assert (tmp_path / f"notify.sh.too_long.{long_call.uuid}").exists()
        assert _wait_state(store, long_call.uuid, ("done",), 120) == "done"
        row = store.analysis_get(long_call.uuid)
        assert row["duration_seconds"] == 3600.0 and row["customer_talk_seconds"] > 60 * 5
        assert row["transcript"] == "a slow engine was here"
        answered = [r for r in store.list_calls() if r["status"] == "answered"]
        assert len(answered) == 1 + len(during)  # the first call registered its caller
    finally:
        proc.terminate()
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()  # its workers end by themselves once it is gone
            proc.wait()
            raise
        finally:
            store.close()
    assert code == 0
    assert not any(Path(f"/proc/{w}").exists() and "zombie" not in Path(f"/proc/{w}/status").read_text().lower()
                   for w in workers), "a worker outlived the daemon"


# ------------------------------------------------------------------ the queue, on SQLite and PostgreSQL


def test_queue_claims_once_leases_and_filters_the_journal(store_url: str) -> None:
    """Two workers never hold one call; a lapsed lease is taken over; the journal filters by flag and text."""
    import time

    from fsapp.store import now_iso, open_store

    store = open_store(store_url)
    try:
        now = time.time()
        for uuid in ("u1", "u2"):
            store.call_started({"uuid": uuid, "started_at": now_iso(now), "status": "answered",
                                "recording": f"/r/{uuid}.wav", "recording_customer": "left"})
            assert store.analysis_enqueue(uuid, f"/r/{uuid}.wav", "left", {"mos": 4.4, "flaws": 0}, now)
        assert not store.analysis_enqueue("u1", "/r/u1.wav", "left", {}, now)  # queued once
        a = store.analysis_claim("w1", now, 60, 3)
        b = store.analysis_claim("w2", now, 60, 3)
        assert a is not None and b is not None and a["call_uuid"] != b["call_uuid"]
        assert store.analysis_claim("w3", now, 60, 3) is None
        taken = store.analysis_claim("w3", now + 61, 60, 3)  # w1's lease ran out
        assert taken is not None and taken["call_uuid"] == a["call_uuid"] and taken["attempts"] == 2
        assert not store.analysis_finish(a["call_uuid"], "w1", "done", {}, now)  # w1 lost it
        figures = {"customer_talk_seconds": 12.5, "agent_share": 0.9, "flags": "agent_share,long_silence",
                   "segments": [{"channel": "agent", "start": 0.5, "end": 3.0}], "transcript_state": "ok",
                   "transcript": "Payment LINK 100% sent_ok"}
        assert store.analysis_finish(a["call_uuid"], "w3", "done", figures, now)
        assert store.analysis_finish(b["call_uuid"], "w2", "done", {"flags": ""}, now)
        assert store.analysis_pending() == 0
        rows = store.list_calls(flag="agent_share")
        assert [r["uuid"] for r in rows] == [a["call_uuid"]]
        assert rows[0]["analysis_flags"] == ["agent_share", "long_silence"] and rows[0]["analysis_mos"] == 4.4
        assert rows[0]["customer_talk_seconds"] == 12.5
        assert store.list_calls(flag="share") == []  # whole names only
        assert [r["uuid"] for r in store.list_calls(text="payment link")] == [a["call_uuid"]]
        assert [r["uuid"] for r in store.list_calls(text="100%")] == [a["call_uuid"]]
        assert store.list_calls(text="100_") == []  # wildcards are literal
        assert store.get_call(a["call_uuid"])["analysis_state"] == "done"
        got = store.analysis_get(a["call_uuid"])
        assert got["segments"] == figures["segments"] and got["flags"] == ["agent_share", "long_silence"]
        # a worker that stops mid-analysis on every attempt: the call fails, it is not retried forever
        store.analysis_requeue(b["call_uuid"], "/r/u2.wav", "left", now)
        for attempt in range(3):
            assert store.analysis_claim("crashy", now + 1000 * attempt, 60, 3) is not None
        assert store.analysis_claim("next", now + 5000, 60, 3) is None
        failed = store.analysis_get(b["call_uuid"])
        assert failed["state"] == "failed" and "gave up" in failed["error"]
    finally:
        store.close()


@pytest.mark.skipif(not SHARED_WAV.exists(), reason="shared recordings not present")
def test_recordings_mounted_elsewhere_are_found_through_recording_dir(make_config: MakeConfig, daemon: StartDaemon,
                                                                     tmp_path: Path) -> None:
    """FreeSWITCH writes under [journal] record_dir; this host reads them under [analysis] recording_dir."""
    import shutil

    mount = tmp_path / "mnt"
    cfg = make_config(CLUB_TO_AGENT, extra=f'[journal]\nrecord = true\nrecord_dir = "/var/lib/freeswitch/rec"\n'
                                           f'[analysis]\nrecording_dir = "{mount}"\n')
    d = daemon(cfg)
    fake, row = d.call(bridges=["answer:10"])
    assert row is not None and row["recording"].startswith("/var/lib/freeswitch/rec/")
    here = mount / row["recording"][len("/var/lib/freeswitch/rec/"):]
    here.parent.mkdir(parents=True)
    shutil.copyfile(SHARED_WAV, here)
    proc = fsapp("analyse", "--pending", cfg=Path(cfg.file))
    assert "1 calls analysed" in proc.stdout, proc.stderr
    done = d.store.analysis_get(fake.uuid)
    assert done is not None and done["state"] == "done"
    assert_segments(done["segments"], SHARED_TRUTH)
