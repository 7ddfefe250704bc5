"""An install on a current machine: commands that need no ffmpeg never mention it, the
shipped dialplan and sample route outside callers, the shipped files say what they claim."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODULES = len(tomllib.loads((ROOT / "fsapp/sample/fsapp.toml").read_text(encoding="utf-8"))["modules"])


def no_ffmpeg_env() -> dict[str, str]:
    """PATH holding only this Python's folder (no ffmpeg, no ffprobe), and a PIN pepper as production has."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent), "FSAPP_PIN_PEPPER": "0123456789abcdef" * 4}


def site_warnings(stderr: str) -> list[str]:
    """The lines of stderr that are fsapp check's site warnings: prompt access and the empty directory."""
    return [line for line in stderr.splitlines() if "cannot read the prompts" in line or "directory is empty" in line]


def fsapp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], cwd=cwd, env=env or no_ffmpeg_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def test_check_and_simulate_without_ffmpeg_print_no_warning(tmp_path):
    """Without ffmpeg on PATH, check and simulate print nothing about it (pydub's import warning is gone)."""
    check = fsapp("check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "ffmpeg" not in check.stderr and "Warning" not in check.stderr, check.stderr
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
    # a copied sample has an empty customer directory: serve says what that does to calls
    (empty,) = [json.loads(line) for line in lines if json.loads(line)["event"] == "customer_directory_empty"]
    assert "every identification fails (no customers)" in empty["hint"]


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


# -- an install that runs: the shipped prompts, fsapp init, fsapp check ----------------


def test_a_copied_sample_passes_check_and_says_its_directory_is_empty(tmp_path):
    """The sample copied anywhere finds the shipped prompts; check passes and warns that no customer can be found."""
    shutil.copy(ROOT / "fsapp/sample/fsapp.toml", tmp_path / "copied.toml")
    done = fsapp("check", "-c", "copied.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"copied.toml: ok ({SAMPLE_MODULES} modules)\n"
    assert site_warnings(done.stderr) == [
        "copied.toml:crm.kind: warning: the local customer directory is empty: every identification fails "
        "(no customers) until they are imported (fsapp customers import FILE.csv)"]
    call = fsapp("simulate", "-c", "copied.toml", "--caller", "09121234567", "--dtmf", "1,1001", cwd=tmp_path)
    assert call.stdout.startswith("(the local customer directory is empty: every identification fails")


def test_init_lays_out_a_site_that_passes_check_and_takes_a_call(tmp_path):
    """fsapp init DIR --customers sample: config, prompts, customers; check passes and the README's call works."""
    done = fsapp("init", "site", "--customers", "sample", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert site_warnings(done.stderr) == []
    site = tmp_path / "site"
    shipped = [p for p in (ROOT / "sounds").rglob("*") if p.is_file()]
    assert f"prompts: {len(shipped)} files copied" in done.stdout
    assert (site / "sounds/fa/club/8000/welcome.wav").is_file()
    assert 'dir = "sounds"' in (site / "fsapp.toml").read_text(encoding="utf-8")
    check = fsapp("check", "-c", "site/fsapp.toml", cwd=tmp_path)
    ok = f"site/fsapp.toml: ok ({SAMPLE_MODULES} modules)\n"
    assert (check.returncode, check.stdout, site_warnings(check.stderr)) == (0, ok, [])
    call = fsapp("simulate", "-c", "site/fsapp.toml", "--caller", "09121234567", "--dtmf", "1,1001,1234",
                 "--bridge", "answer:95", cwd=tmp_path)
    assert "customer: C-1001" in call.stdout and "charge 100,000 rial" in call.stdout


def test_init_with_an_empty_directory_says_why_identification_will_fail(tmp_path):
    """The default empty directory passes check, with the warning naming the cause."""
    done = fsapp("init", "site", "--language", "en", "--sounds-dir", "prompts", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "every identification fails (no customers)" in done.stderr
    assert (tmp_path / "prompts/en/menu/16000/main.wav").is_file()
    text = (tmp_path / "site/fsapp.toml").read_text(encoding="utf-8")
    assert f'dir = "{tmp_path / "prompts"}"' in text and 'language = "en"' in text
    assert fsapp("check", "-c", "site/fsapp.toml", cwd=tmp_path).returncode == 0


def test_init_never_replaces_a_config_or_a_recording(tmp_path):
    """A second init on the same folder is refused naming the file; a prompt already there is kept."""
    recording = tmp_path / "site/sounds/fa/club/8000/welcome.wav"
    recording.parent.mkdir(parents=True)
    designers = (ROOT / "sounds/fa/common/8000").iterdir().__next__().read_bytes()  # any valid 8 kHz prompt
    recording.write_bytes(designers)
    first = fsapp("init", "site", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1 already there kept" in first.stdout
    assert recording.read_bytes() == designers
    config = (tmp_path / "site/fsapp.toml").read_bytes()

    again = fsapp("init", "site", "--customers", "sample", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr == f"fsapp init: {tmp_path}/site/fsapp.toml: already exists, left as it is " \
                           "(lay the site out in another folder)\n"
    assert (tmp_path / "site/fsapp.toml").read_bytes() == config


def test_sounds_tts_refuses_to_write_into_the_installed_package(tmp_path, monkeypatch):
    """With the installed prompt set as [sounds] dir, tts stops naming it instead of writing into the package."""
    from fsapp import cli
    from fsapp import config as configmod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(configmod, "INSTALLED_SOUNDS", ROOT / "sounds")
    assert cli.main(["sounds", "tts", "--overwrite"]) == 2


@pytest.fixture
def open_tmp():
    """A temporary folder every user may enter (pytest's own is 0700)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


def locked_site(tmp_path: Path, mode: int) -> Path:
    """A site whose prompts sit under a folder of ``mode``, owned by this (root) user."""
    done = fsapp("init", str(tmp_path / "etc/site"), "--customers", "sample", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "etc/site/fsapp.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        'language = "fa"', 'language = "fa"\nfs_user = "nobody"', 1), encoding="utf-8")
    os.chmod(tmp_path / "etc", mode)
    return config


needs_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or not any(u.pw_name == "nobody" for u in pwd.getpwall()),
    reason="needs root and a 'nobody' user to stand for FreeSWITCH's",
)


@needs_nobody
def test_check_warns_when_freeswitch_cannot_enter_the_prompt_folder(open_tmp):
    """Prompts under a 0750 root:root folder: check passes but warns that FreeSWITCH's user cannot enter it."""
    tmp_path = open_tmp
    config = locked_site(tmp_path, 0o750)
    done = fsapp("check", "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0
    assert site_warnings(done.stderr) == [
        f"{config}:sounds.dir: warning: FreeSWITCH (user nobody) cannot read the prompts: {tmp_path}/etc is "
        "0750 root:root: user nobody cannot enter it; put them where it can read, like its own $${sounds_dir} "
        "(fsapp init --sounds-dir DIR)"
    ]


@needs_nobody
def test_check_is_quiet_when_freeswitch_can_read_the_prompts(open_tmp):
    """The same site with the folder 0755: no warning."""
    tmp_path = open_tmp
    config = locked_site(tmp_path, 0o755)
    done = fsapp("check", "-c", str(config), cwd=tmp_path)
    assert (done.returncode, site_warnings(done.stderr)) == (0, [])


def test_check_cannot_tell_without_the_freeswitch_user(tmp_path):
    """No such user on this host (FreeSWITCH elsewhere): check says nothing about access."""
    done = fsapp("init", "site", "--customers", "sample", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "site/fsapp.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        'language = "fa"', 'language = "fa"\nfs_user = "no-such-user-here"', 1), encoding="utf-8")
    os.chmod(tmp_path / "site", 0o700)
    done = fsapp("check", "-c", str(config), cwd=tmp_path)
    assert (done.returncode, site_warnings(done.stderr)) == (0, [])
