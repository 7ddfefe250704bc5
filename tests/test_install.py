"""An install on a current machine: commands that need no ffmpeg never mention it, the
shipped dialplan and sample route outside callers, the shipped files say what they claim."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def no_ffmpeg_env() -> dict[str, str]:
    """The environment with PATH holding only this Python's folder: no ffmpeg, no ffprobe."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent)}


def fsapp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], cwd=cwd, env=env or no_ffmpeg_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def test_check_and_simulate_without_ffmpeg_print_no_warning(tmp_path):
    """Without ffmpeg on PATH, check and simulate print nothing about it (pydub's import warning is gone)."""
    check = fsapp("check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""
    call = fsapp("simulate", "--caller", "09121234567", "--dtmf", "1,1001,1234", "--bridge", "answer:95", cwd=tmp_path)
    assert call.returncode == 0, call.stderr
    assert "ffmpeg" not in call.stderr + call.stdout and "Warning" not in call.stderr


def test_config_validation_and_check_do_not_import_the_audio_code(tmp_path):
    """Loading the config and running check leave pydub unimported; only the prompt build imports it."""
    code = ("import sys; from fsapp import cli; assert cli.main(['check']) == 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydub', 'audioop')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=no_ffmpeg_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_serve_stderr_is_pure_json_without_ffmpeg(tmp_path):
    """serve's stderr is JSON lines only, with no ffmpeg warning, from start to a SIGTERM stop."""
    cfg = (ROOT / "fsapp/sample/fsapp.toml").read_text(encoding="utf-8")
    cfg = cfg.replace('listen = "127.0.0.1:8084"', 'listen = "127.0.0.1:0"')
    cfg = cfg.replace('dir = "sounds"', f'dir = "{ROOT / "sounds"}"')
    (tmp_path / "fsapp.toml").write_text(cfg, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", "fsapp.toml"], cwd=tmp_path,
                            env=no_ffmpeg_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if (tmp_path / "fsapp.db").exists():
                time.sleep(1.0)
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert lines, "serve logged nothing"
    events = [json.loads(line)["event"] for line in lines]  # raises on any line that is not JSON
    assert "server_started" in events
    assert "ffmpeg" not in err


def test_sounds_build_without_ffmpeg_says_so_once(tmp_path):
    """sounds build without ffmpeg: exit 2, one line in fsapp's words naming ffmpeg, no pydub warning."""
    (tmp_path / "drop/fa/club").mkdir(parents=True)
    (tmp_path / "drop/fa/club/welcome.wav").write_bytes(b"RIFF")
    done = fsapp("sounds", "build", "--src", "drop", "--dest", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "fsapp sounds: building prompts needs ffmpeg and ffprobe (decoding, EBU R128 loudness, resampling), "
        "not found on PATH: install ffmpeg (apt-get install ffmpeg)"
    ]
    assert not (tmp_path / "out").exists()


# -- the shipped dialplan and sample ---------------------------------------------------


def test_dialplan_sets_domain_name_before_the_socket():
    """fsapp.xml sets domain_name=$${domain} before any socket action, as vanilla's 00_inbound_did.xml:
    sofia sets it only for callers it authenticated, and [dial] extension dials user/{ext}@${domain_name}."""
    actions = [(a.get("application"), a.get("data")) for a in ET.parse(ROOT / "dialplan/fsapp.xml").iter("action")]
    first_socket = next(i for i, (app, _) in enumerate(actions) if app == "socket")
    assert ("set", "domain_name=$${domain}") in actions[:first_socket]


def test_sample_option_9_transfers_to_9196_in_default(tmp_path):
    """Option 9 of the sample's main menu reaches 9196 in the default context, where vanilla has it."""
    done = fsapp("simulate", "--caller", "09121234567", "--dtmf", "9", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^  transfer\s+9196 XML default$", done.stdout, re.M), done.stdout


def test_license_file_matches_setup_cfg():
    """setup.cfg says MIT and the LICENSE file is the MIT licence."""
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_readme_sections_the_shipped_files_point_to_exist():
    """Every 'see "SECTION" in the README' of a shipped file names a heading of README.md."""
    headings = {m.group(1) for m in re.finditer(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.M)}
    pointers = []
    for path in (ROOT / "dialplan").iterdir():
        pointers += re.findall(r'see "([^"]+)" in the README', path.read_text())
    assert pointers
    assert set(pointers) <= headings


def test_readme_transcript_is_what_the_first_command_prints(tmp_path):
    """The README's transcript of its first command is that command's output (the call uuid aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```sh\n(.+)\n", readme).group(1)
    command = first.split("&& ", 1)[1].split()
    assert command[0] == "fsapp"
    shown = re.search(r"```\n(call .+?)\n```", readme, re.S).group(1)
    done = fsapp(*command[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split("\n\n", 1)[1] if done.stdout.startswith("(sample") else done.stdout
    mask = re.compile(r"^call \S+", re.M)
    assert mask.sub("call UUID", printed.strip()) == mask.sub("call UUID", shown.strip())
