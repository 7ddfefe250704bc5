"""What the tests run small and ``bench/`` runs at full scale: an in-process daemon,
configs from TOML text, the FreeSWITCH wire transcripts, the fault and fuzz scenarios,
two-channel recordings with speech at known times (``recordings``).

Neither ``tests`` nor ``bench`` is imported from here; both import this.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from fsapp import config as configmod
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.simulate import in_process_server, wait_idle

ROOT = Path(__file__).resolve().parents[1]
SOUNDS = ROOT / "sounds"
SHARED = ROOT.parent / "shared"

BASE = """
[server]
listen = "127.0.0.1:0"
allow = ["127.0.0.1"]
command_timeout_seconds = 5

[storage]
url = "sqlite:///{db}"

[sounds]
dir = "{sounds}"
language = "fa"

[entry]
default = "{entry}"
"""


def write_config(tmp_path: Path, body: str, *, entry: str = "main", extra: str = "") -> Path:
    text = BASE.format(db=tmp_path / "fsapp.db", sounds=SOUNDS, entry=entry) + textwrap.dedent(extra) + "\n"
    text += textwrap.dedent(body)
    path = tmp_path / "fsapp.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Daemon:
    """An in-process fsapp daemon on a free loopback port."""

    def __init__(self, cfg: configmod.Config) -> None:
        self.server = in_process_server(cfg)
        self.app = self.server.app
        self.store = self.app.store

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def call(self, **script: Any) -> tuple[FakeFreeSWITCH, dict[str, Any] | None]:
        """Play one call to its end; return the stand-in and the journal row."""
        fake = run_call(self.address, Script(**script))
        wait_idle(self.server)
        return fake, self.store.get_call(fake.uuid)

    def stop(self) -> None:
        self.server.stream.close()
        self.app.stop()
        self.app.store.close()
